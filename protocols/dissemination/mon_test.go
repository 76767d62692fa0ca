package dissemination_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/sim"
)

// --- helpers ---

// monCounter counts what the Mon cores of a run send: broadcast copies (payloads) and
// the highest hop count of every delivery.
type monCounter struct {
	payloads uint64
	maxHops  uint32
}

// monCounting wraps a Mon core to count the payloads it sends.
type monCounting struct {
	*dissemination.Mon
	c *monCounter
}

func (w monCounting) Handle(now time.Time, in protocols.Input) []protocols.Output {
	out := w.Mon.Handle(now, in)
	for _, o := range out {
		switch v := o.(type) {
		case protocols.Send:
			w.c.payloads += uint64(len(v.Msg.(dissemination.Carrier).Broadcasts()))
		case dissemination.Delivered:
			w.c.maxHops = max(w.c.maxHops, v.Round)
		}
	}
	return out
}

func monOf(c protocols.Core) *dissemination.Mon {
	if w, ok := c.(monCounting); ok {
		return w.Mon
	}
	return c.(*dissemination.Mon)
}

// newMonNet is newOverlayNet (same overlay for the same seed) with a message loss rate
// and payload counting.
func newMonNet(t testing.TB, seed uint64, n int, cfg dissemination.MonConfig, loss float64) (*overlayNet, *monCounter) {
	t.Helper()
	cnt := &monCounter{}
	net := newOverlayNetWith(t, seed, n, func() proto.Message { return new(dissemination.MonMessage) },
		func(_ int, id peer.ID, rng *rand.Rand) (protocols.Core, error) {
			c, err := dissemination.NewMon(id, cfg, rng)
			if err != nil {
				return nil, err
			}
			return monCounting{Mon: c, c: cnt}, nil
		},
		func(c *sim.Config) { c.Loss = loss })
	return net, cnt
}

func newMonHarnessNet(t testing.TB, seed uint64, n int) *overlayNet {
	return newOverlayNet(t, seed, n, func() proto.Message { return new(dissemination.MonMessage) },
		func(_ int, id peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewMon(id, dissemination.MonConfig{}, rng)
		})
}

// constructionMsgs counts the tree-building messages sent so far.
func constructionMsgs(s *sim.Sim) uint64 {
	st := s.Stats()
	return st.ByKind["SESSION"].Msgs + st.ByKind["ACCEPT"].Msgs + st.ByKind["REJECT"].Msgs
}

// checkTree: origin's newest session is a spanning tree of the live nodes: every other
// live node has a live parent that lists it as a child, and no node has more than fanout
// children.
func checkTree(t *testing.T, net *overlayNet, origin peer.ID, fanout int) {
	t.Helper()
	edges := 0
	for i, id := range net.ids {
		if !net.s.Alive(id) {
			continue
		}
		parent, children, ok := monOf(net.cores[i]).Tree(origin)
		if !ok {
			t.Fatalf("%s is in no session of the origin", id.ShortString())
		}
		if len(children) > fanout {
			t.Fatalf("%s has %d children, more than %d", id.ShortString(), len(children), fanout)
		}
		edges += len(children)
		if id == origin {
			continue
		}
		j := slices.Index(net.ids, parent)
		if j < 0 {
			t.Fatalf("%s has no parent", id.ShortString())
		}
		if _, ch, _ := monOf(net.cores[j]).Tree(origin); !slices.Contains(ch, id) {
			t.Fatalf("%s's parent does not list it as a child", id.ShortString())
		}
	}
	live := 0
	for _, id := range net.ids {
		if net.s.Alive(id) {
			live++
		}
	}
	if edges != live-1 {
		t.Fatalf("%d tree edges for %d live nodes", edges, live)
	}
}

// --- transcript helpers ---

// monScript renders a core's outputs as text lines, naming peers by letter and sessions
// by origin letter and epoch ordinal, so a test reads as a transcript.
type monScript struct {
	t      *testing.T
	names  map[peer.ID]string
	epochs map[uint64]int
	keys   map[string]int
}

func newMonScript(t *testing.T, ids []peer.ID) *monScript {
	sc := &monScript{t: t, names: map[peer.ID]string{}, epochs: map[uint64]int{}, keys: map[string]int{}}
	for i, id := range ids {
		sc.names[id] = string(rune('A' + i))
	}
	return sc
}

func (sc *monScript) sid(id *dissemination.MonSessionID) string {
	e, ok := sc.epochs[id.GetEpoch()]
	if !ok {
		e = len(sc.epochs) + 1
		sc.epochs[id.GetEpoch()] = e
	}
	return fmt.Sprintf("%s#%d", sc.names[peer.ID(id.GetOrigin())], e)
}

func (sc *monScript) timer(tm protocols.Timer) string {
	k, ok := sc.keys[tm.Key]
	if !ok {
		k = len(sc.keys) + 1
		sc.keys[tm.Key] = k
	}
	name := map[uint8]string{40: "expire", 41: "reply", 42: "ack"}[tm.Kind]
	if tm.Peer != "" {
		return fmt.Sprintf("%s %s s%d", name, sc.names[tm.Peer], k)
	}
	return fmt.Sprintf("%s s%d", name, k)
}

