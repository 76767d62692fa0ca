package dissemination_test

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
	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/sim"
)

// ---- transcript helpers ----

// lpbScene is one core under test with named peers (A, B, ...) and named broadcasts.
type lpbScene struct {
	t     *testing.T
	c     *dissemination.LPBCast
	cfg   dissemination.LPBCastConfig
	self  peer.ID
	peers map[string]peer.ID
	names map[peer.ID]string
	ids   map[string]string // broadcast id -> name
	bs    map[string]*dissemination.Broadcast
}

func newLPBScene(t *testing.T, cfg dissemination.LPBCastConfig) *lpbScene {
	t.Helper()
	ids, _ := sim.PeerIDs(11, 7)
	c, err := dissemination.NewLPBCast(ids[0], cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	s := &lpbScene{t: t, c: c, cfg: cfg.WithDefaults(), self: ids[0], peers: map[string]peer.ID{}, names: map[peer.ID]string{ids[0]: "self"},
		ids: map[string]string{}, bs: map[string]*dissemination.Broadcast{}}
	for i, p := range ids[1:] {
		name := string(rune('A' + i))
		s.peers[name] = p
		s.names[p] = name
	}
	return s
}

func (s *lpbScene) p(names ...string) []peer.ID {
	var out []peer.ID
	for _, n := range names {
		out = append(out, s.peers[n])
	}
	return out
}

// b returns the broadcast named name, from origin (a peer name), creating it.
func (s *lpbScene) b(name, origin string) *dissemination.Broadcast {
	if b, ok := s.bs[name]; ok {
		return b
	}
	o := s.self
	if origin != "self" {
		o = s.peers[origin]
	}
	b := &dissemination.Broadcast{Origin: []byte(o), Seq: uint64(len(s.bs) + 1), Payload: []byte(name)}
	s.bs[name] = b
	s.ids[string(dissemination.BroadcastID(b))] = name
	return b
}

func (s *lpbScene) id(name string) []byte { return dissemination.BroadcastID(s.bs[name]) }

func (s *lpbScene) ev(name string, age uint32) *dissemination.LPBCastEvent {
	return &dissemination.LPBCastEvent{Broadcast: s.bs[name], Age: age}
}

func (s *lpbScene) gossip(evs []*dissemination.LPBCastEvent, digest ...*dissemination.LPBCastIDs) *dissemination.LPBCastMessage {
	return &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Gossip{Gossip: &dissemination.LPBCastGossip{Events: evs, EventIds: digest}}}
}

func (s *lpbScene) idName(id []byte) string {
	if n, ok := s.ids[string(id)]; ok {
		return n
	}
	return fmt.Sprintf("?%x", id[:min(4, len(id))])
}

