package clustering_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/sim"
)

// xbFix drives one X-BOT core by hand. Node k sits at point k of a line; the core is
// node 0 and its cost of node k is k.
type xbFix struct {
	t   *testing.T
	ids []peer.ID
	x   *clustering.XBOT
}

func newXBFix(t *testing.T, cfg clustering.XBOTConfig) *xbFix {
	t.Helper()
	ids, err := sim.PeerIDs(11, 40)
	if err != nil {
		t.Fatal(err)
	}
	f := &xbFix{t: t, ids: ids}
	rank := func(n clustering.Node) float64 {
		if k := slices.Index(ids, n.ID); k >= 0 {
			return float64(k)
		}
		return math.NaN()
	}
	f.x, err = clustering.NewXBOT(ids[0], cfg, rank, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *xbFix) in(in protocols.Input) []protocols.Output {
	return slices.Clone(f.x.Handle(sim.Epoch, in))
}

func (f *xbFix) node(k int) *clustering.XBotNode { return &clustering.XBotNode{Id: []byte(f.ids[k])} }

// recv delivers a message from node k with k's own descriptor.
func (f *xbFix) recv(k int, m *clustering.XBotMessage) []protocols.Output {
	m.Sender = f.node(k)
	return f.in(protocols.Receive{From: f.ids[k], Msg: m})
}

// withActive starts the core and makes ks its neighbours, in order, through NEIGHBOR
// requests (the first becomes its unbiased link).
func (f *xbFix) withActive(ks ...int) {
	f.in(protocols.Start{})
	for _, k := range ks {
		f.recv(k, &clustering.XBotMessage{Body: &clustering.XBotMessage_Neighbor{Neighbor: &clustering.XBotNeighbor{}}})
	}
	if got := f.idx(f.x.Active()); !slices.Equal(got, ks) {
		f.t.Fatalf("active view %v, want %v", got, ks)
	}
}

func (f *xbFix) idx(ps []peer.ID) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = slices.Index(f.ids, p)
	}
	return out
}

// xbSent returns the messages of outs sent to node k.
func (f *xbFix) sent(outs []protocols.Output, k int) []*clustering.XBotMessage {
	var ms []*clustering.XBotMessage
	for _, o := range outs {
		if s, ok := o.(protocols.Send); ok && s.To == f.ids[k] {
			ms = append(ms, s.Msg.(*clustering.XBotMessage))
		}
	}
	return ms
}

// one returns the only message of outs sent to k, of the given kind.
func (f *xbFix) one(outs []protocols.Output, k int, kind string) *clustering.XBotMessage {
	f.t.Helper()
	var got []*clustering.XBotMessage
	for _, m := range f.sent(outs, k) {
		if m.Kind() == kind {
			got = append(got, m)
		}
	}
	if len(got) != 1 {
		f.t.Fatalf("%d %s messages to node %d, want 1 (outputs %v)", len(got), kind, k, outs)
	}
	if peer.ID(got[0].GetSender().GetId()) != f.ids[0] {
		f.t.Fatalf("%s does not carry the sender's own descriptor", kind)
	}
	return got[0]
}

func (f *xbFix) none(outs []protocols.Output, kind string) {
	f.t.Helper()
	for _, o := range outs {
		if s, ok := o.(protocols.Send); ok && s.Msg.(*clustering.XBotMessage).Kind() == kind {
			f.t.Fatalf("unexpected %s to %d", kind, slices.Index(f.ids, s.To))
		}
	}
}

// links returns the Link outputs as +k (up) and -k (down).
func (f *xbFix) links(outs []protocols.Output) []int {
	var ls []int
	for _, o := range outs {
		if l, ok := o.(protocols.Link); ok {
			k := slices.Index(f.ids, l.Peer)
			if !l.Up {
				k = -k
			}
			ls = append(ls, k)
		}
	}
	return ls
}

