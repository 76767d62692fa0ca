package aggregation

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/sim"
)

var (
	ids = func() []peer.ID {
		ids, err := sim.PeerIDs(42, 8)
		if err != nil {
			panic(err)
		}
		return ids
	}()
	t0 = sim.Epoch
)

// node is a core under test with the outputs of its last input.
type node struct {
	t    *testing.T
	id   peer.ID
	c    *PushPull
	now  time.Time
	outs []protocols.Output
}

func newNode(t *testing.T, i int, cfg PushPullConfig) *node {
	t.Helper()
	c, err := NewPushPull(ids[i], cfg, rand.New(rand.NewPCG(uint64(i), 1)))
	if err != nil {
		t.Fatal(err)
	}
	return &node{t: t, id: ids[i], c: c, now: t0}
}

func (n *node) in(in protocols.Input) []protocols.Output {
	n.outs = slices.Clone(n.c.Handle(n.now, in))
	return n.outs
}

func (n *node) tick() []protocols.Output {
	return n.in(protocols.TimerFired{Timer: protocols.Timer{Kind: timerCycle}})
}

func (n *node) timeout() []protocols.Output {
	return n.in(protocols.TimerFired{Timer: protocols.Timer{Kind: timerTimeout}})
}

// from hands n the message m sent by peer p (a copy, as the wire would).
func (n *node) from(p peer.ID, m *Message) []protocols.Output {
	return n.in(protocols.Receive{From: p, Msg: proto.Clone(m)})
}

// sent returns the one message n sent to p in its last outputs.
func (n *node) sent(p peer.ID) *Message {
	n.t.Helper()
	var got []*Message
	for _, o := range n.outs {
		if s, ok := o.(protocols.Send); ok && s.To == p {
			got = append(got, s.Msg.(*Message))
		}
	}
	if len(got) != 1 {
		n.t.Fatalf("%d messages to %s, want 1; outputs:\n%s", len(got), p.ShortString(), show(n.outs))
	}
	return got[0]
}

// inEpoch puts a node into epoch e with the given neighbours, as if the network had
// been running: it hears of the epoch from a peer right at its start.
func (n *node) inEpoch(e uint64, neigh ...peer.ID) {
	n.t.Helper()
	n.in(protocols.Start{})
	n.in(protocols.Neighbours{Peers: neigh})
	n.in(protocols.Receive{From: ids[7], Msg: &Message{Body: &Message_Refuse{Refuse: &Refuse{Reason: Refuse_BUSY, Epoch: e, Cycle: 0}}}})
	if est := n.c.Estimate(); est.Epoch != e || est.Cycle != 0 {
		n.t.Fatalf("node not in epoch %d: %+v", e, est)
	}
}

// show prints outputs one per line, for failure messages and transcripts.
func show(outs []protocols.Output) string {
	var b strings.Builder
	for _, o := range outs {
		switch v := o.(type) {
		case protocols.Send:
			fmt.Fprintf(&b, "send %s %s\n", peerName(v.To), describe(v.Msg.(*Message)))
		case protocols.SetTimer:
			fmt.Fprintf(&b, "timer %d %v\n", v.Timer.Kind, v.After)
		case protocols.CancelTimer:
			fmt.Fprintf(&b, "cancel %d\n", v.Timer.Kind)
		case Updated:
			e := v.Estimate
			fmt.Fprintf(&b, "updated epoch=%d cycle=%d value=%g known=%v final=%g@%d\n", e.Epoch, e.Cycle, e.Value, e.Known, e.Final, e.FinalEpoch)
		default:
			fmt.Fprintf(&b, "%T\n", o)
		}
	}
	return b.String()
}

func peerName(p peer.ID) string {
	if i := slices.Index(ids, p); i >= 0 {
		return fmt.Sprintf("n%d", i)
	}
	return p.ShortString()
}

