package sampling_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
	"github.com/unsserv/go-unsserv/sim"
)

var t0 = sim.Epoch

func peers(n int) []peer.ID {
	ids, _ := sim.PeerIDs(99, n)
	return ids
}

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

// step feeds one input and returns the outputs (copied: the core reuses its slice).
func step(c protocols.Core, in protocols.Input) []protocols.Output {
	return slices.Clone(c.Handle(t0, in))
}

func stepAt(c protocols.Core, at time.Time, in protocols.Input) []protocols.Output {
	return slices.Clone(c.Handle(at, in))
}

// sent returns the messages of outs, by destination, in order.
func sent(outs []protocols.Output) []protocols.Send {
	var ss []protocols.Send
	for _, o := range outs {
		if s, ok := o.(protocols.Send); ok {
			ss = append(ss, s)
		}
	}
	return ss
}

func kinds(outs []protocols.Output) []string {
	var ks []string
	for _, s := range sent(outs) {
		ks = append(ks, s.To.ShortString()[:4]+":"+s.Msg.(*sampling.Message).Kind())
	}
	return ks
}

// walks returns the walk messages of outs with their destinations.
func walks(outs []protocols.Output) (to []peer.ID, ws []*sampling.Walk) {
	for _, s := range sent(outs) {
		if w := s.Msg.(*sampling.Message).GetWalk(); w != nil {
			to = append(to, s.To)
			ws = append(ws, w)
		}
	}
	return to, ws
}

func events[T any](outs []protocols.Output) []T {
	var es []T
	for _, o := range outs {
		if e, ok := o.(T); ok {
			es = append(es, e)
		}
	}
	return es
}

func walkMsg(w *sampling.Walk) *sampling.Message {
	return &sampling.Message{Body: &sampling.Message_Walk{Walk: w}}
}

func resultMsg(walk uint64, node peer.ID, failed bool) *sampling.Message {
	r := &sampling.Result{Walk: walk, Failed: failed}
	if node != "" {
		r.Node = &sampling.Peer{Id: []byte(node)}
	}
	return &sampling.Message{Body: &sampling.Message_Result{Result: r}}
}

func pathIs(path [][]byte, want ...peer.ID) bool {
	if len(path) != len(want) {
		return false
	}
	for i, p := range path {
		if peer.ID(p) != want[i] {
			return false
		}
	}
	return true
}

func origin(p peer.ID) *sampling.Peer { return &sampling.Peer{Id: []byte(p)} }

// Neighbours: each new neighbour is told it is listed (LINK up), each dropped one that
// it is not any more; both count as usable at once.
func TestLinksFollowNeighbours(t *testing.T) {
	ids := peers(4)
	c, _ := sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{}, rng(1))
	outs := step(c, protocols.Neighbours{Peers: []peer.ID{ids[1], ids[2], ids[0], ids[1]}})
	if got := len(sent(outs)); got != 2 {
		t.Fatalf("%d messages for two new neighbours (self and duplicate ignored): %v", got, kinds(outs))
	}
	for _, s := range sent(outs) {
		if l := s.Msg.(*sampling.Message).GetLink(); l == nil || !l.Up {
			t.Fatalf("want LINK up, got %v", s.Msg)
		}
	}
	outs = step(c, protocols.Neighbours{Peers: []peer.ID{ids[2]}})
	if ss := sent(outs); len(ss) != 1 || ss[0].To != ids[1] || ss[0].Msg.(*sampling.Message).GetLink().GetUp() {
		t.Fatalf("dropping a neighbour: %v", kinds(outs))
	}
	// A peer that lists us is usable too.
	step(c, protocols.Receive{From: ids[3], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}}})
	if u := c.Usable(); !slices.Equal(u, []peer.ID{ids[2], ids[3]}) {
		t.Fatalf("usable %v", u)
	}
	// ... until it says it no longer does.
	step(c, protocols.Receive{From: ids[3], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{}}}})
	if u := c.Usable(); !slices.Equal(u, []peer.ID{ids[2]}) {
		t.Fatalf("usable %v", u)
	}
}