// viewChanged returns the last ViewChanged of outs as node indexes, or nil.
func (f *xbFix) viewChanged(outs []protocols.Output) []int {
	var v []int
	for _, o := range outs {
		if vc, ok := o.(clustering.ViewChanged); ok {
			v = []int{}
			for _, n := range vc.Nodes {
				v = append(v, slices.Index(f.ids, n.ID))
			}
		}
	}
	return v
}

// setTimers returns the timers outs sets, in order.
func setTimers(outs []protocols.Output) []protocols.Timer {
	var ts []protocols.Timer
	for _, o := range outs {
		if s, ok := o.(protocols.SetTimer); ok {
			ts = append(ts, s.Timer)
		}
	}
	return ts
}

func xbOptimize(f *xbFix) []protocols.Output {
	// The optimisation round timer is the core's timer kind 1.
	return f.in(protocols.TimerFired{Timer: protocols.Timer{Kind: 1}})
}

func TestXBOTConfig(t *testing.T) {
	d := clustering.XBOTConfig{}.WithDefaults()
	if d.ActiveView != 5 || d.PassiveView != 30 || d.Unbiased != 1 || d.PassiveScan != 10 || d.MaxPending != 4 ||
		d.ShuffleActive != 3 || d.ShufflePassive != 4 || d.ShuffleTTL != 6 ||
		d.OptimizePeriod.Seconds() != 10 || d.ShufflePeriod.Seconds() != 10 || d.ExchangeTimeout.Seconds() != 5 {
		t.Errorf("defaults %+v", d)
	}
	for _, c := range []struct {
		cfg   clustering.XBOTConfig
		field string
	}{
		{clustering.XBOTConfig{ActiveView: -1}, "XBOTConfig.ActiveView"},
		{clustering.XBOTConfig{PassiveView: -1}, "XBOTConfig.PassiveView"},
		{clustering.XBOTConfig{Unbiased: 5}, "XBOTConfig.Unbiased"},
		{clustering.XBOTConfig{PassiveScan: 31}, "XBOTConfig.PassiveScan"},
		{clustering.XBOTConfig{ExchangeTimeout: -1}, "XBOTConfig.ExchangeTimeout"},
		{clustering.XBOTConfig{OptimizePeriod: -1}, "XBOTConfig.OptimizePeriod"},
		{clustering.XBOTConfig{ShufflePassive: 300}, "XBOTConfig.ShufflePassive"},
		{clustering.XBOTConfig{MaxPending: -2}, "XBOTConfig.MaxPending"},
	} {
		var ce *protocols.ConfigError
		if err := c.cfg.Validate(); !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%+v: error %v, want one naming %s", c.cfg, err, c.field)
		}
	}
	if err := (clustering.XBOTConfig{Unbiased: -1}).Validate(); err != nil {
		t.Errorf("Unbiased -1 (none): %v", err)
	}
	ids, _ := sim.PeerIDs(1, 1)
	rank := func(clustering.Node) float64 { return 0 }
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		self  peer.ID
		rank  clustering.Rank
		rng   *rand.Rand
		field string
	}{{"", rank, rng, "self"}, {ids[0], nil, rng, "rank"}, {ids[0], rank, nil, "rng"}} {
		var ce *protocols.ConfigError
		if _, err := clustering.NewXBOT(c.self, clustering.XBOTConfig{}, c.rank, c.rng); !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("NewXBOT: error %v, want one naming %s", err, c.field)
		}
	}
}