func describe(m *Message) string {
	st := func(s *State) string {
		var ins []string
		for _, in := range s.GetInstances() {
			ins = append(ins, fmt.Sprintf("%x:%g", in.GetId()>>56, in.GetValue()))
		}
		return fmt.Sprintf("value=%g inst=[%s]", s.GetValue(), strings.Join(ins, " "))
	}
	switch {
	case m.GetRequest() != nil:
		r := m.GetRequest()
		return fmt.Sprintf("REQUEST ex=%d epoch=%d cycle=%d fn=%d %s", r.GetExchange(), r.GetEpoch(), r.GetCycle(), r.GetFunction(), st(r.GetState()))
	case m.GetReply() != nil:
		r := m.GetReply()
		return fmt.Sprintf("REPLY ex=%d epoch=%d %s", r.GetExchange(), r.GetEpoch(), st(r.GetState()))
	case m.GetRefuse() != nil:
		r := m.GetRefuse()
		return fmt.Sprintf("REFUSE ex=%d %s epoch=%d cycle=%d next=%d ticks=%d", r.GetExchange(), r.GetReason(), r.GetEpoch(), r.GetCycle(), r.GetNext(), r.GetTicks())
	}
	return "EMPTY"
}

func wantOutputs(t *testing.T, got []protocols.Output, want string) {
	t.Helper()
	if g := show(got); strings.TrimSpace(g) != strings.TrimSpace(want) {
		t.Fatalf("outputs:\n%s\nwant:\n%s", g, want)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg   PushPullConfig
		field string
	}{
		{PushPullConfig{Function: 9}, "Function"},
		{PushPullConfig{Value: math.NaN()}, "Value"},
		{PushPullConfig{Value: math.Inf(-1)}, "Value"},
		{PushPullConfig{Cycle: -1}, "Cycle"},
		{PushPullConfig{EpochCycles: -3}, "EpochCycles"},
		{PushPullConfig{EpochCycles: 1 << 21}, "EpochCycles"},
		{PushPullConfig{Timeout: -time.Second}, "Timeout"},
		{PushPullConfig{StartAfter: -1}, "StartAfter"},
		{PushPullConfig{Leaders: -1}, "Leaders"},
		{PushPullConfig{MaxInstances: -1}, "MaxInstances"},
		{PushPullConfig{Leaders: 10, MaxInstances: 5}, "MaxInstances"},
		{PushPullConfig{MaxNeighbours: -1}, "MaxNeighbours"},
		{PushPullConfig{ReplyCache: -1}, "ReplyCache"},
	} {
		err := tc.cfg.Validate()
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || ce.Field != "PushPullConfig."+tc.field {
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfg, err, tc.field)
		}
		if _, err := NewPushPull(ids[0], tc.cfg, rand.New(rand.NewPCG(1, 1))); err == nil {
			t.Errorf("%+v accepted by NewPushPull", tc.cfg)
		}
	}
	if err := (PushPullConfig{}).Validate(); err != nil {
		t.Fatal(err)
	}
	d := PushPullConfig{}.WithDefaults()
	if d.Cycle != time.Second || d.EpochCycles != 30 || d.Timeout != 125*time.Millisecond || d.Retries != 4 || d.Leaders != 8 || d.MaxInstances != 32 {
		t.Fatalf("defaults %+v", d)
	}
	if _, err := NewPushPull(ids[0], PushPullConfig{}, nil); err == nil {
		t.Fatal("nil rng accepted")
	}
	if _, err := NewPushPull("", PushPullConfig{}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("empty self accepted")
	}
}

// A node of a new network probes its neighbour for a schedule, hears of no epoch, and
// after StartAfter cycles starts epoch 1 itself and opens its first exchange.
func TestNewNetworkStartsEpochOne(t *testing.T) {
	n := newNode(t, 0, PushPullConfig{Value: 4, StartAfter: 2})
	out := n.in(protocols.Start{})
	if len(out) != 1 || out[0].(protocols.SetTimer).After <= 0 || out[0].(protocols.SetTimer).After > time.Second {
		t.Fatalf("start: want one cycle timer within the first cycle:\n%s", show(out))
	}
	n.in(protocols.Neighbours{Peers: []peer.ID{ids[1], ids[0], ids[1]}}) // self and duplicates dropped
	if got := n.c.Neighbours(); len(got) != 1 || got[0] != ids[1] {
		t.Fatalf("neighbours %v", got)
	}
	for k := 0; k < 2; k++ {
		wantOutputs(t, n.tick(), `
timer 40 1s
send n1 REQUEST ex=0 epoch=0 cycle=0 fn=0 value=0 inst=[]`)
	}
	// n1 is new too: its refusal says it waits, with no schedule.
	n.in(protocols.Receive{From: ids[1], Msg: &Message{Body: &Message_Refuse{Refuse: &Refuse{Reason: Refuse_WAITING}}}})
	if e := n.c.Estimate(); e.Known || e.Epoch != 0 {
		t.Fatalf("estimate while waiting: %+v", e)
	}
	wantOutputs(t, n.tick(), `
timer 40 1s
updated epoch=1 cycle=0 value=4 known=true final=0@0
send n1 REQUEST ex=1 epoch=1 cycle=1 fn=0 value=4 inst=[]
timer 41 125ms`)
}