func (s *lpbScene) events(evs []*dissemination.LPBCastEvent) string {
	var parts []string
	for _, e := range evs {
		parts = append(parts, fmt.Sprintf("%s@%d", s.idName(dissemination.BroadcastID(e.GetBroadcast())), e.GetAge()))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// lines describes outputs one per line, sorted (the order of gossip targets is random).
func (s *lpbScene) lines(out []protocols.Output) []string {
	var ls []string
	for _, o := range out {
		switch v := o.(type) {
		case protocols.Send:
			m := v.Msg.(*dissemination.LPBCastMessage)
			l := m.Kind() + " -> " + s.names[v.To]
			switch b := m.GetBody().(type) {
			case *dissemination.LPBCastMessage_Gossip:
				var ids []string
				for _, g := range b.Gossip.GetEventIds() {
					for _, id := range g.GetIds() {
						ids = append(ids, s.names[peer.ID(g.GetOrigin())]+":"+s.idName(id))
					}
				}
				l += " events=" + s.events(b.Gossip.GetEvents()) + " ids=[" + strings.Join(ids, " ") + "]"
			case *dissemination.LPBCastMessage_Retrieve:
				var ids []string
				for _, id := range b.Retrieve.GetIds() {
					ids = append(ids, s.idName(id))
				}
				l += " [" + strings.Join(ids, " ") + "]"
			case *dissemination.LPBCastMessage_Reply:
				l += " " + s.events(b.Reply.GetEvents())
			}
			ls = append(ls, l)
		case dissemination.Delivered:
			ls = append(ls, fmt.Sprintf("deliver %s round %d", s.idName(v.ID), v.Round))
		case protocols.SetTimer:
			switch {
			case v.After == s.cfg.Period:
				ls = append(ls, "timer period")
			case v.After > 0 && v.After < s.cfg.Period:
				ls = append(ls, "timer random")
			default:
				ls = append(ls, fmt.Sprintf("timer BAD %v", v.After))
			}
		case protocols.CancelTimer:
			ls = append(ls, "cancel timer")
		default:
			ls = append(ls, fmt.Sprintf("%T", o))
		}
	}
	slices.Sort(ls)
	return ls
}

// step feeds one input and checks the outputs against want (in any order).
func (s *lpbScene) step(in protocols.Input, want ...string) {
	s.t.Helper()
	got := s.lines(s.c.Handle(sim.Epoch, in))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		s.t.Fatalf("after %T:\n got  %q\n want %q", in, got, want)
	}
}

var lpbTick = protocols.TimerFired{Timer: protocols.Timer{Kind: 40}}

func (s *lpbScene) from(name string, m proto.Message) protocols.Receive {
	return protocols.Receive{From: s.peers[name], Msg: m}
}

// ---- unit tests ----

func TestLPBCastConfig(t *testing.T) {
	d := dissemination.LPBCastConfig{}.WithDefaults()
	if d.Fanout != 3 || d.Period != 200*time.Millisecond || d.Events != 64 || d.MaxAge != 48 || d.Seen != 1<<16 ||
		d.DigestRounds != 5 || d.DigestIDs != 256 || d.Archive != 1024 || d.Missing != 4096 || d.RetrieveWait != 1 || d.RetrieveTimeout != 2 {
		t.Fatalf("defaults: %+v", d)
	}
	if err := (dissemination.LPBCastConfig{}).Validate(); err != nil {
		t.Fatal(err)
	}
	for field, cfg := range map[string]dissemination.LPBCastConfig{
		"Fanout": {Fanout: -1}, "Period": {Period: -time.Second}, "Events": {Events: -1}, "MaxAge": {MaxAge: 1 << 20},
		"Seen": {Seen: -2}, "Archive": {Archive: -1}, "Missing": {Missing: -1}, "RetrieveWait": {RetrieveWait: -1},
		"DigestIDs": {DigestIDs: -1},
	} {
		err := cfg.Validate()
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || ce.Field != "LPBCastConfig."+field {
			t.Errorf("%s: got %v", field, err)
		}
		if _, err := dissemination.NewLPBCast(peer.ID("x"), cfg, rand.New(rand.NewPCG(1, 1))); err == nil {
			t.Errorf("%s: NewLPBCast accepted a bad config", field)
		}
	}
	ids, _ := sim.PeerIDs(1, 1)
	if _, err := dissemination.NewLPBCast(ids[0], dissemination.LPBCastConfig{}, nil); err == nil {
		t.Error("nil rng accepted")
	}
	if _, err := dissemination.NewLPBCast("", dissemination.LPBCastConfig{}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("empty self accepted")
	}
}

// A publish is not delivered locally; it goes out on the next round to F view members
// with age 1, then its id is named in the digest for DigestRounds rounds, then the node
// falls silent (no timer).
func TestLPBCastPublishGoesOutOnTheNextRound(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Fanout: 3, DigestRounds: 3})
	s.step(protocols.Neighbours{Peers: s.p("A", "B", "C", "D")}) // nothing to say: no timer
	s.step(protocols.Call{Req: dissemination.Publish{Broadcast: s.b("m1", "self")}}, "timer random")
	out := s.c.Handle(sim.Epoch, lpbTick)
	var targets []peer.ID
	for _, o := range out {
		if snd, ok := o.(protocols.Send); ok {
			targets = append(targets, snd.To)
			if got := s.events(snd.Msg.(*dissemination.LPBCastMessage).GetGossip().GetEvents()); got != "[m1@1]" {
				t.Fatalf("gossip carries %s", got)
			}
		}
	}
	slices.Sort(targets)
	if len(targets) != 3 || len(slices.Compact(targets)) != 3 {
		t.Fatalf("round 1 went to %v, want 3 distinct view members", targets)
	}
	if got := s.lines(out); got[len(got)-1] != "timer period" {
		t.Fatalf("no next round: %q", got)
	}
	// Rounds 2 and 3: the digest names m1 (the event itself is not resent).
	for r := 2; r <= 3; r++ {
		for _, o := range s.c.Handle(sim.Epoch, lpbTick) {
			if snd, ok := o.(protocols.Send); ok {
				g := snd.Msg.(*dissemination.LPBCastMessage).GetGossip()
				if len(g.GetEvents()) != 0 || len(g.GetEventIds()) != 1 || s.idName(g.GetEventIds()[0].GetIds()[0]) != "m1" ||
					peer.ID(g.GetEventIds()[0].GetOrigin()) != s.self {
					t.Fatalf("round %d: gossip %v", r, g)
				}
			}
		}
	}
	if s.c.Sizes().Events != 0 {
		t.Fatal("events buffer not emptied")
	}
	// Window over, nothing to say: the last round sets no timer, a stale tick does nothing.
	for _, o := range s.c.Handle(sim.Epoch, lpbTick) {
		t.Fatalf("round 4 output %T", o)
	}
}