// The membership's neighbours feed the passive view; an empty active view asks them
// with high priority; an acceptance makes a link.
func TestXBOTNeighboursFillActive(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	outs := f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[3], f.ids[4], f.ids[0], ""}})
	if len(f.sent(outs, 3))+len(f.sent(outs, 4)) != 0 {
		t.Fatal("requests before Start")
	}
	outs = f.in(protocols.Start{})
	for _, k := range []int{3, 4} {
		if m := f.one(outs, k, "XBOT_NEIGHBOR"); !m.GetNeighbor().GetHighPriority() {
			t.Errorf("request to %d not high priority with an empty view", k)
		}
	}
	if len(setTimers(outs)) != 4 { // shuffle, optimise, two requests
		t.Errorf("timers %v", setTimers(outs))
	}
	outs = f.recv(4, &clustering.XBotMessage{Body: &clustering.XBotMessage_NeighborReply{NeighborReply: &clustering.XBotNeighborReply{Accepted: true}}})
	if l := f.links(outs); !slices.Equal(l, []int{4}) {
		t.Errorf("links %v, want [4]", l)
	}
	if v := f.viewChanged(outs); !slices.Equal(v, []int{4}) {
		t.Errorf("ViewChanged %v, want [4]", v)
	}
	if u := f.idx(f.x.Unbiased()); !slices.Equal(u, []int{4}) {
		t.Errorf("unbiased %v, want the first link through NEIGHBOR", u)
	}
}

// A full view refuses a low-priority NEIGHBOR, takes a high-priority one by evicting a
// biased neighbour (never the unbiased one), and an unbiased request likewise.
func TestXBOTNeighborPriorities(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(1, 2, 3, 4, 5)
	outs := f.recv(9, &clustering.XBotMessage{Body: &clustering.XBotMessage_Neighbor{Neighbor: &clustering.XBotNeighbor{}}})
	if m := f.one(outs, 9, "XBOT_NEIGHBOR_REPLY"); m.GetNeighborReply().GetAccepted() {
		t.Fatal("low-priority request accepted into a full view")
	}
	for _, nb := range []*clustering.XBotNeighbor{{HighPriority: true}, {Unbiased: true}} {
		from := 9
		if nb.Unbiased {
			from = 10
		}
		outs = f.recv(from, &clustering.XBotMessage{Body: &clustering.XBotMessage_Neighbor{Neighbor: nb}})
		if m := f.one(outs, from, "XBOT_NEIGHBOR_REPLY"); !m.GetNeighborReply().GetAccepted() {
			t.Fatalf("%+v refused", nb)
		}
		l := f.links(outs)
		if len(l) != 2 || l[0] >= 0 || l[0] == -1 || l[1] != from {
			t.Fatalf("links %v: want a biased neighbour down, then %d up", l, from)
		}
		f.one(outs, -l[0], "XBOT_DISCONNECT")
	}
}

// The initiator picks its costliest biased neighbour and the cheapest passive candidate.
func TestXBOTOptimizationStarts(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1, 2, 25, 3) // 30 is the unbiased link
	f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[8], f.ids[6], f.ids[27]}})
	outs := xbOptimize(f)
	m := f.one(outs, 6, "OPTIMIZATION").GetOptimization()
	if peer.ID(m.GetOld().GetId()) != f.ids[25] || m.GetItoc() != 6 || m.GetItoo() != 25 || m.GetRound() == 0 {
		t.Errorf("OPTIMIZATION %+v, want old 25, itoc 6, itoo 25", m)
	}
	if len(setTimers(outs)) != 2 { // the next round and this exchange's deadline
		t.Errorf("timers %v", setTimers(outs))
	}
	// A second round while this one is out starts nothing.
	f.none(xbOptimize(f), "OPTIMIZATION")

	// c took this node in a free slot: drop o with DISCONNECT, link to c.
	outs = f.recv(6, &clustering.XBotMessage{Body: &clustering.XBotMessage_OptimizationReply{OptimizationReply: &clustering.XBotOptimizationReply{
		Accepted: true, Old: []byte(f.ids[25]), Round: m.GetRound(),
	}}})
	if d := f.one(outs, 25, "XBOT_DISCONNECT").GetDisconnect(); !d.GetAlive() {
		t.Error("DISCONNECT to o says the node left")
	}
	if l := f.links(outs); !slices.Equal(l, []int{-25, 6}) {
		t.Errorf("links %v, want [-25 6]", l)
	}
	if v := f.viewChanged(outs); !slices.Equal(v, []int{1, 2, 3, 6, 30}) {
		t.Errorf("ViewChanged %v, want best ranked first", v)
	}
	if !slices.Contains(f.idx(f.x.Passive()), 25) {
		t.Error("o not moved to the passive view")
	}
}