func (sc *monScript) render(out []protocols.Output) []string {
	var lines []string
	for _, o := range out {
		switch v := o.(type) {
		case protocols.Send:
			m := v.Msg.(*dissemination.MonMessage)
			var s string
			switch b := m.GetBody().(type) {
			case *dissemination.MonMessage_Session:
				s = fmt.Sprintf("SESSION %s level=%d ttl=%d", sc.sid(b.Session.GetId()), b.Session.GetLevel(), b.Session.GetTtl())
			case *dissemination.MonMessage_Reply:
				s = fmt.Sprintf("%s %s", m.Kind(), sc.sid(b.Reply.GetId()))
			case *dissemination.MonMessage_Push:
				var es []string
				for _, e := range b.Push.GetEntries() {
					es = append(es, fmt.Sprintf("%d:%d", e.GetIndex(), e.GetBroadcast().GetSeq()))
				}
				s = fmt.Sprintf("PUSH %s hops=%d [%s]", sc.sid(b.Push.GetId()), b.Push.GetHops(), strings.Join(es, " "))
			case *dissemination.MonMessage_Ack:
				if b.Ack.GetNoSession() {
					s = "NOSESSION " + sc.sid(b.Ack.GetId())
				} else {
					s = fmt.Sprintf("ACK %s %v", sc.sid(b.Ack.GetId()), b.Ack.GetIndices())
				}
			case *dissemination.MonMessage_Break:
				s = fmt.Sprintf("BREAK %s from=%d", sc.sid(b.Break.GetId()), b.Break.GetFrom())
			}
			lines = append(lines, sc.names[v.To]+" <- "+s)
		case protocols.SetTimer:
			lines = append(lines, "set "+sc.timer(v.Timer))
		case protocols.CancelTimer:
			lines = append(lines, "cancel "+sc.timer(v.Timer))
		case dissemination.Delivered:
			lines = append(lines, fmt.Sprintf("deliver seq=%d round=%d", v.Broadcast.GetSeq(), v.Round))
		default:
			lines = append(lines, fmt.Sprintf("%T", o))
		}
	}
	return lines
}

// step feeds one input and compares the rendered outputs with want.
func (sc *monScript) step(c *dissemination.Mon, now time.Time, in protocols.Input, want ...string) {
	sc.t.Helper()
	got := sc.render(c.Handle(now, in))
	if !slices.Equal(got, want) {
		sc.t.Fatalf("after %T:\n got: %q\nwant: %q", in, got, want)
	}
}

func monBroadcast(origin peer.ID, seq uint64) *dissemination.Broadcast {
	return &dissemination.Broadcast{Origin: []byte(origin), Seq: seq, Payload: []byte("p")}
}

func monRecv(from peer.ID, body any) protocols.Receive {
	m := &dissemination.MonMessage{}
	switch b := body.(type) {
	case *dissemination.MonSession:
		m.Body = &dissemination.MonMessage_Session{Session: b}
	case *dissemination.MonReply:
		m.Body = &dissemination.MonMessage_Reply{Reply: b}
	case *dissemination.MonPush:
		m.Body = &dissemination.MonMessage_Push{Push: b}
	case *dissemination.MonAck:
		m.Body = &dissemination.MonMessage_Ack{Ack: b}
	case *dissemination.MonBreak:
		m.Body = &dissemination.MonMessage_Break{Break: b}
	}
	return protocols.Receive{From: from, Msg: m}
}

func monSID(origin peer.ID, epoch uint64) *dissemination.MonSessionID {
	return &dissemination.MonSessionID{Origin: []byte(origin), Epoch: epoch}
}

func monPush(sid *dissemination.MonSessionID, hops uint32, idx uint64, b *dissemination.Broadcast) *dissemination.MonPush {
	return &dissemination.MonPush{Id: sid, Hops: hops, Entries: []*dissemination.MonEntry{{Index: idx, Broadcast: b}}}
}