// A peer whose set of in-links is full refuses ours: it is not used unless it lists us.
func TestLinkRefused(t *testing.T) {
	ids := peers(4)
	c, _ := sampling.NewMRWB(ids[0], sampling.MRWBConfig{WalkConfig: sampling.WalkConfig{MaxInLinks: 1}}, rng(1))
	step(c, protocols.Receive{From: ids[1], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}}})
	outs := step(c, protocols.Receive{From: ids[2], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}}})
	if ss := sent(outs); len(ss) != 1 || ss[0].To != ids[2] || !ss[0].Msg.(*sampling.Message).GetLink().GetRefused() {
		t.Fatalf("a full in-set must refuse: %v", kinds(outs))
	}
	if u := c.Usable(); !slices.Equal(u, []peer.ID{ids[1]}) {
		t.Fatalf("usable %v", u)
	}
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[3]}})
	step(c, protocols.Receive{From: ids[3], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Refused: true}}}})
	if u := c.Usable(); !slices.Equal(u, []peer.ID{ids[1]}) {
		t.Fatalf("a peer that refused our link is still used: %v", u)
	}
}

// The life of a sample at its origin: the request waits for a neighbour, a walk starts,
// the result from the node where it ended answers the request once.
func TestSampleAtOrigin(t *testing.T) {
	ids := peers(3)
	c, _ := sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{WalkConfig: sampling.WalkConfig{WalkLength: 5}}, rng(1))
	if outs := step(c, protocols.Call{Req: sampling.Sample{ID: 7}}); len(sent(outs)) != 0 {
		t.Fatalf("an isolated node sent %v", kinds(outs))
	}
	outs := step(c, protocols.Neighbours{Peers: []peer.ID{ids[1]}})
	to, ws := walks(outs)
	if len(ws) != 1 || to[0] != ids[1] || ws[0].Ttl != 4 || ws[0].Kind != sampling.Walk_FORWARD ||
		ws[0].Origin.PeerID() != ids[0] || !pathIs(ws[0].Path, ids[0]) {
		t.Fatalf("the waiting request did not start a walk of 5 steps: %v %v", to, ws)
	}
	if len(events[protocols.SetTimer](outs)) == 0 {
		t.Fatal("no walk timeout set")
	}
	wid := ws[0].Id
	// A result that does not come from the node it names is ignored.
	if outs := step(c, protocols.Receive{From: ids[1], Msg: resultMsg(wid, ids[2], false)}); len(events[sampling.Sampled](outs)) != 0 {
		t.Fatal("took a result naming another node than its sender")
	}
	// An unknown walk's result too.
	if outs := step(c, protocols.Receive{From: ids[2], Msg: resultMsg(wid+1, ids[2], false)}); len(outs) != 0 {
		t.Fatalf("unknown walk: %v", outs)
	}
	outs = step(c, protocols.Receive{From: ids[2], Msg: resultMsg(wid, ids[2], false)})
	got := events[sampling.Sampled](outs)
	if len(got) != 1 || got[0].ID != 7 || got[0].Node.PeerID() != ids[2] || got[0].Attempts != 1 {
		t.Fatalf("Sampled %+v", got)
	}
	if outs := step(c, protocols.Receive{From: ids[2], Msg: resultMsg(wid, ids[2], false)}); len(events[sampling.Sampled](outs)) != 0 {
		t.Fatal("answered twice")
	}
	if c.Pending() != 0 {
		t.Fatal("request kept after its answer")
	}
}

// A walk that ends here with ttl 0 makes this node the sample: the result goes straight
// to the origin, with this node's record and metadata.
func TestWalkEndsHere(t *testing.T) {
	ids := peers(3)
	c, _ := sampling.NewRandomWalk(ids[1], sampling.RandomWalkConfig{}, rng(1))
	step(c, protocols.SelfUpdated{Record: []byte("rec"), Meta: []byte("meta")})
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[2]}})
	outs := step(c, protocols.Receive{From: ids[2], Msg: walkMsg(&sampling.Walk{Id: 9, Origin: origin(ids[0]), Ttl: 0, Path: [][]byte{[]byte(ids[2])}})})
	ss := sent(outs)
	if len(ss) != 1 || ss[0].To != ids[0] {
		t.Fatalf("want one RESULT to the origin: %v", kinds(outs))
	}
	r := ss[0].Msg.(*sampling.Message).GetResult()
	if r.Walk != 9 || r.Failed || r.Node.PeerID() != ids[1] || string(r.Node.Record) != "rec" || string(r.Node.Meta) != "meta" {
		t.Fatalf("result %v", r)
	}
}