// No candidate cheaper than the costliest biased neighbour: no exchange. A view not
// full: no exchange.
func TestXBOTOptimizationNeedsBetterCandidate(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(1, 2, 3, 4, 5)
	f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[6], f.ids[7]}})
	f.none(xbOptimize(f), "OPTIMIZATION")

	g := newXBFix(t, clustering.XBOTConfig{})
	g.withActive(30, 31)
	g.in(protocols.Neighbours{Peers: []peer.ID{g.ids[1]}})
	g.none(xbOptimize(g), "OPTIMIZATION")
}

// The 4-node exchange as the initiator sees it: o's DISCONNECT (wait) keeps the slot
// for c (no NEIGHBOR request), and c's acceptance links to c.
func TestXBOTInitiatorWaits(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1, 2, 25, 3)
	f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[6]}})
	round := f.one(xbOptimize(f), 6, "OPTIMIZATION").GetOptimization().GetRound()
	outs := f.recv(25, &clustering.XBotMessage{Body: &clustering.XBotMessage_Disconnect{Disconnect: &clustering.XBotDisconnect{Alive: true, Wait: true}}})
	if l := f.links(outs); !slices.Equal(l, []int{-25}) {
		t.Errorf("links %v", l)
	}
	f.none(outs, "XBOT_NEIGHBOR")
	outs = f.recv(6, &clustering.XBotMessage{Body: &clustering.XBotMessage_OptimizationReply{OptimizationReply: &clustering.XBotOptimizationReply{
		Accepted: true, Old: []byte(f.ids[25]), Disconnected: []byte(f.ids[7]), Round: round,
	}}})
	if l := f.links(outs); !slices.Equal(l, []int{6}) {
		t.Errorf("links %v, want [6]", l)
	}
	f.none(outs, "XBOT_DISCONNECT")
	f.none(outs, "XBOT_NEIGHBOR")
}

// The initiator's deadline frees the reserved slot: the node refills it.
func TestXBOTInitiatorTimeout(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1, 2, 25, 3)
	f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[6], f.ids[8]}})
	outs := xbOptimize(f)
	round := f.one(outs, 6, "OPTIMIZATION").GetOptimization().GetRound()
	deadline := setTimers(outs)[1]
	f.none(f.recv(25, &clustering.XBotMessage{Body: &clustering.XBotMessage_Disconnect{Disconnect: &clustering.XBotDisconnect{Alive: true, Wait: true}}}), "XBOT_NEIGHBOR")
	outs = f.in(protocols.TimerFired{Timer: deadline})
	if len(f.sent(outs, 6))+len(f.sent(outs, 8))+len(f.sent(outs, 25)) != 1 {
		t.Fatalf("want one NEIGHBOR request after the deadline: %v", outs)
	}
	// c's acceptance comes late, the slot is taken by the request: undo it.
	outs = f.recv(6, &clustering.XBotMessage{Body: &clustering.XBotMessage_OptimizationReply{OptimizationReply: &clustering.XBotOptimizationReply{
		Accepted: true, Old: []byte(f.ids[25]), Disconnected: []byte(f.ids[7]), Round: round,
	}}})
	f.one(outs, 6, "XBOT_DISCONNECT")
	if slices.Contains(f.idx(f.x.Active()), 6) {
		t.Error("late candidate taken into a full view")
	}
}