func newMonCore(t testing.TB, self peer.ID, cfg dissemination.MonConfig) *dissemination.Mon {
	c, err := dissemination.NewMon(self, cfg, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// --- unit tests ---

func TestMonConfig(t *testing.T) {
	ids, _ := sim.PeerIDs(1, 1)
	for _, tc := range []struct {
		cfg   dissemination.MonConfig
		field string
	}{
		{dissemination.MonConfig{Lifetime: -1}, "MonConfig.Lifetime"},
		{dissemination.MonConfig{Fanout: -1}, "MonConfig.Fanout"},
		{dissemination.MonConfig{ConstructionTTL: -1}, "MonConfig.ConstructionTTL"},
		{dissemination.MonConfig{ReplyTimeout: -1}, "MonConfig.ReplyTimeout"},
		{dissemination.MonConfig{AckTimeout: -1}, "MonConfig.AckTimeout"},
		{dissemination.MonConfig{MaxSessions: -1}, "MonConfig.MaxSessions"},
		{dissemination.MonConfig{Window: -1}, "MonConfig.Window"},
		{dissemination.MonConfig{Seen: -1}, "MonConfig.Seen"},
	} {
		_, err := dissemination.NewMon(ids[0], tc.cfg, rand.New(rand.NewPCG(1, 1)))
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := dissemination.NewMon(ids[0], dissemination.MonConfig{}, nil); err == nil {
		t.Error("nil rng accepted")
	}
	if _, err := dissemination.NewMon("", dissemination.MonConfig{}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("empty self accepted")
	}
	d := dissemination.MonConfig{}.WithDefaults()
	if d.Lifetime != 30*time.Second || d.Fanout != 32 || d.ConstructionTTL != 64 || d.Retries != 5 ||
		d.MaxSessions != 64 || d.Window != 256 || d.Seen != 1<<16 {
		t.Errorf("defaults: %+v", d)
	}
	if r := (dissemination.MonConfig{Retries: -1}).WithDefaults().Retries; r != 0 {
		t.Errorf("Retries -1 became %d, want 0 (never resend)", r)
	}
}

// The origin: a publish with no session builds one and waits for the first child; a
// child gets the broadcasts as it accepts; unacknowledged pushes are resent; a BREAK
// ends the session and resends what the broken branch may lack over a new one.
func TestMonOriginTranscript(t *testing.T) {
	ids, _ := sim.PeerIDs(21, 2)
	a, b := ids[0], ids[1]
	sc := newMonScript(t, ids)
	c := newMonCore(t, a, dissemination.MonConfig{})
	t0 := sim.Epoch
	ms := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }

	sc.step(c, t0, protocols.Neighbours{Peers: []peer.ID{b, a}})
	sc.step(c, t0, protocols.Call{Req: dissemination.Publish{Broadcast: monBroadcast(a, 1)}},
		"set expire s1", "B <- SESSION A#1 level=0 ttl=64", "set reply B s1")
	var e1 uint64
	for e := range sc.epochs {
		e1 = e
	}
	sc.step(c, ms(100), monRecv(b, &dissemination.MonReply{Id: monSID(a, e1), Accept: true}),
		"cancel reply B s1", "B <- PUSH A#1 hops=1 [1:1]", "set ack B s1")
	sc.step(c, ms(150), monRecv(b, &dissemination.MonAck{Id: monSID(a, e1), Indices: []uint64{1}}))
	// Within the session: straight down the tree.
	sc.step(c, ms(200), protocols.Call{Req: dissemination.Publish{Broadcast: monBroadcast(a, 2)}},
		"B <- PUSH A#1 hops=1 [2:2]")
	// The same broadcast again is ignored.
	sc.step(c, ms(200), protocols.Call{Req: dissemination.Publish{Broadcast: monBroadcast(a, 2)}})
	// The ack timer set at 100 ms fires: index 2 is not due before 1.2 s.
	sc.step(c, ms(1100), protocols.TimerFired{Timer: protocols.Timer{Kind: 42, Peer: b, Key: keyOf(sc, 1)}},
		"set ack B s1")
	sc.step(c, ms(1200), protocols.TimerFired{Timer: protocols.Timer{Kind: 42, Peer: b, Key: keyOf(sc, 1)}},
		"B <- PUSH A#1 hops=1 [2:2]", "set ack B s1")
	sc.step(c, ms(1250), monRecv(b, &dissemination.MonAck{Id: monSID(a, e1), Indices: []uint64{2}}))
	// B's branch broke from index 2: a new session carries broadcast 2 again.
	sc.step(c, ms(1300), monRecv(b, &dissemination.MonBreak{Id: monSID(a, e1), From: 2}),
		"set expire s2", "B <- SESSION A#2 level=0 ttl=64", "set reply B s2")
	var e2 uint64
	for e, n := range sc.epochs {
		if n == 2 {
			e2 = e
		}
	}
	sc.step(c, ms(1400), monRecv(b, &dissemination.MonReply{Id: monSID(a, e2), Accept: true}),
		"cancel reply B s2", "B <- PUSH A#2 hops=1 [1:2]", "set ack B s2")
	sc.step(c, ms(1500), protocols.Call{Req: dissemination.Publish{Broadcast: monBroadcast(a, 3)}},
		"B <- PUSH A#2 hops=1 [2:3]")
	// Our own session reaching us is refused.
	sc.step(c, ms(1500), monRecv(b, &dissemination.MonSession{Id: monSID(a, e2), Level: 3, Ttl: 9}),
		"B <- REJECT A#2")
}

// keyOf returns the timer key the script named s<n>.
func keyOf(sc *monScript, n int) string {
	for k, v := range sc.keys {
		if v == n {
			return k
		}
	}
	return ""
}

// An inner node: joins on the first SESSION, refuses others, forwards each broadcast
// once to its children (catching a late child up), acknowledges, reports a lost child.
func TestMonNodeTranscript(t *testing.T) {
	ids, _ := sim.PeerIDs(22, 4)
	a, x, y, z := ids[0], ids[1], ids[2], ids[3]
	sc := newMonScript(t, ids) // A, B(=x), C(=y), D(=z)
	c := newMonCore(t, x, dissemination.MonConfig{})
	t0 := sim.Epoch
	ms := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }
	sid := monSID(a, 7)
	sc.epochs[7] = 1

	sc.step(c, t0, protocols.Neighbours{Peers: []peer.ID{a, y}})
	sc.step(c, t0, monRecv(a, &dissemination.MonSession{Id: sid, Level: 0, Ttl: 64}),
		"set expire s1", "A <- ACCEPT A#1", "C <- SESSION A#1 level=1 ttl=63", "set reply C s1")
	sc.step(c, ms(10), monRecv(a, &dissemination.MonSession{Id: sid, Level: 0, Ttl: 64}),
		"A <- ACCEPT A#1") // our answer was lost: the parent asks again
	sc.step(c, ms(20), monRecv(y, &dissemination.MonSession{Id: sid, Level: 1, Ttl: 63}),
		"C <- REJECT A#1")
	sc.step(c, ms(30), monRecv(a, monPush(sid, 1, 1, monBroadcast(a, 1))),
		"deliver seq=1 round=1", "A <- ACK A#1 [1]")
	sc.step(c, ms(40), monRecv(y, &dissemination.MonReply{Id: sid, Accept: true}),
		"cancel reply C s1", "C <- PUSH A#1 hops=2 [1:1]", "set ack C s1")
	sc.step(c, ms(50), monRecv(a, monPush(sid, 1, 1, monBroadcast(a, 1))),
		"A <- ACK A#1 [1]") // a resend: acknowledged, neither delivered nor forwarded again
	sc.step(c, ms(60), monRecv(z, monPush(sid, 3, 5, monBroadcast(a, 5))),
		"deliver seq=5 round=3", "D <- NOSESSION A#1") // not our parent
	sc.step(c, ms(70), monRecv(a, monPush(sid, 1, 2, monBroadcast(a, 2))),
		"deliver seq=2 round=1", "A <- ACK A#1 [2]", "C <- PUSH A#1 hops=2 [2:2]")
	sc.step(c, ms(80), monRecv(y, &dissemination.MonAck{Id: sid, Indices: []uint64{1}}))
	// The child fails: its branch may lack index 1 (acknowledged lately) and 2.
	sc.step(c, ms(90), protocols.PeerDown{Peer: y}, "cancel ack C s1", "A <- BREAK A#1 from=1")
	sc.step(c, ms(95), monRecv(y, &dissemination.MonBreak{Id: sid, From: 1})) // not a child
	sc.step(c, ms(100), monRecv(a, &dissemination.MonSession{Id: monSID(a, 3), Level: 0, Ttl: 64}),
		"A <- REJECT A#2") // older than the session we are in
	sc.step(c, ms(110), monRecv(a, &dissemination.MonSession{Id: monSID(a, 9), Level: 0, Ttl: 64}),
		"set expire s2", "A <- ACCEPT A#3")
	sc.step(c, ms(120), protocols.PeerDown{Peer: a})
	if parent, _, ok := c.Tree(a); !ok || parent != "" {
		t.Fatalf("after the parent failed: parent %q ok %v", parent, ok)
	}
	sc.step(c, ms(130), protocols.Leave{}, "cancel expire s1", "cancel expire s2")
	if out := c.Handle(ms(140), monRecv(a, monPush(sid, 1, 3, monBroadcast(a, 3)))); out != nil {
		t.Fatalf("output after Leave: %v", out)
	}
}

// Malformed messages: ignored, never a panic, never a delivery of nothing.
func TestMonIgnoresMalformed(t *testing.T) {
	ids, _ := sim.PeerIDs(23, 3)
	c := newMonCore(t, ids[0], dissemination.MonConfig{})
	t0 := sim.Epoch
	c.Handle(t0, protocols.Neighbours{Peers: []peer.ID{ids[1], ids[2], ids[0], ids[1], ""}})
	c.Handle(t0, monRecv(ids[1], &dissemination.MonSession{Id: monSID(ids[1], 4)}))
	huge := make([]uint64, 100000)
	for i := range huge {
		huge[i] = uint64(i)
	}
	for _, in := range []protocols.Input{
		protocols.Receive{From: ids[1]},
		protocols.Receive{From: ids[1], Msg: (*dissemination.MonMessage)(nil)},
		protocols.Receive{From: ids[1], Msg: &dissemination.MonMessage{}},
		protocols.Receive{From: ids[1], Msg: &dissemination.Message{}},
		protocols.Receive{From: "", Msg: &dissemination.MonMessage{}},
		monRecv(ids[1], (*dissemination.MonSession)(nil)),
		monRecv(ids[1], &dissemination.MonSession{}),
		monRecv(ids[1], &dissemination.MonSession{Id: &dissemination.MonSessionID{Origin: []byte("x")}}),
		monRecv(ids[1], &dissemination.MonReply{}),
		monRecv(ids[1], &dissemination.MonPush{}),
		monRecv(ids[1], &dissemination.MonPush{Id: monSID(ids[1], 4), Entries: []*dissemination.MonEntry{nil, {}, {Index: 3}}}),
		monRecv(ids[1], &dissemination.MonPush{Id: monSID(ids[2], 1), Entries: []*dissemination.MonEntry{{Index: 1}}}),
		monRecv(ids[2], &dissemination.MonAck{Id: monSID(ids[1], 4), Indices: huge}),
		monRecv(ids[2], &dissemination.MonBreak{Id: monSID(ids[1], 4), From: 1 << 63}),
		monRecv(ids[2], &dissemination.MonBreak{}),
		protocols.TimerFired{Timer: protocols.Timer{Kind: 42, Key: "nonsense"}},
		protocols.TimerFired{Timer: protocols.Timer{Kind: 99}},
		protocols.PeerDown{Peer: "nobody"},
		protocols.Call{Req: "not a publish"},
		protocols.Call{Req: dissemination.Publish{}},
	} {
		for _, o := range c.Handle(t0, in) {
			if d, ok := o.(dissemination.Delivered); ok && d.Broadcast == nil {
				t.Fatalf("%v delivered nothing", in)
			}
		}
	}
}

// Sessions, per-session logs, per-child records and delivered ids are bounded.
func TestMonBoundedState(t *testing.T) {
	ids, _ := sim.PeerIDs(24, 120)
	t0 := sim.Epoch
	// Sessions: 100 origins ask a node to join; it keeps MaxSessions.
	c := newMonCore(t, ids[0], dissemination.MonConfig{MaxSessions: 4})
	c.Handle(t0, protocols.Neighbours{Peers: ids[1:3]})
	for i := 10; i < 110; i++ {
		c.Handle(t0.Add(time.Duration(i)*time.Millisecond), monRecv(ids[1], &dissemination.MonSession{Id: monSID(ids[i], 1), Ttl: 1}))
		if c.Sessions() > 4 {
			t.Fatalf("%d sessions kept, bound 4", c.Sessions())
		}
	}
	if _, _, ok := c.Tree(ids[109]); !ok {
		t.Fatal("the newest session was evicted")
	}
	// Window: a child that never acknowledges is given up, and no push carries more
	// than Window broadcasts.
	root := newMonCore(t, ids[0], dissemination.MonConfig{Window: 8})
	root.Handle(t0, protocols.Neighbours{Peers: ids[1:2]})
	sessions := 0
	for i := 1; i <= 40; i++ {
		out := slices.Clone(root.Handle(t0, protocols.Call{Req: dissemination.Publish{Broadcast: monBroadcast(ids[0], uint64(i))}}))
		if i == 1 {
			var e uint64
			for _, o := range out {
				if s, ok := o.(protocols.Send); ok {
					e = s.Msg.(*dissemination.MonMessage).GetSession().GetId().GetEpoch()
				}
			}
			root.Handle(t0, monRecv(ids[1], &dissemination.MonReply{Id: monSID(ids[0], e), Accept: true}))
		}
		for _, o := range out {
			if s, ok := o.(protocols.Send); ok {
				m := s.Msg.(*dissemination.MonMessage)
				if len(m.GetPush().GetEntries()) > 8 {
					t.Fatalf("a push of %d broadcasts, Window 8", len(m.GetPush().GetEntries()))
				}
				if m.Kind() == "SESSION" {
					sessions++
				}
			}
		}
	}
	if sessions < 2 {
		t.Fatal("the child that never acknowledged was not given up (no new session)")
	}
	// Seen: an id forgotten beyond the bound is delivered again.
	n := newMonCore(t, ids[1], dissemination.MonConfig{Seen: 10})
	deliver := func(seq uint64) bool {
		out := n.Handle(t0, monRecv(ids[2], monPush(monSID(ids[3], 1), 1, 1, monBroadcast(ids[3], seq))))
		return slices.ContainsFunc(out, func(o protocols.Output) bool { _, ok := o.(dissemination.Delivered); return ok })
	}
	for i := uint64(0); i < 100; i++ {
		if !deliver(i) {
			t.Fatalf("broadcast %d not delivered", i)
		}
	}
	if !deliver(0) {
		t.Fatal("Seen holds more than its bound")
	}
}

// --- simulator tests ---

// The headline: exactly-once delivery to every node; within a session one payload
// message per node (N-1, RMR 0); the construction's cost once per session.
func TestMonExactlyOnceRMRZero(t *testing.T) {
	for _, n := range []int{100, 200, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			net, cnt := newMonNet(t, uint64(n), n, dissemination.MonConfig{}, 0)
			origin := net.ids[0]
			var construction uint64
			for k := 0; k < 10; k++ {
				p0, c0, a0 := cnt.payloads, constructionMsgs(net.s), net.s.Stats().ByKind["ACK"].Msgs
				cnt.maxHops = 0
				id := net.broadcast(origin)
				net.s.RunFor(2 * time.Second)
				if err := net.check(id, origin); err != nil {
					t.Fatalf("broadcast %d: %v", k, err)
				}
				payloads, acks := cnt.payloads-p0, net.s.Stats().ByKind["ACK"].Msgs-a0
				if payloads != uint64(n-1) {
					t.Fatalf("broadcast %d: %d payload messages, want N-1 = %d", k, payloads, n-1)
				}
				if k == 0 {
					construction = constructionMsgs(net.s) - c0
				} else if c := constructionMsgs(net.s) - c0; c != 0 {
					t.Fatalf("broadcast %d rebuilt the tree (%d messages) within the session", k, c)
				}
				if k == 9 {
					t.Logf("N=%d: payload msgs/broadcast %d (RMR %.3f), ACKs %d, last delivery hop %d, construction %d msgs/session (%.1f per node)",
						n, payloads, float64(payloads)/float64(n-1)-1, acks, cnt.maxHops, construction, float64(construction)/float64(n))
				}
			}
			checkTree(t, net, origin, 32)
			// Other origins get trees of their own.
			rng := rand.New(rand.NewPCG(uint64(n), 1))
			for k := 0; k < 5; k++ {
				o := net.ids[1+rng.IntN(n-1)]
				id := net.broadcast(o)
				net.s.RunFor(2 * time.Second)
				if err := net.check(id, o); err != nil {
					t.Fatalf("origin %d: %v", k, err)
				}
				checkTree(t, net, o, 32)
			}
		})
	}
}