// A gossiped event is delivered once with its age as round, forwarded once with age+1;
// copies are not delivered again; an event that made MaxAge hops is not forwarded.
func TestLPBCastDeliversOnceAndForwards(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Fanout: 2, MaxAge: 3, DigestRounds: 2})
	s.step(protocols.Neighbours{Peers: s.p("A", "B")})
	s.b("m1", "C")
	s.b("m2", "D")
	s.step(s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev("m1", 1)})), "deliver m1 round 1", "timer random")
	s.step(s.from("B", s.gossip([]*dissemination.LPBCastEvent{s.ev("m1", 2)})))
	s.step(s.from("B", s.gossip([]*dissemination.LPBCastEvent{s.ev("m2", 3)})), "deliver m2 round 3")
	s.step(lpbTick,
		// m1's age was raised by the copy of age 2 (age-based purging); m2 made MaxAge
		// hops: named in the digest, not forwarded.
		"GOSSIP -> A events=[m1@3] ids=[D:m2]",
		"GOSSIP -> B events=[m1@3] ids=[D:m2]",
		"timer period")
	s.step(lpbTick, "GOSSIP -> A events=[] ids=[D:m2 C:m1]", "GOSSIP -> B events=[] ids=[D:m2 C:m1]")
	s.step(lpbTick)                                                                            // stale: the window is over and nothing is pending
	s.step(s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev("m1", 1), s.ev("m2", 1)}))) // copies: nothing
	if z := s.c.Sizes(); z.Seen != 2 || z.Archive != 2 || z.Events != 0 || z.View != 2 {
		t.Fatalf("sizes %+v", z)
	}
}

// A digest naming an unknown id: after k rounds the node asks the gossip's sender, r
// rounds later a random other view member, r rounds later the origin, then gives up.
func TestLPBCastRetrievalAsksSenderThenRandomThenOrigin(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Fanout: 2, RetrieveWait: 1, RetrieveTimeout: 2})
	s.step(protocols.Neighbours{Peers: s.p("A", "B")})
	s.b("x", "C")
	digest := &dissemination.LPBCastIDs{Origin: []byte(s.peers["C"]), Ids: [][]byte{s.id("x")}}
	s.step(s.from("A", s.gossip(nil, digest)), "timer random")
	s.step(s.from("B", s.gossip(nil, digest))) // already waited for
	s.step(lpbTick, "timer period")            // round 1: within k
	s.step(lpbTick, "RETRIEVE -> A [x]", "timer period")
	s.step(lpbTick, "timer period")
	s.step(lpbTick, "RETRIEVE -> B [x]", "timer period")
	s.step(lpbTick, "timer period")
	s.step(lpbTick, "RETRIEVE -> C [x]", "timer period")
	s.step(lpbTick, "timer period")
	s.step(lpbTick) // given up: nothing pending, no timer
	if s.c.Sizes().Missing != 0 {
		t.Fatal("missing id kept after giving up")
	}
	// Named again: a new retrieval; the reply is delivered (not gossiped on), the id
	// goes into the digest, and no further request follows.
	s.step(s.from("A", s.gossip(nil, digest)), "timer random")
	s.step(lpbTick, "timer period")
	s.step(lpbTick, "RETRIEVE -> A [x]", "timer period")
	reply := &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Reply{Reply: &dissemination.LPBCastReply{Events: []*dissemination.LPBCastEvent{s.ev("x", 4)}}}}
	s.step(s.from("A", reply), "deliver x round 4")
	s.step(s.from("A", reply))
	s.step(lpbTick, "GOSSIP -> A events=[] ids=[C:x]", "GOSSIP -> B events=[] ids=[C:x]", "timer period")
}