// One push-pull exchange, both ends: the passive node answers with its old value and
// both hold the average; the sum of the two values is conserved exactly.
func TestExchangeAveragesBothEnds(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 3})
	b := newNode(t, 1, PushPullConfig{Value: 10})
	a.inEpoch(5, ids[1])
	b.inEpoch(5, ids[0])
	a.tick()
	req := a.sent(ids[1])
	wantOutputs(t, b.from(ids[0], req), `
send n0 REPLY ex=1 epoch=5 value=10 inst=[]
updated epoch=5 cycle=0 value=6.5 known=true final=0@0`)
	wantOutputs(t, a.from(ids[1], b.sent(ids[0])), `
updated epoch=5 cycle=1 value=6.5 known=true final=0@0
cancel 41`)
	if a.c.Stats().Completed != 1 || b.c.Stats().Served != 1 {
		t.Fatalf("stats %+v %+v", a.c.Stats(), b.c.Stats())
	}
	// A second reply to the same exchange is late: nothing changes.
	wantOutputs(t, a.from(ids[1], b.sent(ids[0])), ``)
	if a.c.Stats().Late != 1 || a.c.Estimate().Value != 6.5 {
		t.Fatalf("late reply applied: %+v", a.c.Stats())
	}
}

// While a node waits for the answer to its own request it refuses every other request,
// rather than applying a half-finished update: its value stays as sent.
func TestBusyNodeRefuses(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 1})
	c := newNode(t, 2, PushPullConfig{Value: 100})
	a.inEpoch(3, ids[1])
	c.inEpoch(3, ids[0])
	a.tick() // a -> n1, in flight
	c.tick()
	wantOutputs(t, a.from(ids[2], c.sent(ids[0])), `send n2 REFUSE ex=1 BUSY epoch=3 cycle=1 next=0 ticks=0`)
	wantOutputs(t, c.from(ids[0], a.sent(ids[2])), `cancel 41`)
	if a.c.Estimate().Value != 1 || c.c.Estimate().Value != 100 || c.c.Stats().Busy != 1 {
		t.Fatalf("values %v %v, stats %+v", a.c.Estimate().Value, c.c.Estimate().Value, c.c.Stats())
	}
	// The refused node initiates again at its next cycle.
	c.tick()
	if r := c.sent(ids[0]).GetRequest(); r.GetExchange() != 2 {
		t.Fatalf("next request %v", describe(c.sent(ids[0])))
	}
}

// A refusal stands: a repeat of a refused request (its refusal was slow or lost) is
// refused again even though the node is free by then, since the initiator may have
// taken the first refusal and moved on.
func TestRepeatOfRefusedRequestRefusedAgain(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 1})
	a.inEpoch(3, ids[1])
	a.tick() // busy with n1
	req := &Message{Body: &Message_Request{Request: &Request{Exchange: 4, Epoch: 3, Cycle: 1, State: &State{Value: 9}}}}
	wantOutputs(t, a.from(ids[2], req), `send n2 REFUSE ex=4 BUSY epoch=3 cycle=1 next=0 ticks=0`)
	a.from(ids[1], &Message{Body: &Message_Reply{Reply: &Reply{Exchange: 1, Epoch: 3, State: &State{Value: 1}}}})
	a.now = a.now.Add(125 * time.Millisecond)
	wantOutputs(t, a.from(ids[2], req), `send n2 REFUSE ex=4 BUSY epoch=3 cycle=1 next=0 ticks=0`)
	if e := a.c.Estimate(); e.Value != 1 || a.c.Stats().Served != 0 {
		t.Fatalf("the repeat was applied: %+v %+v", e, a.c.Stats())
	}
}