// Broadcasts published before and while the tree is built are all delivered, once each,
// with no payload redundancy.
func TestMonBroadcastsDuringConstruction(t *testing.T) {
	const n = 200
	net, cnt := newMonNet(t, 31, n, dissemination.MonConfig{}, 0)
	origin := net.ids[5]
	var ids [][]byte
	for k := 0; k < 10; k++ {
		ids = append(ids, net.broadcast(origin)) // 5 at once, then one every 20 ms
		if k >= 5 {
			net.s.RunFor(20 * time.Millisecond)
		}
	}
	net.s.RunFor(3 * time.Second)
	for k, id := range ids {
		if err := net.check(id, origin); err != nil {
			t.Fatalf("broadcast %d: %v", k, err)
		}
	}
	if want := uint64(10 * (n - 1)); cnt.payloads != want {
		t.Fatalf("%d payload copies, want %d", cnt.payloads, want)
	}
	if s := net.s.Stats().ByKind["SESSION"].Msgs; s > 2*n*4 {
		t.Fatalf("%d SESSION messages: more than one construction", s)
	}
}

// A small Fanout bounds the children of every node; the tree still spans the overlay here.
func TestMonFanoutBound(t *testing.T) {
	const n = 200
	for _, f := range []int{2, 4} {
		net, cnt := newMonNet(t, 41, n, dissemination.MonConfig{Fanout: f}, 0)
		origin := net.ids[0]
		for k := 0; k < 3; k++ {
			cnt.maxHops = 0
			id := net.broadcast(origin)
			net.s.RunFor(3 * time.Second)
			if err := net.check(id, origin); err != nil {
				t.Fatalf("fanout %d, broadcast %d: %v", f, k, err)
			}
		}
		checkTree(t, net, origin, f)
		t.Logf("fanout %d: last delivery hop %d, construction %d msgs", f, cnt.maxHops, constructionMsgs(net.s))
	}
}