// A missing id whose sender went down skips to a random view member.
func TestLPBCastRetrievalSkipsPeersThatAreDown(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Fanout: 3})
	s.step(protocols.Neighbours{Peers: s.p("A", "B", "C")})
	s.b("x", "D")
	s.step(s.from("A", s.gossip(nil, &dissemination.LPBCastIDs{Origin: []byte(s.peers["D"]), Ids: [][]byte{s.id("x")}})), "timer random")
	s.step(protocols.PeerDown{Peer: s.peers["A"]})
	s.step(protocols.Neighbours{Peers: s.p("B", "E")}) // C gone too
	s.step(lpbTick, "timer period")
	got := s.lines(s.c.Handle(sim.Epoch, lpbTick))
	if !slices.Equal(got, []string{"RETRIEVE -> B [x]", "timer period"}) && !slices.Equal(got, []string{"RETRIEVE -> E [x]", "timer period"}) {
		t.Fatalf("asked %q, want a random live view member", got)
	}
	s.step(lpbTick, "timer period")
	s.step(lpbTick, "RETRIEVE -> D [x]", "timer period") // the origin
}

// A node answers retrieve requests from its retrieve buffer, and only with what it has.
func TestLPBCastAnswersRetrieve(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{})
	s.step(protocols.Neighbours{Peers: s.p("A")})
	s.step(protocols.Call{Req: dissemination.Publish{Broadcast: s.b("mine", "self")}}, "timer random")
	s.b("theirs", "B")
	s.b("unknown", "B")
	s.step(s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev("theirs", 2)})), "deliver theirs round 2")
	ask := func(names ...string) *dissemination.LPBCastMessage {
		r := &dissemination.LPBCastRetrieve{}
		for _, n := range names {
			r.Ids = append(r.Ids, s.id(n))
		}
		return &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Retrieve{Retrieve: r}}
	}
	s.step(s.from("C", ask("unknown", "theirs", "mine")), "REPLY -> C [theirs@3 mine@1]")
	s.step(s.from("C", ask("unknown")))
}

// When the events buffer overflows, the most propagated events (highest age) go first.
func TestLPBCastEventsBufferDropsTheMostPropagated(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Fanout: 1, Events: 3, DigestRounds: 1})
	s.step(protocols.Neighbours{Peers: s.p("A")})
	for i, age := range []uint32{5, 1, 4, 2, 3} {
		name := fmt.Sprintf("e%d", age)
		s.b(name, "B")
		want := []string{fmt.Sprintf("deliver %s round %d", name, age)}
		if i == 0 {
			want = append(want, "timer random")
		}
		s.step(s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev(name, age)})), want...)
	}
	// A copy of e1 that made 6 hops: e1 is now the most propagated, and gives way to e3.
	s.step(s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev("e1", 6)})))
	s.b("e0", "B")
	s.step(s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev("e0", 0)})), "deliver e0 round 0")
	s.step(lpbTick, "GOSSIP -> A events=[e2@3 e3@4 e0@1] ids=[B:e4 B:e1 B:e5]")
}

// Leave cancels the round timer; afterwards the core emits nothing.
func TestLPBCastLeave(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{})
	s.step(protocols.Neighbours{Peers: s.p("A")})
	s.step(protocols.Call{Req: dissemination.Publish{Broadcast: s.b("m", "self")}}, "timer random")
	s.step(protocols.Leave{}, "cancel timer")
	s.b("n", "A")
	for _, in := range []protocols.Input{lpbTick, s.from("A", s.gossip([]*dissemination.LPBCastEvent{s.ev("n", 1)})),
		protocols.Call{Req: dissemination.Publish{Broadcast: s.b("m2", "self")}}, protocols.Neighbours{Peers: s.p("B")}, protocols.Leave{}} {
		s.step(in)
	}
}

