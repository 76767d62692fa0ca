package sampling_test

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
)

// wire delivers the messages of a few RWD cores to each other in the order sent, with
// no time passing; timers are fired by hand.
type wire struct {
	t      *testing.T
	cores  map[peer.ID]*sampling.RWD
	queue  []delivery
	timers map[peer.ID][]protocols.Timer // set and not cancelled, per node
	drop   func(from, to peer.ID, m *sampling.Message) bool
	sent   map[string]int
}

type delivery struct {
	from, to peer.ID
	msg      *sampling.Message
}

func newWire(t *testing.T, ids []peer.ID, cfg sampling.RWDConfig) *wire {
	w := &wire{t: t, cores: map[peer.ID]*sampling.RWD{}, timers: map[peer.ID][]protocols.Timer{}, sent: map[string]int{}}
	for i, id := range ids {
		w.cores[id] = must(sampling.NewRWD(id, cfg, rng(uint64(i+1))))
	}
	return w
}

func (w *wire) input(id peer.ID, in protocols.Input) {
	for _, o := range step(w.cores[id], in) {
		switch v := o.(type) {
		case protocols.Send:
			m := v.Msg.(*sampling.Message)
			w.sent[m.Kind()]++
			if w.drop != nil && w.drop(id, v.To, m) {
				continue
			}
			if _, ok := w.cores[v.To]; ok {
				w.queue = append(w.queue, delivery{id, v.To, m})
			}
		case protocols.SetTimer:
			w.timers[id] = append(slices.DeleteFunc(w.timers[id], func(t protocols.Timer) bool { return t == v.Timer }), v.Timer)
		case protocols.CancelTimer:
			w.timers[id] = slices.DeleteFunc(w.timers[id], func(t protocols.Timer) bool { return t == v.Timer })
		}
	}
}

// settle delivers until nothing is in flight.
func (w *wire) settle() {
	for k := 0; len(w.queue) > 0; k++ {
		if k > 100000 {
			w.t.Fatal("the weight exchange does not settle")
		}
		d := w.queue[0]
		w.queue = w.queue[1:]
		w.input(d.to, protocols.Receive{From: d.from, Msg: d.msg})
	}
}

// link makes a and b neighbours at both ends.
func (w *wire) neighbours(adj map[peer.ID][]peer.ID) {
	ids := make([]peer.ID, 0, len(adj))
	for id := range adj {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w.input(id, protocols.Neighbours{Peers: adj[id]})
	}
}

// check: both ends of every link hold the same weight, and no row is over the total.
func (w *wire) check() error {
	for id, c := range w.cores {
		links, self := c.Weights()
		if self < -1e-9 && len(links) < 30 {
			return fmt.Errorf("%s: self-loop weight %v", id.ShortString(), self)
		}
		for q := range links {
			if c.Extra(q) != w.cores[q].Extra(id) {
				return fmt.Errorf("link %s-%s: %d quanta at one end, %d at the other", id.ShortString(), q.ShortString(), c.Extra(q), w.cores[q].Extra(id))
			}
		}
	}
	return nil
}

// Two nodes: each moves quanta onto their link until its self-loop is below a quantum.
func TestRWDPairDistributes(t *testing.T) {
	ids := peers(2)
	w := newWire(t, ids, sampling.RWDConfig{}) // dmax 30, quantum 0.1
	w.neighbours(map[peer.ID][]peer.ID{ids[0]: {ids[1]}, ids[1]: {ids[0]}})
	w.settle()
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
	// 1 - 1/30 = 0.967 spare: 9 quanta of 0.1 fit.
	links, self := w.cores[ids[0]].Weights()
	if e := w.cores[ids[0]].Extra(ids[1]); e != 9 {
		t.Fatalf("extra %d quanta, want 9", e)
	}
	if math.Abs(links[ids[1]]-(1.0/30+0.9)) > 1e-9 || math.Abs(self-(1-1.0/30-0.9)) > 1e-9 {
		t.Fatalf("weights %v self %v", links, self)
	}
	t.Logf("messages: %v", w.sent)
}

// A hub with little spare weight gives it to one leaf and refuses the others; the leaves
// stop asking it. Weights stay symmetric.
func TestRWDStarSaturatesHub(t *testing.T) {
	ids := peers(4)
	hub, leaves := ids[0], ids[1:]
	w := newWire(t, ids, sampling.RWDConfig{MaxDegree: 4, Quantum: 0.25})
	adj := map[peer.ID][]peer.ID{hub: leaves}
	for _, l := range leaves {
		adj[l] = []peer.ID{hub}
	}
	w.neighbours(adj)
	w.settle()
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, l := range leaves {
		total += w.cores[hub].Extra(l)
	}
	// The hub's row: 3 links of 1/4 leave 1/4, one quantum.
	if total != 1 {
		t.Fatalf("the hub gave %d quanta, it had 1", total)
	}
	if _, self := w.cores[hub].Weights(); math.Abs(self) > 1e-9 {
		t.Fatalf("hub self-loop %v", self)
	}
}