// After 20% or 50% of the nodes crash and the survivors get new neighbour sets, the
// sessions broken by the crash end, and from the next broadcast on every survivor gets
// every broadcast again.
func TestMonRebuildsAfterCrashes(t *testing.T) {
	for _, frac := range []float64{0.2, 0.5} {
		t.Run(fmt.Sprint(frac), func(t *testing.T) {
			const n = 200
			net := newMonHarnessNet(t, 51, n)
			rng := rand.New(rand.NewPCG(52, 52))
			origin := net.ids[0]
			for k := 0; k < 3; k++ {
				net.broadcast(origin)
				net.s.RunFor(2 * time.Second)
			}
			c0, b0 := constructionMsgs(net.s), net.s.Stats().ByKind["BREAK"].Msgs
			live := net.crash(rng, frac)
			if !net.s.Alive(origin) {
				origin = live[0]
			}
			net.s.RunFor(time.Second)
			for k := 0; k < 5; k++ {
				p0 := net.s.Stats().ByKind["PUSH"].Msgs
				id := net.broadcast(origin)
				net.s.RunFor(3 * time.Second)
				if err := net.check(id, origin); err != nil {
					t.Fatalf("broadcast %d after the crash: %v", k, err)
				}
				if k == 4 {
					pushes := net.s.Stats().ByKind["PUSH"].Msgs - p0
					if pushes != uint64(len(live)-1) {
						t.Fatalf("%d PUSH messages in the new session, want %d", pushes, len(live)-1)
					}
					t.Logf("%.0f%% crashed: %d survivors all delivered; %d BREAK msgs, rebuild %d construction msgs; %d payload msgs/broadcast after",
						frac*100, len(live), net.s.Stats().ByKind["BREAK"].Msgs-b0, constructionMsgs(net.s)-c0, pushes)
				}
			}
			checkTree(t, net, origin, 32)
		})
	}
}