// The candidate with a full view asks its costliest biased neighbour d with REPLACE;
// d's answer goes back to i, and an acceptance swaps d for i.
func TestXBOTCandidate(t *testing.T) {
	for _, accept := range []bool{true, false} {
		f := newXBFix(t, clustering.XBOTConfig{})
		f.withActive(30, 1, 20, 2, 3) // 30 unbiased: d is 20
		outs := f.recv(4, &clustering.XBotMessage{Body: &clustering.XBotMessage_Optimization{Optimization: &clustering.XBotOptimization{
			Old: f.node(9), Itoc: 4, Itoo: 9, Round: 77,
		}}})
		r := f.one(outs, 20, "REPLACE").GetReplace()
		if peer.ID(r.GetInitiator().GetId()) != f.ids[4] || peer.ID(r.GetOld().GetId()) != f.ids[9] ||
			r.GetItoc() != 4 || r.GetItoo() != 9 || r.GetCtod() != 20 || r.GetRound() != 77 {
			t.Fatalf("REPLACE %+v", r)
		}
		if len(f.links(outs)) != 0 {
			t.Fatal("links changed before d answered")
		}
		outs = f.recv(20, &clustering.XBotMessage{Body: &clustering.XBotMessage_ReplaceReply{ReplaceReply: &clustering.XBotReplaceReply{
			Accepted: accept, Initiator: []byte(f.ids[4]), Round: 77,
		}}})
		rep := f.one(outs, 4, "OPTIMIZATION_REPLY").GetOptimizationReply()
		if rep.GetAccepted() != accept || rep.GetRound() != 77 || peer.ID(rep.GetOld()) != f.ids[9] {
			t.Fatalf("OPTIMIZATION_REPLY %+v", rep)
		}
		want := []int{}
		if accept {
			want = []int{-20, 4}
			if peer.ID(rep.GetDisconnected()) != f.ids[20] {
				t.Error("reply does not name d")
			}
		}
		if l := f.links(outs); !slices.Equal(l, want) && !(len(l) == 0 && len(want) == 0) {
			t.Errorf("accept=%v: links %v, want %v", accept, l, want)
		}
	}
}

// A candidate with a free slot takes i at once; one busy or already linked refuses.
func TestXBOTCandidateFreeSlotAndRefusals(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1)
	opt := func(from, old int, round uint64) []protocols.Output {
		return f.recv(from, &clustering.XBotMessage{Body: &clustering.XBotMessage_Optimization{Optimization: &clustering.XBotOptimization{
			Old: f.node(old), Itoc: 1, Itoo: 2, Round: round,
		}}})
	}
	outs := opt(4, 9, 1)
	if r := f.one(outs, 4, "OPTIMIZATION_REPLY").GetOptimizationReply(); !r.GetAccepted() || len(r.GetDisconnected()) != 0 {
		t.Fatalf("free slot: %+v", r)
	}
	if l := f.links(outs); !slices.Equal(l, []int{4}) {
		t.Errorf("links %v", l)
	}
	for _, c := range []struct {
		from, old int
		why       string
	}{{4, 9, "already linked"}, {5, 5, "o is i"}, {6, 0, "o is c"}} {
		if r := f.one(opt(c.from, c.old, 2), c.from, "OPTIMIZATION_REPLY").GetOptimizationReply(); r.GetAccepted() {
			t.Errorf("%s: accepted", c.why)
		}
	}
}