// A walk that ends at its origin is replaced: the asking node is never its own sample.
func TestWalkEndingAtOriginRestarts(t *testing.T) {
	ids := peers(2)
	c, _ := sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{WalkConfig: sampling.WalkConfig{WalkLength: 2}}, rng(1))
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[1]}})
	_, ws := walks(step(c, protocols.Call{Req: sampling.Sample{ID: 1}}))
	// The walk comes back to the origin with one step left; the origin takes it
	// (necessarily back to its only neighbour)... and the second walk ends at ids[0].
	w := ws[0]
	w.Ttl = 0
	outs := step(c, protocols.Receive{From: ids[1], Msg: walkMsg(w)})
	_, ws2 := walks(outs)
	if len(ws2) != 1 || ws2[0].Id == w.Id || c.Stats().AtOrigin != 1 || c.Stats().Walks != 2 {
		t.Fatalf("no new walk after one ended at its origin: %v, stats %+v", kinds(outs), c.Stats())
	}
	// The old walk's result is stale.
	if outs := step(c, protocols.Receive{From: ids[1], Msg: resultMsg(w.Id, ids[1], false)}); len(events[sampling.Sampled](outs)) != 0 {
		t.Fatal("a replaced walk's result was taken")
	}
}

// The next hop is unreachable: the walk is taken back and sent to another neighbour,
// the failed step undone.
func TestRerouteOnPeerDown(t *testing.T) {
	ids := peers(4)
	c, _ := sampling.NewRandomWalk(ids[1], sampling.RandomWalkConfig{}, rng(3))
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[2], ids[3]}})
	to, ws := walks(step(c, protocols.Receive{From: ids[0], Msg: walkMsg(&sampling.Walk{Id: 5, Origin: origin(ids[0]), Ttl: 10, Path: [][]byte{[]byte(ids[0])}})}))
	if len(ws) != 1 || ws[0].Ttl != 9 {
		t.Fatalf("walk not forwarded: %v", ws)
	}
	first := to[0]
	outs := step(c, protocols.PeerDown{Peer: first, Err: errors.New("dial failed")})
	to2, ws2 := walks(outs)
	if len(ws2) != 1 || to2[0] == first || ws2[0].Ttl != 9 || ws2[0].Id != 5 {
		t.Fatalf("walk not rerouted: %v %v", to2, ws2)
	}
	if !pathIs(ws2[0].Path, ids[0], ids[1]) {
		t.Fatalf("path %q", ws2[0].Path)
	}
	if c.Stats().Rerouted != 1 || slices.Contains(c.Usable(), first) {
		t.Fatalf("stats %+v, usable %v", c.Stats(), c.Usable())
	}
	// The last neighbour fails too: no one left, the walk goes back to where it came from.
	outs = step(c, protocols.PeerDown{Peer: to2[0]})
	to3, ws3 := walks(outs)
	if len(ws3) != 1 || to3[0] != ids[0] || ws3[0].Kind != sampling.Walk_BACKTRACK || ws3[0].Ttl != 10 || len(ws3[0].Path) != 0 {
		t.Fatalf("want a BACKTRACK to %s: %v %v", ids[0].ShortString(), to3, ws3)
	}
	// And that hop is unreachable as well: the origin is told the walk is stuck.
	outs = step(c, protocols.PeerDown{Peer: ids[0]})
	ss := sent(outs)
	if len(ss) != 1 || ss[0].To != ids[0] || !ss[0].Msg.(*sampling.Message).GetResult().GetFailed() {
		t.Fatalf("want a failed RESULT to the origin: %v", kinds(outs))
	}
	// A peer that speaks again is usable again.
	step(c, protocols.Receive{From: ids[2], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}}})
	if !slices.Contains(c.Usable(), ids[2]) {
		t.Fatalf("usable %v", c.Usable())
	}
}

// A walk passed on long ago is not taken back: its record expired (HopTimeout).
func TestNoRerouteAfterHopTimeout(t *testing.T) {
	ids := peers(4)
	c, _ := sampling.NewRandomWalk(ids[1], sampling.RandomWalkConfig{WalkConfig: sampling.WalkConfig{HopTimeout: time.Second}}, rng(3))
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[2], ids[3]}})
	to, _ := walks(step(c, protocols.Receive{From: ids[0], Msg: walkMsg(&sampling.Walk{Id: 5, Origin: origin(ids[0]), Ttl: 10})}))
	outs := stepAt(c, t0.Add(2*time.Second), protocols.PeerDown{Peer: to[0]})
	if _, ws := walks(outs); len(ws) != 0 {
		t.Fatalf("an expired walk was resent: %v", kinds(outs))
	}
}