// Nodes crash without anyone being told: the broadcast sent right then reaches them
// not, the failed sends come back as PeerDown, the branches report BREAK, and the
// origin resends it over a new tree: every live node gets it, exactly once.
func TestMonSilentCrashMidSession(t *testing.T) {
	const n = 200
	net, cnt := newMonNet(t, 61, n, dissemination.MonConfig{}, 0)
	origin := net.ids[0]
	net.broadcast(origin)
	net.s.RunFor(2 * time.Second)
	rng := rand.New(rand.NewPCG(62, 62))
	crashed := 0
	for _, i := range rng.Perm(n)[:20] {
		if net.ids[i] != origin {
			net.s.Crash(net.ids[i])
			crashed++
		}
	}
	p0, c0, b0 := cnt.payloads, constructionMsgs(net.s), net.s.Stats().ByKind["BREAK"].Msgs
	id := net.broadcast(origin)
	net.s.RunFor(10 * time.Second)
	if err := net.check(id, origin); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d silent crashes: %d BREAK, %d construction msgs, %d payload copies (first push and resends)",
		crashed, net.s.Stats().ByKind["BREAK"].Msgs-b0, constructionMsgs(net.s)-c0, cnt.payloads-p0)
	// The next broadcast follows the new tree: N-1 payloads again.
	p0 = cnt.payloads
	id = net.broadcast(origin)
	net.s.RunFor(3 * time.Second)
	if err := net.check(id, origin); err != nil {
		t.Fatal(err)
	}
	if got := cnt.payloads - p0; got != uint64(n-crashed-1) {
		t.Fatalf("%d payload copies after the repair, want %d", got, n-crashed-1)
	}
}