// d applies the paper's rule: swap only if itoc + dtoo < itoo + ctod; it never gives up
// its unbiased link; an accepted SWITCH swaps c for o.
func TestXBOTDisconnected(t *testing.T) {
	replace := func(f *xbFix, c, i, o int, itoc, itoo, ctod float64) []protocols.Output {
		return f.recv(c, &clustering.XBotMessage{Body: &clustering.XBotMessage_Replace{Replace: &clustering.XBotReplace{
			Initiator: f.node(i), Old: f.node(o), Itoc: itoc, Itoo: itoo, Ctod: ctod, Round: 5,
		}}})
	}
	// dtoo is 3 (o is node 3).
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 12, 13, 14, 15)
	if r := f.one(replace(f, 12, 20, 3, 2, 4, 1), 12, "REPLACE_REPLY").GetReplaceReply(); r.GetAccepted() { // 2+3 >= 4+1
		t.Error("accepted a swap that does not lower the cost")
	}
	if r := f.one(replace(f, 30, 20, 3, 1, 40, 40), 30, "REPLACE_REPLY").GetReplaceReply(); r.GetAccepted() {
		t.Error("gave up the unbiased link")
	}
	if r := f.one(replace(f, 12, 20, 13, 1, 40, 40), 12, "REPLACE_REPLY").GetReplaceReply(); r.GetAccepted() {
		t.Error("accepted o that is already a neighbour")
	}
	if r := f.one(replace(f, 12, 20, 3, math.NaN(), 40, 40), 12, "REPLACE_REPLY").GetReplaceReply(); r.GetAccepted() {
		t.Error("accepted a NaN cost")
	}
	outs := replace(f, 12, 20, 3, 2, 4, 1.5) // 2+3 < 4+1.5
	s := f.one(outs, 3, "SWITCH").GetSwitch()
	if peer.ID(s.GetInitiator().GetId()) != f.ids[20] || peer.ID(s.GetCandidate().GetId()) != f.ids[12] || s.GetDtoo() != 3 || s.GetRound() != 5 {
		t.Fatalf("SWITCH %+v", s)
	}
	outs = f.recv(3, &clustering.XBotMessage{Body: &clustering.XBotMessage_SwitchReply{SwitchReply: &clustering.XBotSwitchReply{
		Accepted: true, Initiator: []byte(f.ids[20]), Round: 5,
	}}})
	if r := f.one(outs, 12, "REPLACE_REPLY").GetReplaceReply(); !r.GetAccepted() || r.GetRound() != 5 {
		t.Errorf("REPLACE_REPLY %+v", r)
	}
	f.none(outs, "XBOT_DISCONNECT")
	if l := f.links(outs); !slices.Equal(l, []int{-12, 3}) {
		t.Errorf("links %v, want [-12 3]", l)
	}
}

// o drops i for d only if i is a biased neighbour, telling i to wait.
func TestXBOTOld(t *testing.T) {
	sw := func(f *xbFix, d, i int) []protocols.Output {
		return f.recv(d, &clustering.XBotMessage{Body: &clustering.XBotMessage_Switch{Switch: &clustering.XBotSwitch{
			Initiator: f.node(i), Candidate: f.node(7), Dtoo: 1, Round: 9,
		}}})
	}
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 12, 13, 14, 15)
	for _, c := range []struct {
		d, i int
		why  string
	}{{20, 30, "i unbiased"}, {20, 21, "i not a neighbour"}, {13, 12, "d already a neighbour"}} {
		outs := sw(f, c.d, c.i)
		if r := f.one(outs, c.d, "SWITCH_REPLY").GetSwitchReply(); r.GetAccepted() {
			t.Errorf("%s: accepted", c.why)
		}
		if len(f.links(outs)) != 0 {
			t.Errorf("%s: links changed", c.why)
		}
	}
	outs := sw(f, 20, 14)
	if r := f.one(outs, 20, "SWITCH_REPLY").GetSwitchReply(); !r.GetAccepted() || r.GetRound() != 9 || peer.ID(r.GetInitiator()) != f.ids[14] {
		t.Errorf("SWITCH_REPLY %+v", r)
	}
	if d := f.one(outs, 14, "XBOT_DISCONNECT").GetDisconnect(); !d.GetWait() || !d.GetAlive() {
		t.Errorf("DISCONNECT to i %+v, want alive and wait", d)
	}
	if l := f.links(outs); !slices.Equal(l, []int{-14, 20}) {
		t.Errorf("links %v, want [-14 20]", l)
	}
}

