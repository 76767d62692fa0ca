package clustering_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/sim"
)

var tmanT0 = sim.Epoch

// tmanFixture is one T-Man core whose rank is the index of a peer in ids (lower is
// better): ids[1] is the best, ids[len-1] the worst; ids[0] is the core itself.
type tmanFixture struct {
	t    *testing.T
	ids  []peer.ID
	core *clustering.TMan
	cfg  clustering.TManConfig
	now  time.Time
}

func newTManFixture(t *testing.T, n int, cfg clustering.TManConfig) *tmanFixture {
	t.Helper()
	ids, err := sim.PeerIDs(77, n)
	if err != nil {
		t.Fatal(err)
	}
	f := &tmanFixture{t: t, ids: ids, cfg: cfg.WithDefaults(), now: tmanT0}
	f.core, err = clustering.NewTMan(ids[0], cfg, f.rank, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *tmanFixture) rank(n clustering.Node) float64 {
	if i := slices.Index(f.ids, n.ID); i >= 0 {
		return float64(i)
	}
	return math.Inf(1)
}

func (f *tmanFixture) handle(in protocols.Input) []protocols.Output {
	return slices.Clone(f.core.Handle(f.now, in))
}

func (f *tmanFixture) idx(ids []peer.ID) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = slices.Index(f.ids, id)
	}
	return out
}

func (f *tmanFixture) viewIdx() []int {
	var ids []peer.ID
	for _, n := range f.core.View() {
		ids = append(ids, n.ID)
	}
	return f.idx(ids)
}

func desc(id peer.ID, meta string, age time.Duration) *clustering.TManDescriptor {
	return &clustering.TManDescriptor{Id: []byte(id), Meta: []byte(meta), AgeMs: uint64(age / time.Millisecond)}
}

func msg(kind clustering.TManMessage_Kind, sender *clustering.TManDescriptor, entries ...*clustering.TManDescriptor) *clustering.TManMessage {
	return &clustering.TManMessage{Kind: kind, Sender: sender, Entries: entries}
}

// outputs splits outputs by type.
type tmanOuts struct {
	sends   []protocols.Send
	ups     []peer.ID
	downs   []peer.ID
	views   []clustering.ViewChanged
	timers  []protocols.SetTimer
	cancels []protocols.CancelTimer
}

func split(outs []protocols.Output) tmanOuts {
	var o tmanOuts
	for _, out := range outs {
		switch v := out.(type) {
		case protocols.Send:
			o.sends = append(o.sends, v)
		case protocols.Link:
			if v.Up {
				o.ups = append(o.ups, v.Peer)
			} else {
				o.downs = append(o.downs, v.Peer)
			}
		case clustering.ViewChanged:
			o.views = append(o.views, v)
		case protocols.SetTimer:
			o.timers = append(o.timers, v)
		case protocols.CancelTimer:
			o.cancels = append(o.cancels, v)
		}
	}
	return o
}