// With message loss, acknowledgements and resends still deliver every broadcast to every
// node, exactly once; redundancy is about the loss rate.
func TestMonMessageLoss(t *testing.T) {
	const n = 200
	for _, loss := range []float64{0.01, 0.05} {
		net, cnt := newMonNet(t, 71, n, dissemination.MonConfig{}, loss)
		origin := net.ids[3]
		p0 := cnt.payloads
		for k := 0; k < 10; k++ {
			if k == 1 {
				p0 = cnt.payloads // after the first construction
			}
			id := net.broadcast(origin)
			net.s.RunFor(6 * time.Second)
			if err := net.check(id, origin); err != nil {
				t.Fatalf("loss %v, broadcast %d: %v", loss, k, err)
			}
		}
		rmr := float64(cnt.payloads-p0)/float64(9*(n-1)) - 1
		t.Logf("loss %.0f%%: all delivered once; RMR %.3f", loss*100, rmr)
		if rmr > 3*loss {
			t.Fatalf("loss %v: RMR %.3f", loss, rmr)
		}
	}
}

// Sessions are soft state: forgotten Lifetime after their last use, and an origin
// builds a new tree once its session is Lifetime old, even while in use.
func TestMonSessionLifetime(t *testing.T) {
	const n = 100
	net, _ := newMonNet(t, 81, n, dissemination.MonConfig{Lifetime: 5 * time.Second}, 0)
	origin := net.ids[0]
	built := func() uint64 { return net.s.Stats().ByKind["ACCEPT"].Msgs / uint64(n-1) }
	for k := 0; k < 8; k++ { // one broadcast a second: a new tree every 5 s
		id := net.broadcast(origin)
		net.s.RunFor(time.Second)
		if err := net.check(id, origin); err != nil {
			t.Fatal(err)
		}
	}
	if b := built(); b != 2 {
		t.Fatalf("%d trees built in 8 s with a 5 s lifetime, want 2", b)
	}
	net.s.RunFor(20 * time.Second)
	for i, id := range net.ids {
		if s := monOf(net.cores[i]).Sessions(); s != 0 {
			t.Fatalf("%s keeps %d sessions after they expired", id.ShortString(), s)
		}
	}
	id := net.broadcast(origin)
	net.s.RunFor(2 * time.Second)
	if err := net.check(id, origin); err != nil {
		t.Fatal(err)
	}
	if b := built(); b != 3 {
		t.Fatalf("%d trees built, want 3", b)
	}
}

