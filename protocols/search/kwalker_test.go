package search_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
)

// newKW returns node A's KWalker with neighbours B, C and D.
func newKW(cfg search.KWalkerConfig) *search.KWalker {
	ids := peers(6)
	k := must(search.NewKWalker(ids[0], cfg, rng(1)))
	step(k, protocols.SelfUpdated{Record: []byte("rec")})
	step(k, protocols.Neighbours{Peers: ids[1:4]})
	return k
}

func TestKWalkerLocalAnswer(t *testing.T) {
	ids := peers(6)
	k := newKW(search.KWalkerConfig{})
	step(k, protocols.Call{Req: search.Publish{Key: "data.id", Data: []byte("data")}})
	outs := step(k, protocols.Call{Req: search.Search{ID: 1, Key: "data.id"}})
	eqs(t, "sends", kinds(ids, outs), nil)
	fs := events[search.Found](outs)
	if len(fs) != 1 || string(fs[0].Data) != "data" || fs[0].Hops != 0 || fs[0].From != ids[0] {
		t.Fatalf("local search: %+v", outs)
	}
}

// The origin sends k walkers spread over its neighbours; the first hit answers the
// search; later hits are late, and checks are told to stop.
func TestKWalkerSearchFound(t *testing.T) {
	ids := peers(6)
	k := newKW(search.KWalkerConfig{Walkers: 6, TTL: 10})
	outs := step(k, protocols.Call{Req: search.Search{ID: 7, Key: "x"}})
	ss := sent(outs)
	eq(t, "walkers", len(ss), 6)
	per := map[string]int{}
	for _, s := range ss {
		q := query(s)
		per[name(ids, s.To)]++
		if q.GetTtl() != 9 || q.GetHops() != 1 || q.GetKey() != "x" || string(q.GetOrigin().GetRecord()) != "rec" {
			t.Fatalf("walker %+v", q)
		}
	}
	if per["B"] != 2 || per["C"] != 2 || per["D"] != 2 {
		t.Fatalf("walkers not spread evenly: %v", per)
	}
	eq(t, "timers (timeout, replacement)", len(timers(outs)), 2)
	// A check while the search is on: continue.
	outs = step(k, recv(ids[4], &search.Check{Id: 7}))
	eq(t, "check reply", sent(outs)[0].Msg.(*search.Message).GetCheckReply().GetStop(), false)
	outs = step(k, recv(ids[5], &search.Hit{Id: 7, Key: "x", Data: []byte("v"), Hops: 3, Node: origin(ids[5])}))
	fs := events[search.Found](outs)
	if len(fs) != 1 || fs[0].ID != 7 || string(fs[0].Data) != "v" || fs[0].From != ids[5] || fs[0].Hops != 3 {
		t.Fatalf("found: %+v", outs)
	}
	if len(events[protocols.CancelTimer](outs)) != 2 {
		t.Fatal("the search's timers were not cancelled")
	}
	outs = step(k, recv(ids[4], &search.Hit{Id: 7, Key: "x", Data: []byte("v")}))
	eq(t, "late hit events", len(events[search.Found](outs)), 0)
	outs = step(k, recv(ids[4], &search.Check{Id: 7}))
	eq(t, "check reply after found", sent(outs)[0].Msg.(*search.Message).GetCheckReply().GetStop(), true)
	eq(t, "late hits", k.Stats().LateHits, uint64(1))
}

// A node holding the key answers the origin directly and does not pass the walker on.
func TestKWalkerHolderAnswers(t *testing.T) {
	ids := peers(6)
	k := newKW(search.KWalkerConfig{})
	step(k, protocols.Call{Req: search.Publish{Key: "x", Data: []byte("payload")}})
	outs := step(k, recv(ids[1], &search.Query{Id: 3, Origin: origin(ids[5]), Key: "x", Ttl: 5, Hops: 2}))
	eqs(t, "sends", kinds(ids, outs), []string{"F:HIT"})
	h := sent(outs)[0].Msg.(*search.Message).GetHit()
	if string(h.GetData()) != "payload" || h.GetHops() != 2 || h.GetNode().PeerID() != ids[0] {
		t.Fatalf("hit %+v", h)
	}
	// Unpublished: the walker goes on.
	step(k, protocols.Call{Req: search.Unpublish{Key: "x"}})
	outs = step(k, recv(ids[1], &search.Query{Id: 3, Origin: origin(ids[5]), Key: "x", Ttl: 5, Hops: 2}))
	if ks := kinds(ids, outs); len(ks) != 1 || ks[0][2:] != "QUERY" || ks[0][0] == 'B' {
		t.Fatalf("after unpublish: %v (want one QUERY, not back to B)", ks)
	}
}