// Nonsense in, nothing out (and no panic): nil and empty messages, broadcasts missing,
// ids of the wrong length, bad origins, messages of other cores, huge counts.
func TestLPBCastIgnoresNonsense(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Events: 4, DigestIDs: 8, Missing: 16, DigestRounds: 1})
	s.step(protocols.Neighbours{Peers: []peer.ID{"", s.self, s.peers["A"], s.peers["A"]}})
	if v := s.c.View(); len(v) != 1 || v[0] != s.peers["A"] {
		t.Fatalf("view %v", v)
	}
	var nilMsg *dissemination.LPBCastMessage
	for _, in := range []protocols.Input{
		protocols.Receive{From: s.peers["A"]},
		protocols.Receive{From: s.peers["A"], Msg: nilMsg},
		protocols.Receive{From: s.peers["A"], Msg: &dissemination.LPBCastMessage{}},
		protocols.Receive{From: s.peers["A"], Msg: &dissemination.Message{}},
		s.from("A", &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Gossip{}}),
		s.from("A", &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Retrieve{}}),
		s.from("A", &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Reply{}}),
		s.from("A", s.gossip([]*dissemination.LPBCastEvent{nil, {Age: 3}}, nil, &dissemination.LPBCastIDs{Ids: [][]byte{nil, {1, 2}}})),
		protocols.Call{Req: dissemination.Publish{}},
		protocols.Call{Req: "publish?"},
		protocols.Call{},
		protocols.PeerDown{Peer: "nobody"},
		protocols.TimerFired{Timer: protocols.Timer{Kind: 3}},
		lpbTick,
		protocols.SelfUpdated{},
		nil,
	} {
		s.step(in)
	}
	// Huge counts are capped: 1,000 events, 100,000 ids with a bogus origin.
	big := &dissemination.LPBCastGossip{EventIds: []*dissemination.LPBCastIDs{{Origin: []byte("not a peer id")}}}
	for i := range 1000 {
		big.Events = append(big.Events, &dissemination.LPBCastEvent{Broadcast: &dissemination.Broadcast{Seq: uint64(i)}, Age: math.MaxUint32})
	}
	for i := range 100000 {
		big.EventIds[0].Ids = append(big.EventIds[0].Ids, dissemination.ID(nil, uint64(i), []byte("x")))
	}
	out := s.c.Handle(sim.Epoch, s.from("A", &dissemination.LPBCastMessage{Body: &dissemination.LPBCastMessage_Gossip{Gossip: big}}))
	if n := len(out); n != 4+1 { // 4 deliveries (the cap) and the timer
		t.Fatalf("%d outputs", n)
	}
	if z := s.c.Sizes(); z.Missing != 8 || z.Events != 0 || z.Seen != 4 {
		t.Fatalf("sizes %+v", z)
	}
	// A message from itself is ignored.
	s.step(protocols.Receive{From: s.self, Msg: s.gossip([]*dissemination.LPBCastEvent{{Broadcast: &dissemination.Broadcast{Seq: 99999}}})})
	// Retrieval of ids with a bogus origin: sender, random member (none other), then
	// give up without asking the unparsable origin.
	// The 4 delivered events made too many hops to be forwarded, but the digest names
	// them (origin unknown).
	s.step(lpbTick, "GOSSIP -> A events=[] ids=[:?"+"1af2f496 :?c4df978b :?66636c4c :?51f84ee8]", "timer period")
	got := s.lines(s.c.Handle(sim.Epoch, lpbTick))
	if len(got) != 3 || !strings.HasPrefix(got[0], "RETRIEVE -> A [") || strings.Count(got[0]+got[1], "?") != 8 || got[2] != "timer period" {
		t.Fatalf("got %q", got) // 8 ids in two requests of Events = 4
	}
	for range 3 {
		s.c.Handle(sim.Epoch, lpbTick)
	}
	s.step(lpbTick) // nothing left to ask: given up
	if z := s.c.Sizes(); z.Missing != 0 {
		t.Fatalf("sizes %+v", z)
	}
}

// ---- simulator tests ----

// lpbNet is the shared test overlay (ring plus random chords, as newOverlayNet builds
// it) with message loss, and with counters of its own: payload copies sent, and per
// broadcast its publish time, last delivery time and largest hop count.
type lpbNet struct {
	*overlayNet
	cfg       dissemination.LPBCastConfig
	payloads  uint64
	published map[string]time.Time
	origin    map[string]peer.ID
	last      map[string]time.Time
	maxHop    map[string]uint32
}

func newLPBNet(t testing.TB, seed uint64, n int, loss float64, cfg dissemination.LPBCastConfig) *lpbNet {
	t.Helper()
	net := &lpbNet{
		cfg:       cfg.WithDefaults(),
		published: map[string]time.Time{}, origin: map[string]peer.ID{}, last: map[string]time.Time{}, maxHop: map[string]uint32{},
	}
	net.overlayNet = newOverlayNetWith(t, seed, n, func() proto.Message { return new(dissemination.LPBCastMessage) },
		func(_ int, id peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewLPBCast(id, cfg, rng)
		},
		func(c *sim.Config) {
			c.Loss = loss
			c.Kind = func(m proto.Message) string {
				net.payloads += uint64(len(m.(dissemination.Carrier).Broadcasts()))
				return kind(m)
			}
			count := c.OnEvent
			c.OnEvent = func(now time.Time, node peer.ID, ev protocols.Output) {
				count(now, node, ev)
				if d, ok := ev.(dissemination.Delivered); ok {
					net.last[string(d.ID)] = now
					net.maxHop[string(d.ID)] = max(net.maxHop[string(d.ID)], d.Round)
				}
			}
		})
	return net
}

func (n *lpbNet) publish(from peer.ID) []byte {
	id := n.broadcast(from)
	n.published[string(id)] = n.s.Now()
	n.origin[string(id)] = from
	return id
}

// rounds is the time from publish to the last delivery, in gossip periods.
func (n *lpbNet) rounds(id []byte) float64 {
	return float64(n.last[string(id)].Sub(n.published[string(id)])) / float64(n.cfg.Period)
}

func (n *lpbNet) deliveries() (total int) {
	for _, m := range n.delivered {
		for _, c := range m {
			total += c
		}
	}
	return total
}

// lpbFigures accumulates what the simulator tests report.
type lpbFigures struct {
	rounds, hops, copies []float64
}

func (f *lpbFigures) String() string {
	mx := func(v []float64) float64 { return slices.Max(v) }
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	return fmt.Sprintf("rounds to full delivery mean %.1f max %.1f; last-delivery hop mean %.1f max %.0f; payload copies per delivery %.2f",
		mean(f.rounds), mx(f.rounds), mean(f.hops), mx(f.hops), mean(f.copies))
}

// runBroadcasts publishes k broadcasts one after the other from random live nodes and
// checks each: every live node but the origin delivers it exactly once.
func (n *lpbNet) runBroadcasts(t *testing.T, rng *rand.Rand, k int, live []peer.ID, f *lpbFigures) {
	t.Helper()
	for i := 0; i < k; i++ {
		origin := live[rng.IntN(len(live))]
		p0, d0 := n.payloads, n.deliveries()
		id := n.publish(origin)
		n.s.RunFor(8 * time.Second)
		if err := n.check(id, origin); err != nil {
			t.Fatalf("broadcast %d: %v", i, err)
		}
		f.rounds = append(f.rounds, n.rounds(id))
		f.hops = append(f.hops, float64(n.maxHop[string(id)]))
		f.copies = append(f.copies, float64(n.payloads-p0)/float64(n.deliveries()-d0))
	}
}

// The headline: at 100 to 300 nodes every node delivers every broadcast exactly once,
// within a number of rounds that grows like log N; each delivery costs about F payload
// copies (LPBCast is redundant by design).
func TestLPBCastDeliversToAllExactlyOnce(t *testing.T) {
	for _, n := range []int{100, 200, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			net := newLPBNet(t, uint64(n), n, 0, dissemination.LPBCastConfig{})
			var f lpbFigures
			net.runBroadcasts(t, rand.New(rand.NewPCG(uint64(n), 1)), 10, net.ids, &f)
			st := net.s.Stats()
			t.Logf("N=%d: %s; RETRIEVE %d, GOSSIP %d msgs (%d B) for 10 broadcasts", n, &f, st.ByKind["RETRIEVE"].Msgs, st.ByKind["GOSSIP"].Msgs, st.ByKind["GOSSIP"].Bytes)
			if limit := 2 * math.Log2(float64(n)); slices.Max(f.rounds) > limit {
				t.Fatalf("full delivery took %.1f rounds, more than 2 log2 N = %.1f", slices.Max(f.rounds), limit)
			}
			for _, c := range f.copies {
				if c < 1.5 || c > 4 {
					t.Fatalf("%.2f payload copies per delivery, want about F = 3", c)
				}
			}
			for _, c := range net.cores {
				if z := c.(*dissemination.LPBCast).Sizes(); z.Events != 0 || z.Missing != 0 {
					t.Fatalf("buffers not drained once quiet: %+v", z)
				}
			}
		})
	}
}

// With 5% of all messages lost (gossip, retrieve requests and replies alike), digests and
// retrieval still bring every broadcast to every node.
func TestLPBCastDeliversDespiteLoss(t *testing.T) {
	const n = 200
	net := newLPBNet(t, 5, n, 0.05, dissemination.LPBCastConfig{})
	var f lpbFigures
	net.runBroadcasts(t, rand.New(rand.NewPCG(5, 1)), 20, net.ids, &f)
	st := net.s.Stats()
	t.Logf("N=%d, 5%% loss (%d messages lost): %s; RETRIEVE %d, REPLY %d", n, st.Lost, &f, st.ByKind["RETRIEVE"].Msgs, st.ByKind["REPLY"].Msgs)
	if st.Lost == 0 || st.ByKind["RETRIEVE"].Msgs == 0 {
		t.Fatal("no loss or no retrieval: the test proves nothing")
	}
}

// After 30% of the nodes crash at once (the membership gives the survivors new
// neighbours), every survivor still delivers every broadcast; and broadcasts in flight
// when the crash hits reach every survivor as soon as one survivor has them.
func TestLPBCastSurvivesCrashes(t *testing.T) {
	const n = 200
	net := newLPBNet(t, 6, n, 0, dissemination.LPBCastConfig{})
	rng := rand.New(rand.NewPCG(6, 1))
	var inFlight [][]byte
	for k := 0; k < 5; k++ {
		inFlight = append(inFlight, net.publish(net.ids[rng.IntN(n)]))
	}
	net.s.RunFor(300 * time.Millisecond)
	live := net.crash(rng, 0.3)
	net.s.RunFor(10 * time.Second)
	survived := 0
	for _, id := range inFlight {
		got := 0
		for _, p := range live {
			got += net.delivered[p][string(id)]
		}
		if got == 0 {
			continue // only crashed nodes had it
		}
		survived++
		if err := net.check(id, net.origin[string(id)]); err != nil {
			t.Fatalf("in-flight broadcast: %v", err)
		}
	}
	var f lpbFigures
	net.runBroadcasts(t, rng, 10, live, &f)
	t.Logf("N=%d, 30%% crashed (%d survivors): %d of 5 in-flight broadcasts reached the survivors; after: %s", n, len(live), survived, &f)
	if survived == 0 {
		t.Fatal("no in-flight broadcast survived: the test proves nothing")
	}
}

// A burst of broadcasts overflows small events buffers: the events dropped there are
// named by the digests and retrieved, so every node still delivers each exactly once,
// and no buffer ever exceeds its bound.
func TestLPBCastBurstOverflowsBoundedBuffers(t *testing.T) {
	const n, k = 150, 60
	cfg := dissemination.LPBCastConfig{Events: 8, Archive: 100, Seen: 200, Missing: 100, DigestIDs: 100}
	net := newLPBNet(t, 8, n, 0.02, cfg)
	rng := rand.New(rand.NewPCG(8, 1))
	var ids, origins [][]byte
	for i := 0; i < k; i++ {
		o := net.ids[rng.IntN(n)]
		ids = append(ids, net.publish(o))
		origins = append(origins, []byte(o))
		net.s.RunFor(time.Duration(rng.IntN(5)) * time.Millisecond) // 60 broadcasts within 300 ms
	}
	for step := 0; step < 100; step++ {
		net.s.RunFor(100 * time.Millisecond)
		for _, c := range net.cores {
			z := c.(*dissemination.LPBCast).Sizes()
			if z.Events > 8 || z.Archive > 100 || z.Seen > 200 || z.Missing > 100 {
				t.Fatalf("a buffer over its bound: %+v", z)
			}
		}
	}
	for i, id := range ids {
		if err := net.check(id, peer.ID(origins[i])); err != nil {
			t.Fatalf("broadcast %d of the burst: %v", i, err)
		}
	}
	st := net.s.Stats()
	t.Logf("N=%d, %d broadcasts in 300 ms, events buffers of 8: payload copies per delivery %.2f, RETRIEVE %d, REPLY %d",
		n, k, float64(net.payloads)/float64(net.deliveries()), st.ByKind["RETRIEVE"].Msgs, st.ByKind["REPLY"].Msgs)
}

func TestLPBCastSameSeedSameTrace(t *testing.T) {
	run := func(seed uint64) uint64 {
		net := newLPBNet(t, seed, 100, 0.05, dissemination.LPBCastConfig{})
		rng := rand.New(rand.NewPCG(seed, 3))
		for k := 0; k < 5; k++ {
			net.publish(net.ids[rng.IntN(100)])
			net.s.RunFor(time.Second)
		}
		net.crash(rng, 0.3)
		net.publish(net.ids[rng.IntN(100)])
		net.s.RunFor(3 * time.Second)
		return net.s.TraceHash()
	}
	a, b, c := run(9), run(9), run(10)
	if a != b {
		t.Fatalf("same seed, different traces: %x %x", a, b)
	}
	if a == c {
		t.Fatal("different seeds, same trace: the hash sees nothing")
	}
}

// FuzzLPBCastTakesAnyMessage: whatever bytes decode as an LPBCastMessage, a core takes
// it (and runs its rounds after it) without panicking and within its bounds.
func FuzzLPBCastTakesAnyMessage(f *testing.F) {
	ids, _ := sim.PeerIDs(3, 3)
	b := &dissemination.Broadcast{Origin: []byte(ids[2]), Seq: 1, Payload: []byte("p")}
	for _, m := range []*dissemination.LPBCastMessage{
		{Body: &dissemination.LPBCastMessage_Gossip{Gossip: &dissemination.LPBCastGossip{
			Events:   []*dissemination.LPBCastEvent{{Broadcast: b, Age: 2}},
			EventIds: []*dissemination.LPBCastIDs{{Origin: []byte(ids[2]), Ids: [][]byte{dissemination.ID([]byte(ids[2]), 2, nil)}}},
		}}},
		{Body: &dissemination.LPBCastMessage_Retrieve{Retrieve: &dissemination.LPBCastRetrieve{Ids: [][]byte{dissemination.BroadcastID(b)}}}},
		{Body: &dissemination.LPBCastMessage_Reply{Reply: &dissemination.LPBCastReply{Events: []*dissemination.LPBCastEvent{{Broadcast: b}}}}},
	} {
		enc, _ := proto.Marshal(m)
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, enc []byte) {
		m := new(dissemination.LPBCastMessage)
		if proto.Unmarshal(enc, m) != nil {
			return
		}
		cfg := dissemination.LPBCastConfig{Events: 3, Seen: 5, Archive: 4, Missing: 6, DigestIDs: 4}
		c, err := dissemination.NewLPBCast(ids[0], cfg, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		now := sim.Epoch
		c.Handle(now, protocols.Neighbours{Peers: ids[1:]})
		c.Handle(now, protocols.Call{Req: dissemination.Publish{Broadcast: &dissemination.Broadcast{Origin: []byte(ids[0]), Seq: 7}}})
		for _, in := range []protocols.Input{
			protocols.Receive{From: ids[1], Msg: proto.Clone(m)},
			protocols.Receive{From: ids[2], Msg: proto.Clone(m)},
		} {
			c.Handle(now, in)
		}
		for range 12 {
			now = now.Add(200 * time.Millisecond)
			for _, o := range c.Handle(now, lpbTick) {
				if s, ok := o.(protocols.Send); ok {
					if _, err := proto.Marshal(s.Msg); err != nil || s.To == ids[0] || s.To == "" {
						t.Fatalf("bad send to %q: %v", s.To, err)
					}
				}
			}
			c.Handle(now, protocols.Receive{From: ids[1], Msg: proto.Clone(m)})
		}
		if z := c.Sizes(); z.Events > 3 || z.Seen > 5 || z.Archive > 4 || z.Missing > 6 || z.View != 2 {
			t.Fatalf("over the bounds: %+v", z)
		}
	})
}

// TestLPBCastMaxBytesSplitsRounds: events whose payloads together pass MaxBytes wait for
// the next round instead of making one oversized message.
func TestLPBCastMaxBytesSplitsRounds(t *testing.T) {
	s := newLPBScene(t, dissemination.LPBCastConfig{Fanout: 1, MaxBytes: 10})
	s.step(protocols.Neighbours{Peers: s.p("A")})
	// Payloads are the names: 6 + 6 > 10, so one event a round; a lone event larger than
	// MaxBytes still goes.
	for _, name := range []string{"m1-aaa", "m2-bbb", "m3-larger-than-ten"} {
		s.c.Handle(sim.Epoch, protocols.Call{Req: dissemination.Publish{Broadcast: s.b(name, "self")}})
	}
	var rounds []string
	for r := 0; r < 4; r++ {
		for _, o := range s.c.Handle(sim.Epoch, lpbTick) {
			if snd, ok := o.(protocols.Send); ok {
				if ev := snd.Msg.(*dissemination.LPBCastMessage).GetGossip().GetEvents(); len(ev) > 0 {
					rounds = append(rounds, s.events(ev))
				}
			}
		}
	}
	if want := []string{"[m1-aaa@1]", "[m2-bbb@1]", "[m3-larger-than-ten@1]"}; !slices.Equal(rounds, want) {
		t.Fatalf("rounds carried %q, want %q", rounds, want)
	}
}