// A lost reply: the initiator repeats its request under the same exchange number; the
// passive node, which applied the exchange already, answers from its cache and applies
// nothing twice. Mass is conserved.
func TestRepeatedRequestAnsweredFromCache(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 2})
	b := newNode(t, 1, PushPullConfig{Value: 8})
	a.inEpoch(1, ids[1])
	b.inEpoch(1, ids[0])
	a.tick()
	req := a.sent(ids[1])
	b.from(ids[0], req) // reply lost
	wantOutputs(t, a.timeout(), `
send n1 REQUEST ex=1 epoch=1 cycle=1 fn=0 value=2 inst=[]
timer 41 125ms`)
	b.now = b.now.Add(125 * time.Millisecond)
	wantOutputs(t, b.from(ids[0], a.sent(ids[1])), `send n0 REPLY ex=1 epoch=1 value=8 inst=[]`)
	a.from(ids[1], b.sent(ids[0]))
	if va, vb := a.c.Estimate().Value, b.c.Estimate().Value; va != 5 || vb != 5 {
		t.Fatalf("values %v %v, want 5 5", va, vb)
	}
	if b.c.Stats().Served != 1 || a.c.Stats().Retransmits != 1 {
		t.Fatalf("stats %+v %+v", a.c.Stats(), b.c.Stats())
	}
}

// No answer at all: after Retries repeats the initiator gives up, counts a failure, and
// is free to exchange again.
func TestGiveUpAfterRetries(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 2, Retries: 1})
	a.inEpoch(1, ids[1])
	a.tick()
	a.timeout()
	a.sent(ids[1])
	wantOutputs(t, a.timeout(), `cancel 41`)
	if st := a.c.Stats(); st.Failed != 1 || st.Retransmits != 1 {
		t.Fatalf("stats %+v", st)
	}
	a.tick()
	if r := a.sent(ids[1]).GetRequest(); r.GetExchange() != 2 {
		t.Fatalf("no new exchange after giving up: %s", describe(a.sent(ids[1])))
	}
	// Retries < 0: the paper's single attempt.
	b := newNode(t, 1, PushPullConfig{Value: 2, Retries: -1})
	b.inEpoch(1, ids[0])
	b.tick()
	wantOutputs(t, b.timeout(), `cancel 41`)
	if b.c.Stats().Failed != 1 {
		t.Fatalf("stats %+v", b.c.Stats())
	}
}

// After EpochCycles cycles the node starts the next epoch from its local value (the
// one SetValue gave meanwhile); the last estimate becomes the final one.
func TestEpochRestartsFromLocalValue(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 2, EpochCycles: 3, Retries: 2})
	b := newNode(t, 1, PushPullConfig{Value: 4})
	a.inEpoch(1, ids[1])
	b.inEpoch(1, ids[0])
	a.tick()
	b.from(ids[0], a.sent(ids[1]))
	a.from(ids[1], b.sent(ids[0]))
	a.in(protocols.Call{Req: SetValue{Value: 10}})
	a.in(protocols.Call{Req: SetValue{Value: math.NaN()}}) // ignored
	if e := a.c.Estimate(); e.Value != 3 {
		t.Fatalf("SetValue changed the running epoch: %+v", e)
	}
	for k := 0; k < 2; k++ {
		a.tick()
		a.timeout()
		a.timeout()
		a.timeout() // those exchanges fail: n1 does not answer
	}
	wantOutputs(t, a.tick(), `
timer 40 1s
updated epoch=2 cycle=0 value=10 known=true final=3@1
send n1 REQUEST ex=4 epoch=2 cycle=1 fn=0 value=10 inst=[]
timer 41 125ms`)
	if v, ok := a.c.EpochValue(); !ok || v != 10 {
		t.Fatalf("epoch value %v %v", v, ok)
	}
	// b, still in epoch 1, is pulled into epoch 2 by the request and applies it there.
	wantOutputs(t, b.from(ids[0], a.sent(ids[1])), `
updated epoch=2 cycle=0 value=4 known=true final=3@1
send n0 REPLY ex=4 epoch=2 value=4 inst=[]
updated epoch=2 cycle=0 value=7 known=true final=3@1`)
}