// Every CheckEvery hops the walker waits for the origin: stop drops it, continue moves
// it on, no answer in time moves it on too.
func TestKWalkerChecking(t *testing.T) {
	ids := peers(6)
	k := newKW(search.KWalkerConfig{})
	q := func() protocols.Receive {
		return recv(ids[1], &search.Query{Id: 9, Origin: origin(ids[5]), Key: "x", Ttl: 5, Hops: 4})
	}
	outs := step(k, q())
	eqs(t, "check", kinds(ids, outs), []string{"F:CHECK"})
	eq(t, "check timer", len(timers(outs)), 1)
	outs = step(k, recv(ids[5], &search.CheckReply{Id: 9, Stop: true}))
	eqs(t, "stopped", kinds(ids, outs), nil)
	eq(t, "stopped count", k.Stats().Stopped, uint64(1))

	step(k, q())
	outs = step(k, recv(ids[5], &search.CheckReply{Id: 9}))
	ss := sent(outs)
	if len(ss) != 1 || ss[0].To == ids[1] || query(ss[0]).GetTtl() != 4 || query(ss[0]).GetHops() != 5 {
		t.Fatalf("continued: %v", kinds(ids, outs))
	}

	outs = step(k, q())
	tm := timers(outs)[0]
	outs = step(k, protocols.TimerFired{Timer: tm.Timer})
	eq(t, "moved on after timeout", len(sent(outs)), 1)
	eq(t, "unchecked", k.Stats().Unchecked, uint64(1))
	// A reply from someone else than the origin releases nothing.
	step(k, q())
	outs = step(k, recv(ids[2], &search.CheckReply{Id: 9}))
	eq(t, "reply from a stranger", len(sent(outs)), 0)
}

// Walkers that run out of hops are reported; when all are, the search is not found.
func TestKWalkerExhausted(t *testing.T) {
	ids := peers(6)
	k := newKW(search.KWalkerConfig{Walkers: 2, TTL: 3})
	outs := step(k, recv(ids[1], &search.Query{Id: 4, Origin: origin(ids[5]), Key: "x", Ttl: 0, Hops: 3, Walker: 1}))
	eqs(t, "exhausted", kinds(ids, outs), []string{"F:EXHAUSTED"})

	step(k, protocols.Call{Req: search.Search{ID: 1, Key: "x"}})
	outs = step(k, recv(ids[2], &search.Exhausted{Id: 1, Walker: 0}))
	eq(t, "one walker left", len(events[search.NotFound](outs)), 0)
	outs = step(k, recv(ids[3], &search.Exhausted{Id: 1, Walker: 0})) // the same walker again
	eq(t, "duplicate exhausted", len(events[search.NotFound](outs)), 0)
	outs = step(k, recv(ids[3], &search.Exhausted{Id: 1, Walker: 1}))
	nf := events[search.NotFound](outs)
	if len(nf) != 1 || nf[0].ID != 1 {
		t.Fatalf("not found: %+v", outs)
	}
}

func TestKWalkerTimeoutAndLimits(t *testing.T) {
	k := newKW(search.KWalkerConfig{Limits: search.Limits{MaxItems: 2, MaxData: 4, MaxBytes: 6, MaxPending: 1}})
	outs := step(k, protocols.Call{Req: search.Search{ID: 1, Key: "x", Timeout: time.Second}})
	tm := timers(outs)[0]
	eq(t, "timeout", tm.After, time.Second)
	outs = step(k, protocols.Call{Req: search.Search{ID: 2, Key: "y"}})
	if nf := events[search.NotFound](outs); len(nf) != 1 || nf[0].ID != 2 {
		t.Fatalf("over MaxPending: %+v", outs)
	}
	outs = step(k, protocols.TimerFired{Timer: tm.Timer})
	if nf := events[search.NotFound](outs); len(nf) != 1 || nf[0].ID != 1 {
		t.Fatalf("timeout: %+v", outs)
	}
	for _, p := range []search.Publish{{Key: "a", Data: []byte("1234")}, {Key: "b", Data: []byte("12345")}, {Key: "b", Data: []byte("12")}, {Key: "c", Data: []byte("1")}, {Key: "", Data: nil}} {
		step(k, protocols.Call{Req: p})
	}
	eqs(t, "published", k.Published(), []string{"a", "b"})
	eq(t, "rejected", k.Stats().Rejected, uint64(3))
	step(k, protocols.Call{Req: search.Publish{Key: "a", Data: []byte("123")}})  // 3+2 <= 6
	step(k, protocols.Call{Req: search.Publish{Key: "b", Data: []byte("1234")}}) // 3+4 > 6
	eq(t, "rejected over MaxBytes", k.Stats().Rejected, uint64(4))
}

func TestKWalkerNoNeighbours(t *testing.T) {
	ids := peers(2)
	k := must(search.NewKWalker(ids[0], search.KWalkerConfig{}, rng(1)))
	outs := step(k, protocols.Call{Req: search.Search{ID: 1, Key: "x"}})
	if nf := events[search.NotFound](outs); len(nf) != 1 {
		t.Fatalf("no neighbours: %+v", outs)
	}
}