// Lost answers: the owner sends its proposal again with the same version, and the other
// end answers without applying it twice.
func TestRWDLostAckRetried(t *testing.T) {
	ids := peers(2)
	w := newWire(t, ids, sampling.RWDConfig{MaxDegree: 4, Quantum: 0.25})
	dropped := 0
	w.drop = func(_, _ peer.ID, m *sampling.Message) bool {
		if a := m.GetWeightAck(); a != nil && a.Ok && dropped < 2 {
			dropped++
			return true
		}
		return false
	}
	w.neighbours(map[peer.ID][]peer.ID{ids[0]: {ids[1]}, ids[1]: {ids[0]}})
	w.settle()
	for round := 0; round < 10 && (len(w.timers[ids[0]]) > 0 || len(w.timers[ids[1]]) > 0); round++ {
		for _, id := range ids {
			for _, tm := range slices.Clone(w.timers[id]) {
				if tm.Kind == 41 { // retry
					w.input(id, protocols.TimerFired{Timer: tm})
				}
			}
		}
		w.settle()
	}
	if dropped != 2 {
		t.Fatalf("%d answers dropped", dropped)
	}
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
	if e := w.cores[ids[0]].Extra(ids[1]); e != 3 {
		t.Fatalf("extra %d, want 3 (the whole spare weight)", e)
	}
}

// A link that goes away gives its weight back to both self-loops.
func TestRWDLinkDownReturnsWeight(t *testing.T) {
	ids := peers(2)
	w := newWire(t, ids, sampling.RWDConfig{})
	w.neighbours(map[peer.ID][]peer.ID{ids[0]: {ids[1]}, ids[1]: {ids[0]}})
	w.settle()
	w.neighbours(map[peer.ID][]peer.ID{ids[0]: nil, ids[1]: nil})
	w.settle()
	for _, id := range ids {
		if links, self := w.cores[id].Weights(); len(links) != 0 || self != 1 {
			t.Fatalf("%s: links %v self %v", id.ShortString(), links, self)
		}
	}
}

// A node whose links hold all its weight gains a link: it takes quanta back from its
// heaviest link until its row fits, and both ends agree.
func TestRWDReclaimOnNewLink(t *testing.T) {
	ids := peers(3)
	a, b, c := ids[0], ids[1], ids[2]
	w := newWire(t, ids, sampling.RWDConfig{MaxDegree: 4, Quantum: 0.25})
	w.neighbours(map[peer.ID][]peer.ID{a: {b}, b: {a}, c: nil})
	w.settle()
	if e := w.cores[a].Extra(b); e != 3 {
		t.Fatalf("a-b holds %d quanta, want 3 (all)", e)
	}
	w.neighbours(map[peer.ID][]peer.ID{a: {b, c}, b: {a}, c: {a}})
	w.settle()
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
	links, self := w.cores[a].Weights()
	if self < -1e-9 || len(links) != 2 {
		t.Fatalf("a's row after the new link: %v self %v", links, self)
	}
	if w.cores[a].Extra(b) != 2 {
		t.Fatalf("a-b holds %d quanta, want 2", w.cores[a].Extra(b))
	}
}

// Repeated and stale proposals change nothing; a proposal from a peer that is no link
// of ours is answered with nothing held.
func TestRWDProposalEdgeCases(t *testing.T) {
	ids := peers(3)
	// Make ids[1] the non-owner of its link with the smaller of the two.
	lo, hi := ids[0], ids[1]
	if string(lo) > string(hi) {
		lo, hi = hi, lo
	}
	c := must(sampling.NewRWD(hi, sampling.RWDConfig{MaxDegree: 4, Quantum: 0.25}, rng(1)))
	step(c, protocols.Neighbours{Peers: []peer.ID{lo}})
	weight := func(v uint64, x uint32) *sampling.WeightAck {
		ss := sent(step(c, protocols.Receive{From: lo, Msg: &sampling.Message{Body: &sampling.Message_Weight{Weight: &sampling.Weight{Version: v, Extra: x}}}}))
		for _, s := range ss {
			if a := s.Msg.(*sampling.Message).GetWeightAck(); a != nil {
				return a
			}
		}
		return nil
	}
	if a := weight(5, 2); a == nil || !a.Ok || a.Extra != 2 || c.Extra(lo) != 2 {
		t.Fatalf("first proposal: %v, extra %d", a, c.Extra(lo))
	}
	if a := weight(5, 2); a == nil || !a.Ok || c.Extra(lo) != 2 {
		t.Fatalf("repeat: %v, extra %d", a, c.Extra(lo))
	}
	if a := weight(4, 0); a != nil || c.Extra(lo) != 2 {
		t.Fatalf("stale proposal: %v, extra %d", a, c.Extra(lo))
	}
	if a := weight(6, 9); a == nil || a.Ok || a.Extra != 2 || c.Extra(lo) != 2 {
		t.Fatalf("over the row: %v, extra %d", a, c.Extra(lo))
	}
	if a := weight(7, 1); a == nil || !a.Ok || c.Extra(lo) != 1 {
		t.Fatalf("decrease: %v, extra %d", a, c.Extra(lo))
	}
	ss := sent(step(c, protocols.Receive{From: ids[2], Msg: &sampling.Message{Body: &sampling.Message_Weight{Weight: &sampling.Weight{Version: 1, Extra: 3}}}}))
	if len(ss) != 1 || ss[0].Msg.(*sampling.Message).GetWeightAck().GetOk() {
		t.Fatalf("a stranger's proposal: %v", ss)
	}
}