// An epoch that comes due while an exchange is in flight starts when the exchange ends,
// so the exchange's mass stays in its epoch.
func TestRestartWaitsForExchangeInFlight(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 2, EpochCycles: 1})
	b := newNode(t, 1, PushPullConfig{Value: 4, EpochCycles: 1})
	a.inEpoch(1, ids[1])
	b.inEpoch(1, ids[0])
	a.tick() // cycle 1 of 1
	req := a.sent(ids[1])
	wantOutputs(t, a.tick(), `timer 40 1s`) // due, but the exchange is in flight
	b.from(ids[0], req)
	wantOutputs(t, a.from(ids[1], b.sent(ids[0])), `
updated epoch=1 cycle=1 value=3 known=true final=0@0
cancel 41
updated epoch=2 cycle=0 value=2 known=true final=3@1`)
}

// A node that joins mid-epoch takes no part in it: it refuses the epoch's requests and
// starts with the next one, on its own schedule or when a peer of that epoch contacts it.
func TestJoinerWaitsForNextEpoch(t *testing.T) {
	j := newNode(t, 3, PushPullConfig{Value: 50, EpochCycles: 10})
	j.in(protocols.Start{})
	j.in(protocols.Neighbours{Peers: []peer.ID{ids[1]}})
	req := &Message{Body: &Message_Request{Request: &Request{Exchange: 9, Epoch: 7, Cycle: 4, State: &State{Value: 1}}}}
	wantOutputs(t, j.from(ids[1], req), `send n1 REFUSE ex=9 WAITING epoch=0 cycle=0 next=8 ticks=7`)
	if e := j.c.Estimate(); e.Known || e.Epoch != 0 {
		t.Fatalf("joiner took part: %+v", e)
	}
	// No probes while it knows the schedule; it starts epoch 8 after 7 cycles.
	for k := 0; k < 6; k++ {
		wantOutputs(t, j.tick(), `timer 40 1s`)
	}
	wantOutputs(t, j.tick(), `
timer 40 1s
updated epoch=8 cycle=0 value=50 known=true final=0@0
send n1 REQUEST ex=1 epoch=8 cycle=1 fn=0 value=50 inst=[]
timer 41 125ms`)

	// Another joiner is pulled in by a request of the epoch it waits for, and applies it
	// there, one cycle behind the sender.
	k := newNode(t, 4, PushPullConfig{Value: 30, EpochCycles: 10})
	k.in(protocols.Start{})
	k.from(ids[1], req)
	req8 := &Message{Body: &Message_Request{Request: &Request{Exchange: 10, Epoch: 8, Cycle: 2, State: &State{Value: 10}}}}
	wantOutputs(t, k.from(ids[1], req8), `
updated epoch=8 cycle=1 value=30 known=true final=0@0
send n1 REPLY ex=10 epoch=8 value=30 inst=[]
updated epoch=8 cycle=1 value=20 known=true final=0@0`)
}

// Other epochs: a request of an older epoch is refused with the newer one, which pulls
// the requester forward; a node far behind leaves its epoch to wait for the next.
func TestEpochMismatch(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 1, EpochCycles: 10})
	b := newNode(t, 1, PushPullConfig{Value: 2, EpochCycles: 10})
	a.inEpoch(4, ids[1])
	b.inEpoch(5, ids[0])
	b.tick()
	b.tick()
	a.tick()
	wantOutputs(t, b.from(ids[0], a.sent(ids[1])), `send n0 REFUSE ex=1 EPOCH epoch=5 cycle=2 next=0 ticks=0`)
	wantOutputs(t, a.from(ids[1], b.sent(ids[0])), `
cancel 41
updated epoch=5 cycle=1 value=1 known=true final=1@4`)
	if st := a.c.Stats(); st.OtherEpoch != 1 || st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Two epochs ahead: a waits for epoch 8.
	far := &Message{Body: &Message_Request{Request: &Request{Exchange: 3, Epoch: 7, Cycle: 6, State: &State{Value: 9}}}}
	wantOutputs(t, a.from(ids[2], far), `
updated epoch=0 cycle=0 value=0 known=false final=1@4
send n2 REFUSE ex=3 WAITING epoch=0 cycle=0 next=8 ticks=5`)
}