// Parts in others' exchanges end with their deadline: c and d refuse to whoever waits,
// and a late acceptance is undone or followed so views stay symmetric.
func TestXBOTRoleTimeouts(t *testing.T) {
	// As c.
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1, 20, 2, 3)
	outs := f.recv(4, &clustering.XBotMessage{Body: &clustering.XBotMessage_Optimization{Optimization: &clustering.XBotOptimization{
		Old: f.node(9), Itoc: 4, Itoo: 9, Round: 77,
	}}})
	f.one(outs, 20, "REPLACE")
	outs = f.in(protocols.TimerFired{Timer: setTimers(outs)[0]})
	if r := f.one(outs, 4, "OPTIMIZATION_REPLY").GetOptimizationReply(); r.GetAccepted() {
		t.Error("c accepted at its deadline")
	}
	// d accepts late: it dropped c, so c drops d.
	outs = f.recv(20, &clustering.XBotMessage{Body: &clustering.XBotMessage_ReplaceReply{ReplaceReply: &clustering.XBotReplaceReply{
		Accepted: true, Initiator: []byte(f.ids[4]), Round: 77,
	}}})
	if l := f.links(outs); len(l) == 0 || l[0] != -20 {
		t.Errorf("late REPLACE_REPLY: links %v, want d dropped", l)
	}

	// As d.
	g := newXBFix(t, clustering.XBOTConfig{})
	g.withActive(30, 12, 13, 14, 15)
	outs = g.recv(12, &clustering.XBotMessage{Body: &clustering.XBotMessage_Replace{Replace: &clustering.XBotReplace{
		Initiator: g.node(20), Old: g.node(3), Itoc: 1, Itoo: 40, Ctod: 40, Round: 5,
	}}})
	g.one(outs, 3, "SWITCH")
	outs = g.in(protocols.TimerFired{Timer: setTimers(outs)[0]})
	if r := g.one(outs, 12, "REPLACE_REPLY").GetReplaceReply(); r.GetAccepted() {
		t.Error("d accepted at its deadline")
	}
	// o accepts late, d's view is full: undo o's link.
	outs = g.recv(3, &clustering.XBotMessage{Body: &clustering.XBotMessage_SwitchReply{SwitchReply: &clustering.XBotSwitchReply{
		Accepted: true, Initiator: []byte(g.ids[20]), Round: 5,
	}}})
	g.one(outs, 3, "XBOT_DISCONNECT")
	if len(g.links(outs)) != 0 {
		t.Errorf("links %v", g.links(outs))
	}
}

// A failed neighbour is replaced from the passive view; a failed d makes c refuse.
func TestXBOTPeerDown(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1, 20, 2, 3)
	f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[8]}})
	outs := f.recv(4, &clustering.XBotMessage{Body: &clustering.XBotMessage_Optimization{Optimization: &clustering.XBotOptimization{
		Old: f.node(9), Itoc: 4, Itoo: 9, Round: 77,
	}}})
	f.one(outs, 20, "REPLACE")
	outs = f.in(protocols.PeerDown{Peer: f.ids[20]})
	if r := f.one(outs, 4, "OPTIMIZATION_REPLY").GetOptimizationReply(); r.GetAccepted() {
		t.Error("accepted with d gone")
	}
	if l := f.links(outs); !slices.Equal(l, []int{-20}) {
		t.Errorf("links %v", l)
	}
	if m := f.sent(outs, 8); len(m) != 1 || m[0].Kind() != "XBOT_NEIGHBOR" || m[0].GetNeighbor().GetHighPriority() {
		t.Errorf("want a low-priority NEIGHBOR to the passive node, got %v", m)
	}
	if v := f.viewChanged(outs); !slices.Equal(v, []int{1, 2, 3, 30}) {
		t.Errorf("ViewChanged %v", v)
	}
}