func TestMonSameSeedSameTrace(t *testing.T) {
	run := func() uint64 {
		net := newMonHarnessNet(t, 91, 100)
		rng := rand.New(rand.NewPCG(92, 92))
		for k := 0; k < 5; k++ {
			net.broadcast(net.ids[k*7])
			net.s.RunFor(2 * time.Second)
		}
		net.crash(rng, 0.3)
		for k := 0; k < 3; k++ {
			net.broadcast(net.ids[k*11])
			net.s.RunFor(2 * time.Second)
		}
		return net.s.TraceHash()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("traces differ: %x %x", a, b)
	}
}

// Any bytes that decode as a MonMessage, fed to a node with sessions of every kind,
// never make it panic.
func FuzzMonMessage(f *testing.F) {
	ids, _ := sim.PeerIDs(101, 4)
	sid := monSID(ids[1], 5)
	for _, body := range []any{
		&dissemination.MonSession{Id: sid, Level: 2, Ttl: 3},
		&dissemination.MonReply{Id: sid, Accept: true},
		monPush(sid, 1, 1, monBroadcast(ids[1], 1)),
		&dissemination.MonAck{Id: sid, Indices: []uint64{1, 2}},
		&dissemination.MonAck{Id: sid, NoSession: true},
		&dissemination.MonBreak{Id: sid, From: 1},
	} {
		b, err := proto.Marshal(monRecv(ids[1], body).Msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, from uint8) {
		var m dissemination.MonMessage
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		_ = m.Kind()
		_ = m.Broadcasts()
		c := newMonCore(t, ids[0], dissemination.MonConfig{Window: 16})
		t0 := sim.Epoch
		c.Handle(t0, protocols.Neighbours{Peers: ids[1:]})
		c.Handle(t0, monRecv(ids[1], &dissemination.MonSession{Id: sid, Ttl: 4}))
		out := c.Handle(t0, protocols.Call{Req: dissemination.Publish{Broadcast: monBroadcast(ids[0], 1)}})
		for _, o := range out {
			if s, ok := o.(protocols.Send); ok && s.Msg.(*dissemination.MonMessage).GetSession() != nil {
				c.Handle(t0, monRecv(s.To, &dissemination.MonReply{Id: s.Msg.(*dissemination.MonMessage).GetSession().GetId(), Accept: true}))
			}
		}
		src := ids[1+int(from)%3]
		c.Handle(t0, protocols.Receive{From: src, Msg: &m})
		c.Handle(t0.Add(time.Second), protocols.Receive{From: src, Msg: &m})
		c.Handle(t0.Add(2*time.Second), protocols.PeerDown{Peer: src})
	})
}

// With MaxBytes below one payload, every PUSH carries one broadcast: a late child's
// catch-up is split, and everything still arrives exactly once.
func TestMonMaxBytesSplitsPushes(t *testing.T) {
	const n = 100
	net, cnt := newMonNet(t, 37, n, dissemination.MonConfig{MaxBytes: 5}, 0)
	origin := net.ids[3]
	var ids [][]byte
	for k := 0; k < 6; k++ {
		ids = append(ids, net.broadcast(origin)) // all before the tree exists: catch-ups
	}
	net.s.RunFor(3 * time.Second)
	for k, id := range ids {
		if err := net.check(id, origin); err != nil {
			t.Fatalf("broadcast %d: %v", k, err)
		}
	}
	if pushes := net.s.Stats().ByKind["PUSH"].Msgs; pushes < cnt.payloads {
		t.Fatalf("%d PUSH messages for %d payload copies: some carried more than one", pushes, cnt.payloads)
	}
}

// A node that joins the overlay while a session lives is invited by the tree node that
// gets it as a neighbour: it receives the session's later broadcasts (and, through the
// BREAK a late child causes, the earlier ones it missed) without waiting for the next
// session.
func TestMonInvitesLateNeighbours(t *testing.T) {
	const n = 60
	net, _ := newMonNet(t, 43, n, dissemination.MonConfig{}, 0)
	origin := net.ids[0]
	first := net.broadcast(origin)
	net.s.RunFor(3 * time.Second)
	if err := net.check(first, origin); err != nil {
		t.Fatal(err)
	}
	// A newcomer, neighbour of two nodes only.
	extra, _ := sim.PeerIDs(999, 1)
	late := extra[0]
	c, err := dissemination.NewMon(late, dissemination.MonConfig{}, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := net.s.Add(late, c); err != nil {
		t.Fatal(err)
	}
	net.ids = append(net.ids, late)
	for _, q := range net.ids[10:12] {
		net.adj[q] = append(net.adj[q], late)
		net.adj[late] = append(net.adj[late], q)
		_ = net.s.Input(q, protocols.Neighbours{Peers: net.adj[q]})
	}
	_ = net.s.Input(late, protocols.Neighbours{Peers: net.adj[late]})
	net.s.RunFor(2 * time.Second)
	second := net.broadcast(origin) // within the first session's lifetime
	net.s.RunFor(3 * time.Second)
	if err := net.check(second, origin); err != nil {
		t.Fatal(err)
	}
	if err := net.check(first, origin); err != nil {
		t.Fatalf("the broadcast before it joined: %v", err)
	}
}