func nodeIDs(ns []clustering.Node) []peer.ID {
	ids := make([]peer.ID, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

func TestTManConfig(t *testing.T) {
	d := clustering.TManConfig{}.WithDefaults()
	if d.ViewSize != 20 || d.MessageSize != 20 || d.Psi != 2 || d.Neighbours != 20 || d.Random != 32 ||
		d.Interval != 5*time.Second || d.MaxAge != 200*time.Second || d.Suspects != 80 || d.Probe != 2 {
		t.Fatalf("defaults: %+v", d)
	}
	self, _ := sim.PeerIDs(1, 1)
	for _, tc := range []struct {
		cfg   clustering.TManConfig
		field string
	}{
		{clustering.TManConfig{ViewSize: -1}, "ViewSize"},
		{clustering.TManConfig{ViewSize: 1001}, "ViewSize"},
		{clustering.TManConfig{MessageSize: -1}, "MessageSize"},
		{clustering.TManConfig{Psi: -1}, "Psi"},
		{clustering.TManConfig{Psi: 30}, "Psi"},
		{clustering.TManConfig{Neighbours: 21}, "Neighbours"},
		{clustering.TManConfig{Random: -2}, "Random"},
		{clustering.TManConfig{Interval: -time.Second}, "Interval"},
		{clustering.TManConfig{MaxAge: -time.Second}, "MaxAge"},
		{clustering.TManConfig{Suspects: -1}, "Suspects"},
		{clustering.TManConfig{Interval: time.Second, MaxAge: time.Second}, "MaxAge"},
	} {
		err := tc.cfg.Validate()
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(ce.Field, tc.field) {
			t.Errorf("%+v: error %v, want one naming %s", tc.cfg, err, tc.field)
		}
		if _, err := clustering.NewTMan(self[0], tc.cfg, func(clustering.Node) float64 { return 0 }, rand.New(rand.NewPCG(1, 1))); err == nil {
			t.Errorf("%+v: NewTMan accepted it", tc.cfg)
		}
	}
	ids, _ := sim.PeerIDs(1, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	rank := func(clustering.Node) float64 { return 0 }
	if _, err := clustering.NewTMan(ids[0], clustering.TManConfig{}, nil, rng); err == nil {
		t.Error("nil rank accepted")
	}
	if _, err := clustering.NewTMan(ids[0], clustering.TManConfig{}, rank, nil); err == nil {
		t.Error("nil rng accepted")
	}
	if _, err := clustering.NewTMan("", clustering.TManConfig{}, rank, rng); err == nil {
		t.Error("empty self accepted")
	}
}

// The membership's neighbours fill the view, best ranked first; the best Neighbours of
// it come up as links and are reported.
func TestTManNeighboursFillView(t *testing.T) {
	f := newTManFixture(t, 10, clustering.TManConfig{ViewSize: 4, Neighbours: 3})
	o := split(f.handle(protocols.Start{}))
	if len(o.timers) != 1 || o.timers[0].After <= 0 || o.timers[0].After > 5*time.Second {
		t.Fatalf("start: timers %+v, want one cycle timer within the interval", o.timers)
	}
	o = split(f.handle(protocols.Neighbours{Peers: []peer.ID{f.ids[7], f.ids[3], f.ids[0], f.ids[9], f.ids[5], f.ids[2]}}))
	if got := f.viewIdx(); !slices.Equal(got, []int{2, 3, 5, 7}) {
		t.Fatalf("view %v, want [2 3 5 7] (the 4 best, never itself)", got)
	}
	if got := f.idx(o.ups); !slices.Equal(got, []int{2, 3, 5}) {
		t.Fatalf("links up %v, want [2 3 5]", got)
	}
	if len(o.views) != 1 || !slices.Equal(f.idx(nodeIDs(o.views[0].Nodes)), []int{2, 3, 5}) {
		t.Fatalf("ViewChanged %+v, want one with [2 3 5]", o.views)
	}
	// The same neighbours again: nothing changes, nothing is reported.
	o = split(f.handle(protocols.Neighbours{Peers: []peer.ID{f.ids[7], f.ids[3], f.ids[9], f.ids[5], f.ids[2]}}))
	if len(o.ups)+len(o.downs)+len(o.views) != 0 {
		t.Fatalf("unchanged neighbours reported: %+v", o)
	}
}

// A cycle sends a REQUEST to one of the Psi best, with the node's own descriptor and a
// buffer of at most MessageSize entries: the best half first, never the receiver.
func TestTManCycleSendsBuffer(t *testing.T) {
	f := newTManFixture(t, 30, clustering.TManConfig{ViewSize: 10, MessageSize: 6, Psi: 2, Probe: -1})
	f.handle(protocols.Start{})
	f.handle(protocols.SelfUpdated{Record: nil, Meta: []byte("me")})
	f.handle(protocols.Neighbours{Peers: f.ids[1:]})
	targets := map[int]int{}
	for k := 0; k < 40; k++ {
		f.now = f.now.Add(time.Second)
		o := split(f.handle(protocols.TimerFired{Timer: protocols.Timer{Kind: 71}}))
		if len(o.sends) != 1 || len(o.timers) != 1 {
			t.Fatalf("cycle: %d sends, %d timers; want 1 and 1", len(o.sends), len(o.timers))
		}
		s := o.sends[0]
		m := s.Msg.(*clustering.TManMessage)
		to := slices.Index(f.ids, s.To)
		targets[to]++
		if m.GetKind() != clustering.TManMessage_REQUEST || string(m.GetSender().GetMeta()) != "me" ||
			peer.ID(m.GetSender().GetId()) != f.ids[0] || m.GetSender().GetAgeMs() != 0 {
			t.Fatalf("request %v", m)
		}
		if len(m.GetEntries()) != 6 {
			t.Fatalf("%d entries, want MessageSize 6", len(m.GetEntries()))
		}
		var got []int
		for _, d := range m.GetEntries() {
			got = append(got, slices.Index(f.ids, peer.ID(d.GetId())))
		}
		if slices.Contains(got, to) || slices.Contains(got, 0) {
			t.Fatalf("buffer %v to %d holds the receiver or the sender", got, to)
		}
		// The best three (of 1, 2, 3, 4 without the receiver) come first.
		var want []int
		for i := 1; len(want) < 3; i++ {
			if i != to {
				want = append(want, i)
			}
		}
		if !slices.Equal(got[:3], want) {
			t.Fatalf("buffer %v: best half %v, want %v", got, got[:3], want)
		}
	}
	if len(targets) != 2 || targets[1] == 0 || targets[2] == 0 {
		t.Fatalf("targets %v: want both of the Psi=2 best", targets)
	}
}

// A REQUEST is answered with a REPLY built before merging; both REQUEST and REPLY
// buffers are merged, keeping the ViewSize best, the sender's descriptor (record,
// metadata) included.
func TestTManExchange(t *testing.T) {
	f := newTManFixture(t, 12, clustering.TManConfig{ViewSize: 3, Neighbours: 3})
	f.handle(protocols.Neighbours{Peers: []peer.ID{f.ids[8], f.ids[9], f.ids[10]}})
	o := split(f.handle(protocols.Receive{From: f.ids[5], Msg: msg(clustering.TManMessage_REQUEST,
		desc(f.ids[5], "five", 0), desc(f.ids[2], "two", time.Second), desc(f.ids[11], "", 0))}))
	if len(o.sends) != 1 || o.sends[0].To != f.ids[5] {
		t.Fatalf("sends %+v, want one REPLY to 5", o.sends)
	}
	r := o.sends[0].Msg.(*clustering.TManMessage)
	var got []int
	for _, d := range r.GetEntries() {
		got = append(got, slices.Index(f.ids, peer.ID(d.GetId())))
	}
	if r.GetKind() != clustering.TManMessage_REPLY || !slices.Equal(got, []int{8, 9, 10}) {
		t.Fatalf("reply %v with entries %v, want REPLY with the view before the merge [8 9 10]", r.GetKind(), got)
	}
	if v := f.viewIdx(); !slices.Equal(v, []int{2, 5, 8}) {
		t.Fatalf("view %v after the merge, want [2 5 8]", v)
	}
	vw := f.core.View()
	if string(vw[0].Meta) != "two" || string(vw[1].Meta) != "five" {
		t.Fatalf("metadata not kept: %q %q", vw[0].Meta, vw[1].Meta)
	}
	if got := f.idx(o.downs); !slices.Equal(got, []int{9, 10}) || !slices.Equal(f.idx(o.ups), []int{2, 5}) {
		t.Fatalf("links down %v up %v, want down [9 10] up [2 5]", got, f.idx(o.ups))
	}
	// A REPLY is merged and not answered; new metadata of a neighbour is reported.
	f.now = f.now.Add(time.Second)
	o = split(f.handle(protocols.Receive{From: f.ids[1], Msg: msg(clustering.TManMessage_REPLY, desc(f.ids[1], "one", 0), desc(f.ids[2], "two v2", 0))}))
	if len(o.sends) != 0 {
		t.Fatalf("a REPLY was answered: %+v", o.sends)
	}
	if v := f.viewIdx(); !slices.Equal(v, []int{1, 2, 5}) {
		t.Fatalf("view %v, want [1 2 5]", v)
	}
	if len(o.views) != 1 || string(o.views[0].Nodes[1].Meta) != "two v2" {
		t.Fatalf("ViewChanged %+v, want the new metadata of 2", o.views)
	}
}

// A NaN rank is the worst; ties are broken by peer ID.
func TestTManNaNRank(t *testing.T) {
	ids, _ := sim.PeerIDs(3, 5)
	nan := ids[1]
	core, err := clustering.NewTMan(ids[0], clustering.TManConfig{ViewSize: 3}, func(n clustering.Node) float64 {
		if n.ID == nan {
			return math.NaN()
		}
		return 1
	}, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	core.Handle(tmanT0, protocols.Neighbours{Peers: ids[1:]})
	v := nodeIDs(core.View())
	want := slices.Clone(ids[2:])
	slices.Sort(want)
	if !slices.Equal(v, want) {
		t.Fatalf("view %v, want the three rank-1 nodes sorted by ID %v (NaN worst)", v, want)
	}
}

// A peer reported down leaves the view at once; a LEAVE from a peer too.
func TestTManPeerDownAndLeaveMessage(t *testing.T) {
	f := newTManFixture(t, 8, clustering.TManConfig{ViewSize: 4, Neighbours: 2})
	f.handle(protocols.Neighbours{Peers: f.ids[1:5]})
	o := split(f.handle(protocols.PeerDown{Peer: f.ids[1]}))
	if !slices.Equal(f.viewIdx(), []int{2, 3, 4}) || !slices.Equal(f.idx(o.downs), []int{1}) || !slices.Equal(f.idx(o.ups), []int{3}) {
		t.Fatalf("after PeerDown: view %v, downs %v, ups %v", f.viewIdx(), f.idx(o.downs), f.idx(o.ups))
	}
	o = split(f.handle(protocols.Receive{From: f.ids[2], Msg: msg(clustering.TManMessage_LEAVE, desc(f.ids[2], "", 0))}))
	if !slices.Equal(f.viewIdx(), []int{3, 4}) || len(o.sends) != 0 || len(o.views) != 1 {
		t.Fatalf("after LEAVE: view %v, outputs %+v", f.viewIdx(), o)
	}
}

// Leave says goodbye to the neighbours, drops the links, cancels the timer; then the
// core is silent.
func TestTManLeave(t *testing.T) {
	f := newTManFixture(t, 8, clustering.TManConfig{ViewSize: 4, Neighbours: 2})
	f.handle(protocols.Start{})
	f.handle(protocols.Neighbours{Peers: f.ids[1:5]})
	o := split(f.handle(protocols.Leave{}))
	var to []peer.ID
	for _, s := range o.sends {
		if s.Msg.(*clustering.TManMessage).GetKind() != clustering.TManMessage_LEAVE {
			t.Fatalf("sent %v on Leave", s.Msg)
		}
		to = append(to, s.To)
	}
	if !slices.Equal(f.idx(to), []int{1, 2}) || !slices.Equal(f.idx(o.downs), []int{1, 2}) || len(o.cancels) != 1 {
		t.Fatalf("leave: goodbyes to %v, downs %v, cancels %d", f.idx(to), f.idx(o.downs), len(o.cancels))
	}
	for _, in := range []protocols.Input{
		protocols.TimerFired{Timer: protocols.Timer{Kind: 71}},
		protocols.Receive{From: f.ids[3], Msg: msg(clustering.TManMessage_REQUEST, desc(f.ids[3], "", 0))},
		protocols.Neighbours{Peers: f.ids[1:]},
	} {
		if out := f.handle(in); len(out) != 0 {
			t.Fatalf("after Leave, %T gave %v", in, out)
		}
	}
}

// Descriptors older than MaxAge are not taken, and those in the view expire when no
// news of their node comes; a random peer of the membership counts as news.
func TestTManAges(t *testing.T) {
	f := newTManFixture(t, 8, clustering.TManConfig{ViewSize: 4, Interval: time.Second, MaxAge: 10 * time.Second})
	f.handle(protocols.Start{})
	f.handle(protocols.Receive{From: f.ids[5], Msg: msg(clustering.TManMessage_REPLY, desc(f.ids[5], "", 0),
		desc(f.ids[1], "", 11*time.Second), desc(f.ids[2], "", 4*time.Second), desc(f.ids[3], "", 0))})
	if !slices.Equal(f.viewIdx(), []int{2, 3, 5}) {
		t.Fatalf("view %v, want [2 3 5]: 1 is too old", f.viewIdx())
	}
	f.handle(protocols.Neighbours{Peers: []peer.ID{f.ids[3]}})
	for k := 0; k < 7; k++ {
		f.now = f.now.Add(time.Second)
		f.handle(protocols.TimerFired{Timer: protocols.Timer{Kind: 71}})
	}
	// 2 was heard of 4+7 = 11 s ago; 5 7 s ago; 3 is a membership neighbour.
	if !slices.Equal(f.viewIdx(), []int{3, 5}) {
		t.Fatalf("view %v after 7 s, want [3 5]", f.viewIdx())
	}
	f.now = f.now.Add(4 * time.Second)
	f.handle(protocols.TimerFired{Timer: protocols.Timer{Kind: 71}})
	if !slices.Equal(f.viewIdx(), []int{3}) {
		t.Fatalf("view %v after 11 s, want [3]", f.viewIdx())
	}
	if f.core.Stats().Expired == 0 {
		t.Fatal("Expired not counted")
	}
}

// Malformed input is ignored: unparsable IDs, oversized metadata, a sender descriptor
// naming another peer, a nil or foreign message, a message from itself, more entries
// than the bound.
func TestTManMalformed(t *testing.T) {
	f := newTManFixture(t, 100, clustering.TManConfig{ViewSize: 50, MessageSize: 5})
	big := make([]byte, 5000)
	o := split(f.handle(protocols.Receive{From: f.ids[9], Msg: msg(clustering.TManMessage_REPLY,
		desc(f.ids[1], "forged", 0), // the sender says it is 1
		&clustering.TManDescriptor{Id: []byte("junk")},
		&clustering.TManDescriptor{Id: []byte(f.ids[2]), Meta: big},
		desc(f.ids[0], "", 0), // itself
		desc(f.ids[3], "", 0))}))
	if !slices.Equal(f.viewIdx(), []int{3, 9}) {
		t.Fatalf("view %v, want [3 9]", f.viewIdx())
	}
	if v := f.core.View(); len(v[1].Meta) != 0 {
		t.Fatalf("the forged sender descriptor was taken: %q", v[1].Meta)
	}
	if len(o.sends) != 0 {
		t.Fatal("a REPLY was answered")
	}
	var many []*clustering.TManDescriptor
	for _, id := range f.ids[10:40] {
		many = append(many, desc(id, "", 0))
	}
	f.handle(protocols.Receive{From: f.ids[50], Msg: msg(clustering.TManMessage_REPLY, desc(f.ids[50], "", 0), many...)})
	if n := len(f.core.View()); n != 2+1+10 {
		t.Fatalf("view of %d, want 13: 2*MessageSize entries read", n)
	}
	before := f.core.Stats().Ignored
	for _, in := range []protocols.Input{
		protocols.Receive{From: f.ids[4], Msg: (*clustering.TManMessage)(nil)},
		protocols.Receive{From: f.ids[4], Msg: &clustering.TManDescriptor{}},
		protocols.Receive{From: f.ids[0], Msg: msg(clustering.TManMessage_REQUEST, nil)},
		protocols.Receive{From: f.ids[4], Msg: &clustering.TManMessage{Kind: 99}},
	} {
		if out := f.handle(in); len(out) != 0 {
			t.Fatalf("%v gave %v", in, out)
		}
	}
	if f.core.Stats().Ignored < before+4 {
		t.Fatalf("ignored %d -> %d", before, f.core.Stats().Ignored)
	}
}

// Messages list their descriptors for the runtime to check.
func TestTManDescriptors(t *testing.T) {
	ids, _ := sim.PeerIDs(4, 3)
	m := msg(clustering.TManMessage_REQUEST, desc(ids[0], "", 0), desc(ids[1], "", 0), nil, desc(ids[2], "", 0))
	var got []peer.ID
	for _, d := range m.Descriptors() {
		got = append(got, peer.ID(d.GetId()))
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("descriptors %v, want %v", got, ids)
	}
	if k := clustering.TManKind(m); k != "TMAN_REQUEST" {
		t.Fatalf("kind %s", k)
	}
}

// Every Probe-th cycle the exchange goes to the entry heard of longest ago; the others
// go to one of the Psi best.
func TestTManProbe(t *testing.T) {
	f := newTManFixture(t, 10, clustering.TManConfig{ViewSize: 5, Psi: 1, Probe: 3})
	f.handle(protocols.Receive{From: f.ids[9], Msg: msg(clustering.TManMessage_REPLY, desc(f.ids[9], "", 0),
		desc(f.ids[1], "", time.Second), desc(f.ids[2], "", 0), desc(f.ids[4], "", 3*time.Second), desc(f.ids[3], "", 0))})
	var to []int
	for k := 0; k < 6; k++ {
		f.now = f.now.Add(10 * time.Millisecond)
		o := split(f.handle(protocols.TimerFired{Timer: protocols.Timer{Kind: 71}}))
		to = append(to, slices.Index(f.ids, o.sends[0].To))
	}
	// Cycles 1, 2: the best (1); cycle 3: the oldest (4); ...
	if !slices.Equal(to, []int{1, 1, 4, 1, 1, 4}) {
		t.Fatalf("exchanges went to %v, want [1 1 4 1 1 4]", to)
	}
}

// A node found down is not taken back from others' older descriptors, nor from the
// membership, until it is heard of again (a descriptor younger than the failure, or a
// message of its own).
func TestTManDownNotReadded(t *testing.T) {
	f := newTManFixture(t, 10, clustering.TManConfig{ViewSize: 5, Interval: time.Second})
	f.handle(protocols.Neighbours{Peers: []peer.ID{f.ids[1], f.ids[2]}})
	f.now = f.now.Add(time.Second)
	f.handle(protocols.PeerDown{Peer: f.ids[1]})
	f.now = f.now.Add(time.Second)
	f.handle(protocols.Neighbours{Peers: []peer.ID{f.ids[1], f.ids[2]}})
	f.handle(protocols.Receive{From: f.ids[5], Msg: msg(clustering.TManMessage_REPLY, desc(f.ids[5], "", 0), desc(f.ids[1], "", 1500*time.Millisecond))})
	if v := f.viewIdx(); !slices.Equal(v, []int{2, 5}) {
		t.Fatalf("view %v, want [2 5]: 1 is down", v)
	}
	f.handle(protocols.Receive{From: f.ids[6], Msg: msg(clustering.TManMessage_REPLY, desc(f.ids[6], "", 0), desc(f.ids[1], "", 500*time.Millisecond))})
	if v := f.viewIdx(); !slices.Equal(v, []int{1, 2, 5, 6}) {
		t.Fatalf("view %v, want [1 2 5 6]: 1 was heard of after it was found down", v)
	}
}