func TestXBOTLeave(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1)
	outs := f.in(protocols.Leave{})
	for _, k := range []int{30, 1} {
		if d := f.one(outs, k, "XBOT_DISCONNECT").GetDisconnect(); d.GetAlive() {
			t.Error("leaving DISCONNECT says alive")
		}
	}
	if v := f.viewChanged(outs); v == nil || len(v) != 0 {
		t.Errorf("ViewChanged %v, want empty", v)
	}
	if l := f.links(outs); !slices.Equal(l, []int{-30, -1}) {
		t.Errorf("links %v", l)
	}
	if outs := f.recv(5, &clustering.XBotMessage{Body: &clustering.XBotMessage_Neighbor{Neighbor: &clustering.XBotNeighbor{HighPriority: true}}}); len(outs) != 0 {
		t.Errorf("outputs after Leave: %v", outs)
	}
}

// Messages whose sender descriptor is missing or names another peer are ignored.
func TestXBOTMalformed(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(30, 1)
	nb := &clustering.XBotMessage{Body: &clustering.XBotMessage_Neighbor{Neighbor: &clustering.XBotNeighbor{HighPriority: true}}}
	for _, m := range []*clustering.XBotMessage{nb, {Sender: f.node(6), Body: nb.Body}, {Sender: f.node(5)}} {
		if outs := f.in(protocols.Receive{From: f.ids[5], Msg: m}); len(outs) != 0 {
			t.Errorf("%v: outputs %v", m, outs)
		}
	}
	if outs := f.in(protocols.Receive{From: f.ids[5], Msg: (*clustering.XBotMessage)(nil)}); len(outs) != 0 {
		t.Errorf("nil message: outputs %v", outs)
	}
}

func TestXBOTDescriptors(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	m := &clustering.XBotMessage{Sender: f.node(1), Body: &clustering.XBotMessage_Replace{Replace: &clustering.XBotReplace{Initiator: f.node(2), Old: f.node(3)}}}
	var got []int
	for _, d := range m.Descriptors() {
		got = append(got, slices.Index(f.ids, peer.ID(d.GetId())))
	}
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("descriptors %v", got)
	}
}

// A SHUFFLE walk is passed on along active links while its TTL lasts; where it ends the
// node answers with passive nodes and keeps what came. A SHUFFLE from a node that is not
// a neighbour is answered with DISCONNECT.
func TestXBOTShuffle(t *testing.T) {
	f := newXBFix(t, clustering.XBOTConfig{})
	f.withActive(1, 2)
	f.in(protocols.Neighbours{Peers: []peer.ID{f.ids[8]}})
	walk := func(from int, ttl uint32) []protocols.Output {
		return f.recv(from, &clustering.XBotMessage{Body: &clustering.XBotMessage_Shuffle{Shuffle: &clustering.XBotShuffle{
			Origin: f.node(9), Nodes: []*clustering.XBotNode{f.node(10), f.node(0)}, Ttl: ttl, Nonce: 4,
		}}})
	}
	outs := walk(1, 3)
	if m := f.one(outs, 2, "XBOT_SHUFFLE").GetShuffle(); m.GetTtl() != 2 || peer.ID(m.GetOrigin().GetId()) != f.ids[9] {
		t.Errorf("forwarded %+v, want TTL 2 from origin 9", m)
	}
	outs = walk(1, 1)
	r := f.one(outs, 9, "XBOT_SHUFFLE_REPLY").GetShuffleReply()
	if r.GetNonce() != 4 || len(r.GetNodes()) == 0 {
		t.Errorf("reply %+v", r)
	}
	p := f.idx(f.x.Passive())
	if !slices.Contains(p, 9) || !slices.Contains(p, 10) || slices.Contains(p, 0) {
		t.Errorf("passive view %v: want the origin and 10, never itself", p)
	}
	f.one(walk(20, 1), 20, "XBOT_DISCONNECT")
}
