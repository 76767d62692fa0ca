package search_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
)

// filterWith returns a filter of depth 3 (default width) holding key at level.
func filterWith(t testing.TB, key string, level int) *search.Filter {
	t.Helper()
	ids := peers(2)
	src := must(search.NewABloom(ids[1], search.ABloomConfig{}, rng(5)))
	step(src, protocols.Call{Req: search.Publish{Key: key, Data: []byte("d")}})
	ls := src.Filter(ids[0])
	f := &search.Filter{Levels: make([][]byte, 3)}
	for i := range f.Levels {
		f.Levels[i] = make([]byte, len(ls[0]))
	}
	f.Levels[level] = ls[0]
	return f
}

// A node's filter for a neighbour: its own keys at level 0, the other neighbours'
// levels shifted one down, never what came from that neighbour.
func TestABloomFilterBuild(t *testing.T) {
	ids := peers(4)
	a := must(search.NewABloom(ids[0], search.ABloomConfig{}, rng(1)))
	outs := step(a, protocols.Neighbours{Peers: ids[1:3]})
	eqs(t, "filters to new neighbours", kinds(ids, outs), []string{"B:FILTER", "C:FILTER"})
	step(a, protocols.Call{Req: search.Publish{Key: "own", Data: []byte("x")}})
	step(a, recv(ids[1], filterWith(t, "fromB", 0)))
	step(a, recv(ids[3], filterWith(t, "fromD", 0))) // not a neighbour: ignored

	probe := func(levels [][]byte, key string) int {
		p := must(search.NewABloom(ids[3], search.ABloomConfig{}, rng(2)))
		step(p, protocols.Neighbours{Peers: ids[:1]})
		step(p, recv(ids[0], &search.Filter{Levels: levels}))
		outs := step(p, protocols.Call{Req: search.Search{ID: 1, Key: key}})
		return int(p.Stats().Matched) + 10*len(events[search.NotFound](outs))
	}
	toC := a.Filter(ids[2])
	toB := a.Filter(ids[1])
	eq(t, "own key in the filter to C", probe(toC, "own"), 1)
	eq(t, "B's key in the filter to C", probe(toC, "fromB"), 1)
	eq(t, "B's key not echoed to B", probe(toB, "fromB"), 0)
	eq(t, "D's key nowhere", probe(toC, "fromD"), 0)

	// The periodic rebuild sends only what changed; an unpublished key leaves.
	timer := protocols.TimerFired{Timer: protocols.Timer{Kind: 62}}
	outs = step(a, timer)
	eqs(t, "changed filters sent", kinds(ids, outs), []string{"B:FILTER", "C:FILTER"})
	step(a, protocols.Call{Req: search.Unpublish{Key: "own"}})
	outs = step(a, timer)
	eqs(t, "changed filters sent", kinds(ids, outs), []string{"B:FILTER", "C:FILTER"})
	eq(t, "own key gone", probe(a.Filter(ids[2]), "own"), 0)
	outs = step(a, timer)
	eqs(t, "unchanged filters not sent", kinds(ids, outs), nil)

	// Malformed filters are ignored.
	before := fmt.Sprint(a.Filter(ids[1]))
	step(a, recv(ids[2], &search.Filter{Levels: [][]byte{{255, 255}, {255, 255}, {255, 255}}}))
	step(a, recv(ids[2], &search.Filter{Levels: [][]byte{bytes.Repeat([]byte{255}, 256)}}))
	eq(t, "malformed filters ignored", fmt.Sprint(a.Filter(ids[1])), before)
}

// A query goes to the neighbour whose filter matches at the shallowest level, never
// back along its path; with no match it goes to a random unvisited neighbour.
func TestABloomRouting(t *testing.T) {
	ids := peers(6)
	a := must(search.NewABloom(ids[0], search.ABloomConfig{}, rng(1)))
	step(a, protocols.Neighbours{Peers: ids[1:5]})
	step(a, recv(ids[1], filterWith(t, "k", 2)))
	step(a, recv(ids[2], filterWith(t, "k", 1)))
	step(a, recv(ids[3], filterWith(t, "k", 0)))
	q := func(path ...int) protocols.Receive {
		var p [][]byte
		for _, i := range path {
			p = append(p, []byte(ids[i]))
		}
		return recv(ids[5], &search.Query{Id: 1, Origin: origin(ids[5]), Key: "k", Ttl: 9, Hops: 1, Path: p})
	}
	eqs(t, "shallowest match", kinds(ids, step(a, q(5))), []string{"D:QUERY"})
	eqs(t, "not back along the path", kinds(ids, step(a, q(5, 3))), []string{"C:QUERY"})
	eqs(t, "next best", kinds(ids, step(a, q(5, 3, 2))), []string{"B:QUERY"})
	eqs(t, "fallback: the one left", kinds(ids, step(a, q(5, 3, 2, 1))), []string{"E:QUERY"})
	outs := step(a, q(5))
	nq := query(sent(outs)[0])
	if nq.GetTtl() != 8 || nq.GetHops() != 2 || len(nq.GetPath()) != 2 || string(nq.GetPath()[1]) != string(ids[0]) {
		t.Fatalf("forwarded query %+v", nq)
	}
	eq(t, "matched", a.Stats().Matched, uint64(4))
	eq(t, "fallback", a.Stats().Fallback, uint64(1))
	// TTL spent: the origin hears of it.
	outs = step(a, recv(ids[5], &search.Query{Id: 1, Origin: origin(ids[5]), Key: "k", Ttl: 0, Hops: 9}))
	eqs(t, "exhausted", kinds(ids, outs), []string{"F:EXHAUSTED"})
}