func TestConfigsValidate(t *testing.T) {
	var ce *protocols.ConfigError
	for _, err := range []error{
		search.KWalkerConfig{Walkers: -1}.Validate(),
		search.KWalkerConfig{Limits: search.Limits{MaxData: 10, MaxBytes: 5}}.Validate(),
		search.ABloomConfig{Bits: 7}.Validate(),
		search.FloodConfig{TTL: 20000}.Validate(),
	} {
		if !errors.As(err, &ce) || ce.Field == "" {
			t.Fatalf("want a ConfigError naming the field, got %v", err)
		}
	}
	if _, err := search.NewKWalker(peers(1)[0], search.KWalkerConfig{}, nil); err == nil {
		t.Fatal("nil rng accepted")
	}
}

// The origin replaces a walker it has not heard from for Replace (lost with its query
// or its hit) by a new one, at most Walkers times; a walker that checked in recently,
// or reported, is not replaced, and a report from a replaced walker changes nothing.
func TestKWalkerReplacesLostWalkers(t *testing.T) {
	ids := peers(6)
	k := newKW(search.KWalkerConfig{Walkers: 3, TTL: 10})
	at := func(d time.Duration, in protocols.Input) []protocols.Output {
		return slices.Clone(k.Handle(t0.Add(d), in))
	}
	outs := at(0, protocols.Call{Req: search.Search{ID: 7, Key: "x"}})
	var tick protocols.Timer
	for _, st := range timers(outs) {
		if st.Timer.Key == "7" && st.After == 1500*time.Millisecond {
			tick = st.Timer
		}
	}
	if tick.Kind == 0 {
		t.Fatalf("no replacement timer every Replace/2: %v", timers(outs))
	}
	// Walker 0 checks in at 2 s; walker 1 reports at 2 s; walker 2 is never heard of.
	at(2*time.Second, recv(ids[1], &search.Check{Id: 7, Walker: 0}))
	at(2*time.Second, recv(ids[2], &search.Exhausted{Id: 7, Walker: 1}))
	outs = at(1500*time.Millisecond, protocols.TimerFired{Timer: tick})
	eq(t, "nothing replaced before Replace", len(sent(outs)), 0)
	outs = at(3*time.Second, protocols.TimerFired{Timer: tick})
	qs := sent(outs)
	eq(t, "walkers sent at 3 s", len(qs), 1)
	eq(t, "the new walker's number", query(qs[0]).GetWalker(), uint32(3))
	eq(t, "the new walker's TTL", query(qs[0]).GetTtl(), uint32(9))
	eq(t, "timer set again", len(timers(outs)), 1)
	// The replaced walker's late report does not end the search.
	outs = at(3*time.Second, recv(ids[3], &search.Exhausted{Id: 7, Walker: 2}))
	eq(t, "not found after a replaced walker's report", len(events[search.NotFound](outs)), 0)
	// At 5 s walker 0 (heard at 2 s) is lost too; at 6.5 s walker 3 (sent at 3 s).
	outs = at(5*time.Second, protocols.TimerFired{Timer: tick})
	eq(t, "walkers sent at 5 s", len(sent(outs)), 1)
	eq(t, "the next walker's number", query(sent(outs)[0]).GetWalker(), uint32(4))
	outs = at(6500*time.Millisecond, protocols.TimerFired{Timer: tick})
	eq(t, "walkers sent at 6.5 s", len(sent(outs)), 1)
	// Three replaced: the bound (Walkers) is reached.
	outs = at(20*time.Second, protocols.TimerFired{Timer: tick})
	eq(t, "walkers past the bound", len(sent(outs)), 0)
	eq(t, "replaced", k.Stats().Retried, uint64(3))
	// The walkers out now (4, 5) account for the search: when both report, it ends.
	at(20*time.Second, recv(ids[1], &search.Exhausted{Id: 7, Walker: 4}))
	outs = at(20*time.Second, recv(ids[1], &search.Exhausted{Id: 7, Walker: 5}))
	eq(t, "not found once every walker out reported", len(events[search.NotFound](outs)), 1)

	// Checks name their walker; a relay passes on a replacement walker.
	r := must(search.NewKWalker(ids[1], search.KWalkerConfig{Walkers: 3, TTL: 10}, rng(2)))
	step(r, protocols.Neighbours{Peers: ids[2:4]})
	outs = step(r, recv(ids[2], &search.Query{Id: 7, Origin: origin(ids[0]), Key: "x", Ttl: 5, Hops: 4, Walker: 5}))
	c := sent(outs)[0].Msg.(*search.Message).GetCheck()
	if c == nil || c.GetWalker() != 5 || c.GetId() != 7 {
		t.Fatalf("check: %v", outs)
	}

	// Replace < 0: no replacement timer.
	n := newKW(search.KWalkerConfig{Replace: -1})
	eq(t, "timers without replacement", len(timers(step(n, protocols.Call{Req: search.Search{ID: 1, Key: "x"}}))), 1)
}