func TestFunctionMismatchAndMalformedMessages(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Function: Max, Value: 1})
	a.inEpoch(2, ids[1])
	wantOutputs(t, a.from(ids[1], &Message{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 2, Function: uint32(Mean), State: &State{Value: 5}}}}),
		`send n1 REFUSE ex=1 FUNCTION epoch=2 cycle=0 next=0 ticks=0`)
	for _, m := range []*Message{
		{},
		{Body: &Message_Request{}},
		{Body: &Message_Reply{}},
		{Body: &Message_Refuse{}},
		{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 2, Function: uint32(Max), State: &State{Value: math.NaN()}}}},
		{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 2, Function: uint32(Max), State: &State{Value: math.Inf(1)}}}},
		{Body: &Message_Request{Request: &Request{Exchange: 0, Epoch: 2, Function: uint32(Max), State: &State{Value: 3}}}},
		{Body: &Message_Request{Request: &Request{Exchange: 2, Epoch: 2, Function: uint32(Max), State: &State{Value: 3, Instances: []*Instance{{Id: 1, Value: 1}}}}}},
	} {
		if out := a.from(ids[1], m); len(out) > 0 && !strings.HasPrefix(show(out), "send n1 REFUSE") {
			t.Fatalf("%v: outputs\n%s", m, show(out))
		}
	}
	if e := a.c.Estimate(); e.Value != 1 {
		t.Fatalf("a malformed message changed the estimate: %+v", e)
	}
	if a.c.Stats().Ignored < 5 {
		t.Fatalf("ignored %d", a.c.Stats().Ignored)
	}
	// Counting states: ids must increase, shares lie in [0, 1].
	c := newNode(t, 2, PushPullConfig{Function: Count})
	c.inEpoch(2, ids[1])
	before := c.c.Instances()
	for _, ins := range [][]*Instance{
		{{Id: 5, Value: 0.5}, {Id: 5, Value: 0.5}},
		{{Id: 6, Value: 0.5}, {Id: 5, Value: 0.5}},
		{{Id: 0, Value: 0.5}},
		{{Id: 3, Value: 1.5}},
		{{Id: 3, Value: -0.1}},
		{{Id: 3, Value: math.NaN()}},
		slices.Repeat([]*Instance{{Id: 1}}, 200),
	} {
		c.from(ids[1], &Message{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 2, Function: uint32(Count), State: &State{Instances: ins}}}})
		if len(c.outs) != 0 {
			t.Fatalf("%v: outputs\n%s", ins, show(c.outs))
		}
	}
	if !maps2equal(before, c.c.Instances()) {
		t.Fatalf("instances changed: %v -> %v", before, c.c.Instances())
	}
}

func maps2equal(a, b map[uint64]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Count: with no size estimate every node leads an instance of its own; an exchange
// halves and unites the instances; the count is the inverse of the mean share; at most
// MaxInstances instances are kept, the smallest ids.
func TestCountInstances(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Function: Count, Leaders: 1, MaxInstances: 1})
	b := newNode(t, 1, PushPullConfig{Function: Count, Leaders: 1, MaxInstances: 1})
	a.inEpoch(1, ids[1])
	b.inEpoch(1, ids[0])
	ia, ib := a.c.Instances(), b.c.Instances()
	if len(ia) != 1 || len(ib) != 1 {
		t.Fatalf("leaders: %v %v", ia, ib)
	}
	var low uint64 = math.MaxUint64
	for id := range ia {
		low = min(low, id)
	}
	for id := range ib {
		low = min(low, id)
	}
	if e := a.c.Estimate(); !e.Known || e.Value != 1 {
		t.Fatalf("a leader alone counts 1: %+v", e)
	}
	a.tick()
	b.from(ids[0], a.sent(ids[1]))
	a.from(ids[1], b.sent(ids[0]))
	for _, n := range []*node{a, b} {
		got := n.c.Instances()
		if len(got) != 1 || got[low] != 0.5 {
			t.Fatalf("instances %v, want only the smallest id %x at 0.5", got, low)
		}
		if e := n.c.Estimate(); e.Value != 2 {
			t.Fatalf("count %+v, want 2", e)
		}
	}
	// A node reached by no instance does not know the count.
	c := newNode(t, 2, PushPullConfig{Function: Sum})
	c.inEpoch(1)
	c.c.st.inst = nil
	if e := c.c.Estimate(); e.Known {
		t.Fatalf("%+v", e)
	}
	// The size estimate of an epoch sets the leader probability of the next: with a
	// size of 1e9 and 8 leaders a node practically never leads.
	c.c.st.inst = []instance{{id: 1, v: 1e-9}}
	c.tick()
	for k := 0; k < 40; k++ {
		c.tick()
	}
	if c.c.Estimate().Epoch != 2 || len(c.c.Instances()) != 0 || c.c.Estimate().Known || c.c.Estimate().Final != 1e9*c.c.startValue {
		t.Fatalf("after the epoch: %+v instances %v", c.c.Estimate(), c.c.Instances())
	}
}