func TestABloomSearchEnds(t *testing.T) {
	ids := peers(4)
	a := must(search.NewABloom(ids[0], search.ABloomConfig{}, rng(1)))
	step(a, protocols.Neighbours{Peers: ids[1:3]})
	outs := step(a, protocols.Call{Req: search.Search{ID: 5, Key: "k"}})
	eq(t, "one query", len(sent(outs)), 1)
	outs = step(a, recv(ids[2], &search.Exhausted{Id: 5}))
	if nf := events[search.NotFound](outs); len(nf) != 1 || nf[0].ID != 5 {
		t.Fatalf("not found: %+v", outs)
	}
	step(a, protocols.Call{Req: search.Search{ID: 6, Key: "k"}})
	outs = step(a, recv(ids[3], &search.Hit{Id: 6, Key: "k", Data: []byte("v"), Hops: 2}))
	if fs := events[search.Found](outs); len(fs) != 1 || fs[0].From != ids[3] {
		t.Fatalf("found: %+v", outs)
	}
}

// A search whose query (or its answer) was lost sends one more every Retry, up to the
// bound, and the answer to a later one is taken; a reported query ends nothing early.
func TestABloomRetry(t *testing.T) {
	ids := peers(3)
	a := must(search.NewABloom(ids[0], search.ABloomConfig{}, rng(1)))
	step(a, protocols.Neighbours{Peers: ids[1:3]})
	outs := step(a, protocols.Call{Req: search.Search{ID: 7, Key: "k"}})
	qs := sent(outs)
	eq(t, "queries at start", len(qs), 1)
	var retry protocols.Timer
	for _, st := range timers(outs) {
		if st.Timer.Kind != 60 { // not the search's timeout
			retry = st.Timer
			eq(t, "retry after", st.After, 2*time.Second)
		}
	}
	eq(t, "retry timer key", retry.Key, "7")

	// The first query is lost: each retry sends one more, with a new walker number.
	walkers := map[uint32]bool{query(qs[0]).GetWalker(): true}
	for i := 0; i < 8; i++ {
		outs = step(a, protocols.TimerFired{Timer: retry})
		qs = sent(outs)
		eq(t, fmt.Sprintf("queries at retry %d", i+1), len(qs), 1)
		w := query(qs[0]).GetWalker()
		if walkers[w] {
			t.Fatalf("retry %d reuses walker %d", i+1, w)
		}
		walkers[w] = true
		eq(t, fmt.Sprintf("timer set again at retry %d", i+1), len(timers(outs)), map[bool]int{true: 0, false: 1}[i == 7])
	}
	eq(t, "queries after the bound", len(sent(step(a, protocols.TimerFired{Timer: retry}))), 0)
	eq(t, "retried", a.Stats().Retried, uint64(8))

	// The last one finds the key; the search's timers are cancelled.
	outs = step(a, recv(ids[2], &search.Hit{Id: 7, Key: "k", Data: []byte("v"), Hops: 2, Node: origin(ids[2])}))
	eq(t, "found", len(events[search.Found](outs)), 1)
	eq(t, "timers cancelled", len(events[protocols.CancelTimer](outs)), 2)
	eq(t, "no retry once answered", len(sent(step(a, protocols.TimerFired{Timer: retry}))), 0)

	// Retries stand in for lost queries only: the first query that runs out of TTL
	// ends the search (Walkers is 1), though a retried one is still out.
	step(a, protocols.Call{Req: search.Search{ID: 8, Key: "k"}})
	retry8 := protocols.Timer{Kind: retry.Kind, Key: "8"}
	step(a, protocols.TimerFired{Timer: retry8})
	outs = step(a, recv(ids[1], &search.Exhausted{Id: 8, Walker: 1}))
	eq(t, "not found after one query's report", len(events[search.NotFound](outs)), 1)
	eq(t, "timers cancelled", len(events[protocols.CancelTimer](outs)), 2)
	eq(t, "no retry once over", len(sent(step(a, protocols.TimerFired{Timer: retry8}))), 0)

	// A node relays a retried query (walker number past Walkers) like any other.
	b := must(search.NewABloom(ids[1], search.ABloomConfig{}, rng(2)))
	step(b, protocols.Neighbours{Peers: ids[2:3]})
	outs = step(b, recv(ids[0], &search.Query{Id: 7, Origin: origin(ids[0]), Key: "k", Ttl: 5, Hops: 1, Walker: 8, Path: [][]byte{[]byte(ids[0])}}))
	eqs(t, "retried query relayed", kinds(ids, outs), []string{"C:QUERY"})

	// Retry < 0: never.
	c := must(search.NewABloom(ids[0], search.ABloomConfig{Retry: -1}, rng(3)))
	step(c, protocols.Neighbours{Peers: ids[1:3]})
	eq(t, "timers without retry", len(timers(step(c, protocols.Call{Req: search.Search{ID: 1, Key: "k"}}))), 1)
}