// Walks time out and are replaced; after MaxAttempts the request fails.
func TestWalkTimeoutsAndFailure(t *testing.T) {
	ids := peers(2)
	c, _ := sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{WalkConfig: sampling.WalkConfig{MaxAttempts: 3, WalkTimeout: time.Second}}, rng(1))
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[1]}})
	outs := step(c, protocols.Call{Req: sampling.Sample{ID: 4}})
	timers := events[protocols.SetTimer](outs)
	if len(timers) != 1 || timers[0].After != time.Second {
		t.Fatalf("timers %v", timers)
	}
	for k := 2; k <= 3; k++ {
		outs = step(c, protocols.TimerFired{Timer: timers[0].Timer})
		if _, ws := walks(outs); len(ws) != 1 {
			t.Fatalf("attempt %d: no new walk: %v", k, kinds(outs))
		}
	}
	outs = step(c, protocols.TimerFired{Timer: timers[0].Timer})
	f := events[sampling.SampleFailed](outs)
	if len(f) != 1 || f[0].ID != 4 || !strings.Contains(f[0].Reason, "3 attempts") {
		t.Fatalf("want SampleFailed after 3 attempts: %v", outs)
	}
	if st := c.Stats(); st.Timeouts != 3 || st.Walks != 3 || st.Failed != 1 || c.Pending() != 0 {
		t.Fatalf("stats %+v pending %d", st, c.Pending())
	}
}

// Cancel forgets a request: its timer is cancelled and a late result ignored.
func TestCancel(t *testing.T) {
	ids := peers(2)
	c, _ := sampling.NewMRWB(ids[0], sampling.MRWBConfig{}, rng(1))
	step(c, protocols.Neighbours{Peers: []peer.ID{ids[1]}})
	_, ws := walks(step(c, protocols.Call{Req: sampling.Sample{ID: 4}}))
	outs := step(c, protocols.Call{Req: sampling.Cancel{ID: 4}})
	if len(events[protocols.CancelTimer](outs)) != 1 || c.Pending() != 0 {
		t.Fatalf("cancel: %v", outs)
	}
	if outs := step(c, protocols.Receive{From: ids[1], Msg: resultMsg(ws[0].Id, ids[1], false)}); len(outs) != 0 {
		t.Fatalf("a cancelled request was answered: %v", outs)
	}
}

// Requests beyond MaxPending fail at once, naming the limit.
func TestMaxPending(t *testing.T) {
	ids := peers(2)
	c, _ := sampling.NewMRWB(ids[0], sampling.MRWBConfig{WalkConfig: sampling.WalkConfig{MaxPending: 2}}, rng(1))
	step(c, protocols.Call{Req: sampling.Sample{ID: 1}})
	step(c, protocols.Call{Req: sampling.Sample{ID: 2}})
	f := events[sampling.SampleFailed](step(c, protocols.Call{Req: sampling.Sample{ID: 3}}))
	if len(f) != 1 || f[0].ID != 3 || !strings.Contains(f[0].Reason, "too many") {
		t.Fatalf("want a failure for the third request: %v", f)
	}
	// Both waiting requests start when a neighbour comes.
	if _, ws := walks(step(c, protocols.Neighbours{Peers: []peer.ID{ids[1]}})); len(ws) != 2 {
		t.Fatalf("%d walks started, want 2", len(ws))
	}
}

// Garbage is ignored: no output, no panic. After Leave nothing comes out.
func TestBadInputIgnored(t *testing.T) {
	ids := peers(3)
	for _, c := range []protocols.Core{
		must(sampling.NewMRWB(ids[0], sampling.MRWBConfig{}, rng(1))),
		must(sampling.NewRWD(ids[0], sampling.RWDConfig{}, rng(1))),
		must(sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{}, rng(1))),
	} {
		for _, in := range []protocols.Input{
			protocols.Receive{From: ids[1], Msg: nil},
			protocols.Receive{From: ids[1], Msg: &sampling.Message{}},
			protocols.Receive{From: ids[1], Msg: &sampling.Peer{}},
			protocols.Receive{From: ids[1], Msg: walkMsg(nil)},
			protocols.Receive{From: ids[1], Msg: walkMsg(&sampling.Walk{Id: 1, Origin: &sampling.Peer{Id: []byte("junk")}, Ttl: 3})},
			protocols.Receive{From: ids[1], Msg: walkMsg(&sampling.Walk{Id: 1, Origin: origin(ids[2]), Ttl: 1 << 30})},
			protocols.Receive{From: ids[1], Msg: walkMsg(&sampling.Walk{Id: 0, Origin: origin(ids[2]), Ttl: 3})},
			protocols.Receive{From: ids[1], Msg: walkMsg(&sampling.Walk{Id: 1, Origin: origin(ids[2]), Ttl: 3, Kind: 77})},
			protocols.Receive{From: ids[1], Msg: resultMsg(3, "", false)},
			protocols.Receive{From: ids[1], Msg: &sampling.Message{Body: &sampling.Message_Weight{}}},
			protocols.Receive{From: ids[1], Msg: &sampling.Message{Body: &sampling.Message_WeightAck{}}},
			protocols.Receive{From: ids[1], Msg: &sampling.Message{Body: &sampling.Message_Ask{}}},
			protocols.Receive{From: "", Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}}},
			protocols.Receive{From: ids[0], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}}},
			protocols.PeerDown{Peer: ""},
			protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: "not a number"}},
			protocols.TimerFired{Timer: protocols.Timer{Kind: 41, Peer: ids[2]}},
			protocols.TimerFired{Timer: protocols.Timer{Kind: 200}},
			protocols.Call{Req: "what"},
			protocols.Call{Req: sampling.Cancel{ID: 12}},
		} {
			if outs := step(c, in); len(sent(outs)) != 0 || len(events[sampling.Sampled](outs)) != 0 {
				t.Fatalf("%T: %#v gave %v", c, in, outs)
			}
		}
		step(c, protocols.Leave{})
		if outs := step(c, protocols.Call{Req: sampling.Sample{ID: 1}}); len(outs) != 0 {
			t.Fatalf("%T: output after Leave: %v", c, outs)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestConfigValidate(t *testing.T) {
	ids := peers(1)
	for _, tc := range []struct {
		err   error
		field string
	}{
		{sampling.MRWBConfig{WalkConfig: sampling.WalkConfig{WalkLength: -1}}.Validate(), "MRWBConfig.WalkLength"},
		{sampling.MRWBConfig{WalkConfig: sampling.WalkConfig{WalkLength: 1 << 20}}.Validate(), "MRWBConfig.WalkLength"},
		{sampling.RandomWalkConfig{WalkConfig: sampling.WalkConfig{WalkTimeout: -1}}.Validate(), "RandomWalkConfig.WalkTimeout"},
		{sampling.RWDConfig{Quantum: 1.5}.Validate(), "RWDConfig.Quantum"},
		{sampling.RWDConfig{MaxDegree: 1}.Validate(), "RWDConfig.MaxDegree"},
		{sampling.RWDConfig{WalkConfig: sampling.WalkConfig{PathLength: 100}}.Validate(), "RWDConfig.PathLength"},
		{sampling.RWDConfig{MaxRetries: -2}.Validate(), "RWDConfig.MaxRetries"},
	} {
		var ce *protocols.ConfigError
		if !errors.As(tc.err, &ce) || ce.Field != tc.field {
			t.Fatalf("want an error naming %s, got %v", tc.field, tc.err)
		}
	}
	if _, err := sampling.NewMRWB("", sampling.MRWBConfig{}, rng(1)); err == nil {
		t.Fatal("empty self accepted")
	}
	if _, err := sampling.NewRWD(ids[0], sampling.RWDConfig{}, nil); err == nil {
		t.Fatal("nil rng accepted")
	}
}

// The driver passes the same neighbours again: those a send failed to, or that refused
// the link, are told again that they are listed, and used again; the others are not.
func TestNeighboursAgainRetriesDownAndRefused(t *testing.T) {
	ids := peers(4)
	c, _ := sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{}, rng(1))
	all := []peer.ID{ids[1], ids[2], ids[3]}
	step(c, protocols.Neighbours{Peers: all})
	step(c, protocols.PeerDown{Peer: ids[1]})
	step(c, protocols.Receive{From: ids[2], Msg: &sampling.Message{Body: &sampling.Message_Link{Link: &sampling.Link{Refused: true}}}})
	if u := c.Usable(); !slices.Equal(u, []peer.ID{ids[3]}) {
		t.Fatalf("usable %v", u)
	}
	outs := step(c, protocols.Neighbours{Peers: all})
	var to []peer.ID
	for _, s := range sent(outs) {
		if s.Msg.(*sampling.Message).GetLink().GetUp() {
			to = append(to, s.To)
		}
	}
	if !slices.Equal(to, []peer.ID{ids[1], ids[2]}) {
		t.Fatalf("LINK up sent again to %v, want the down and the refusing peer", to)
	}
	if u := c.Usable(); !slices.Equal(u, all) {
		t.Fatalf("usable %v", u)
	}
}