func TestMergeFunctions(t *testing.T) {
	a := state{x: 3, inst: []instance{{1, 1}, {4, 0.5}}}
	b := state{x: -1, inst: []instance{{2, 0.25}, {4, 0.25}}}
	for _, tc := range []struct {
		f    Function
		want float64
	}{{Mean, 1}, {Min, -1}, {Max, 3}, {Sum, 1}, {Count, 0}} {
		m := merge(tc.f, a, b, 10)
		if tc.f != Count && m.x != tc.want {
			t.Errorf("%v: %v, want %v", tc.f, m.x, tc.want)
		}
		if tc.f.counts() {
			want := []instance{{1, 0.5}, {2, 0.125}, {4, 0.375}}
			if !slices.Equal(m.inst, want) {
				t.Errorf("%v instances %v, want %v", tc.f, m.inst, want)
			}
			if m2 := merge(tc.f, b, a, 10); !slices.Equal(m2.inst, m.inst) || m2.x != m.x {
				t.Errorf("%v: merge not symmetric", tc.f)
			}
			if m3 := merge(tc.f, a, b, 2); len(m3.inst) != 2 || m3.inst[1].id != 2 {
				t.Errorf("%v bounded: %v", tc.f, m3.inst)
			}
		} else if len(m.inst) != 0 {
			t.Errorf("%v carries instances", tc.f)
		}
	}
}

func TestPeerDownAbortsExchangeAndLeaveSilences(t *testing.T) {
	a := newNode(t, 0, PushPullConfig{Value: 1})
	a.inEpoch(1, ids[1], ids[2])
	a.tick()
	var to peer.ID
	for _, o := range a.outs {
		if s, ok := o.(protocols.Send); ok {
			to = s.To
		}
	}
	wantOutputs(t, a.in(protocols.PeerDown{Peer: to}), `cancel 41`)
	if st := a.c.Stats(); st.Failed != 1 || len(a.c.Neighbours()) != 1 || slices.Contains(a.c.Neighbours(), to) {
		t.Fatalf("stats %+v neighbours %v", st, a.c.Neighbours())
	}
	wantOutputs(t, a.in(protocols.Leave{}), `
cancel 40
cancel 41`)
	for _, in := range []protocols.Input{
		protocols.TimerFired{Timer: protocols.Timer{Kind: timerCycle}},
		protocols.Receive{From: ids[2], Msg: &Message{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 1, State: &State{Value: 3}}}}},
		protocols.Start{},
	} {
		if out := a.in(in); len(out) != 0 {
			t.Fatalf("after Leave: %T gave\n%s", in, show(out))
		}
	}
}

// The cache of replies keeps only what an initiator may still repeat, and at most
// ReplyCache entries.
func TestReplyCacheBounded(t *testing.T) {
	b := newNode(t, 1, PushPullConfig{Value: 1, ReplyCache: 4})
	b.inEpoch(1)
	for k := 1; k <= 10; k++ {
		b.from(ids[0], &Message{Body: &Message_Request{Request: &Request{Exchange: uint64(k), Epoch: 1, State: &State{Value: 1}}}})
		if len(b.c.replies) > 4 {
			t.Fatalf("%d cached replies", len(b.c.replies))
		}
	}
	b.now = b.now.Add(time.Hour)
	b.from(ids[0], &Message{Body: &Message_Request{Request: &Request{Exchange: 11, Epoch: 1, State: &State{Value: 1}}}})
	if len(b.c.replies) != 1 {
		t.Fatalf("%d cached replies after an hour", len(b.c.replies))
	}
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }
