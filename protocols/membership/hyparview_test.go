package membership

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testIDs returns n fixed peer IDs.
func testIDs(n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		var seed [32]byte
		seed[0], seed[1] = byte(i), byte(i>>8)
		priv, _ := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
		out[i], _ = peer.IDFromPrivateKey(priv)
	}
	return out
}

var ids = testIDs(64)

// name gives test IDs short names in transcripts: n0, n1, ...
func name(p peer.ID) string {
	if p == "" {
		return "-"
	}
	for i, id := range ids {
		if id == p {
			return fmt.Sprintf("n%d", i)
		}
	}
	return p.ShortString()
}

func newHV(t *testing.T, cfg HyParViewConfig) *HyParView {
	t.Helper()
	h, err := NewHyParView(NewNode(ids[0], nil, nil), cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// transcript renders outputs as short lines, e.g. "send n3 FORWARD_JOIN(n9,ttl=6)".
func transcript(outs []protocols.Output) []string {
	var lines []string
	for _, o := range outs {
		switch v := o.(type) {
		case protocols.Send:
			lines = append(lines, "send "+name(v.To)+" "+describe(v.Msg.(*Message)))
		case protocols.Close:
			lines = append(lines, "close "+name(v.Peer))
		case protocols.Link:
			lines = append(lines, fmt.Sprintf("link %s %v", name(v.Peer), v.Up))
		case protocols.SetTimer:
			switch v.Timer.Kind {
			case timerShuffle:
				lines = append(lines, "timer shuffle") // its first delay is random: checked apart
			default:
				lines = append(lines, fmt.Sprintf("timer %d %s %v", v.Timer.Kind, name(v.Timer.Peer), v.After))
			}
		case protocols.CancelTimer:
			lines = append(lines, fmt.Sprintf("cancel %d %s", v.Timer.Kind, name(v.Timer.Peer)))
		case NeighboursChanged:
			var ns []string
			for _, n := range v.Nodes {
				ns = append(ns, name(n.PeerID()))
			}
			lines = append(lines, "neighbours ["+strings.Join(ns, " ")+"]")
		default:
			lines = append(lines, fmt.Sprintf("%T", o))
		}
	}
	return lines
}

func describe(m *Message) string {
	switch b := m.GetBody().(type) {
	case *Message_Join:
		return "JOIN"
	case *Message_ForwardJoin:
		return fmt.Sprintf("FORWARD_JOIN(%s,ttl=%d)", name(b.ForwardJoin.GetJoiner().PeerID()), b.ForwardJoin.GetTtl())
	case *Message_Neighbor:
		if b.Neighbor.GetHighPriority() {
			return "NEIGHBOR(high)"
		}
		return "NEIGHBOR(low)"
	case *Message_NeighborReply:
		return fmt.Sprintf("NEIGHBOR_REPLY(%v)", b.NeighborReply.GetAccepted())
	case *Message_Disconnect:
		return fmt.Sprintf("DISCONNECT(alive=%v)", b.Disconnect.GetAlive())
	case *Message_Shuffle:
		return fmt.Sprintf("SHUFFLE(%d nodes,ttl=%d)", len(b.Shuffle.GetNodes()), b.Shuffle.GetTtl())
	case *Message_ShuffleReply:
		return fmt.Sprintf("SHUFFLE_REPLY(%d nodes)", len(b.ShuffleReply.GetNodes()))
	}
	return "?"
}

func recv(from peer.ID, m *Message) protocols.Input { return protocols.Receive{From: from, Msg: m} }

func neighbor(from peer.ID, high bool) protocols.Input {
	return recv(from, &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: NewNode(from, nil, nil), HighPriority: high}}})
}

func join(from peer.ID) protocols.Input {
	return recv(from, &Message{Body: &Message_Join{Join: &Join{Sender: NewNode(from, nil, nil)}}})
}

func forwardJoin(from, joiner peer.ID, ttl uint32) protocols.Input {
	return recv(from, &Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: NewNode(joiner, nil, nil), Ttl: ttl}}})
}

func names(ps []peer.ID) string {
	var s []string
	for _, p := range ps {
		s = append(s, name(p))
	}
	return strings.Join(s, " ")
}

func wantLines(t *testing.T, got []protocols.Output, want ...string) {
	t.Helper()
	g := transcript(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outputs:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

// withActive makes h take the given peers as neighbours (high-priority NEIGHBOR).
func withActive(h *HyParView, ps ...peer.ID) {
	for _, p := range ps {
		h.Handle(t0, neighbor(p, true))
	}
}

func TestHyParViewStartJoinsThroughFirstContact(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	out := h.Handle(t0, protocols.Start{Bootstrap: []peer.ID{ids[1], ids[2]}})
	wantLines(t, out,
		"timer shuffle",
		"link n1 true",
		"send n1 JOIN",
		"neighbours [n1]")
	first := out[0].(protocols.SetTimer).After
	if first < 5*time.Second || first > 10*time.Second {
		t.Fatalf("first shuffle after %v, want within [5s, 10s]", first)
	}
	// The contact fails: the next bootstrap peer is tried.
	wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[1]}),
		"link n1 false",
		"link n2 true",
		"send n2 JOIN",
		"neighbours [n2]")
}

func TestHyParViewJoinAtContact(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1], ids[2])
	wantLines(t, h.Handle(t0, join(ids[9])),
		"link n9 true",
		"send n9 NEIGHBOR_REPLY(true)",
		"send n1 FORWARD_JOIN(n9,ttl=6)",
		"send n2 FORWARD_JOIN(n9,ttl=6)",
		"neighbours [n1 n2 n9]")
}

func TestHyParViewJoinEvictsWhenFull(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 2})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1], ids[2])
	out := transcript(h.Handle(t0, join(ids[9])))
	// One of n1, n2 is evicted with DISCONNECT and kept in the passive view.
	victim := strings.TrimPrefix(out[0], "send ")
	victim = strings.TrimSuffix(victim, " DISCONNECT(alive=true)")
	if victim != "n1" && victim != "n2" {
		t.Fatalf("first output %q, want a DISCONNECT to n1 or n2", out[0])
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}[victim]
	want := []string{
		"send " + victim + " DISCONNECT(alive=true)",
		"close " + victim,
		"link " + victim + " false",
		"link n9 true",
		"send n9 NEIGHBOR_REPLY(true)",
		"send " + other + " FORWARD_JOIN(n9,ttl=6)",
		"neighbours [" + other + " n9]",
	}
	if strings.Join(out, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outputs:\n  %s\nwant:\n  %s", strings.Join(out, "\n  "), strings.Join(want, "\n  "))
	}
	if names(h.Passive()) != victim {
		t.Fatalf("passive [%s], want [%s]", names(h.Passive()), victim)
	}
}

func TestHyParViewForwardJoin(t *testing.T) {
	t.Run("walk ends at ttl 0", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, forwardJoin(ids[1], ids[9], 0)),
			"link n9 true",
			"send n9 NEIGHBOR(high)",
			"neighbours [n1 n2 n9]")
	})
	t.Run("walk ends where the sender is the only neighbour", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1])
		wantLines(t, h.Handle(t0, forwardJoin(ids[1], ids[9], 5)),
			"link n9 true",
			"send n9 NEIGHBOR(high)",
			"neighbours [n1 n9]")
	})
	t.Run("at PRWL the joiner enters the passive view and the walk goes on", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, forwardJoin(ids[1], ids[9], 3)), "send n2 FORWARD_JOIN(n9,ttl=2)")
		if names(h.Passive()) != "n9" {
			t.Fatalf("passive [%s], want [n9]", names(h.Passive()))
		}
	})
	t.Run("elsewhere the walk just goes on", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, forwardJoin(ids[1], ids[9], 5)), "send n2 FORWARD_JOIN(n9,ttl=4)")
		if len(h.Passive()) != 0 {
			t.Fatalf("passive [%s], want empty", names(h.Passive()))
		}
	})
	t.Run("an absurd ttl is clamped to ARWL", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, forwardJoin(ids[1], ids[9], 1<<30)), "send n2 FORWARD_JOIN(n9,ttl=5)")
	})
}

func TestHyParViewNeighborPriority(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 2})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1], ids[2])
	wantLines(t, h.Handle(t0, neighbor(ids[3], false)), "send n3 NEIGHBOR_REPLY(false)")
	if names(h.Active()) != "n1 n2" || names(h.Passive()) != "n3" {
		t.Fatalf("active [%s] passive [%s]", names(h.Active()), names(h.Passive()))
	}
	out := transcript(h.Handle(t0, neighbor(ids[4], true)))
	if len(out) != 6 || !strings.HasSuffix(out[0], "DISCONNECT(alive=true)") || out[3] != "link n4 true" || out[4] != "send n4 NEIGHBOR_REPLY(true)" {
		t.Fatalf("high priority: %v", out)
	}
	if len(h.Active()) != 2 || !strings.Contains(names(h.Active()), "n4") {
		t.Fatalf("active [%s], want n4 and one of n1, n2", names(h.Active()))
	}
}

func TestHyParViewForgedSenderIgnored(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	h.Handle(t0, protocols.Start{})
	// n5 claims to be n6.
	m := &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: NewNode(ids[6], nil, nil), HighPriority: true}}}
	wantLines(t, h.Handle(t0, recv(ids[5], m)))
	wantLines(t, h.Handle(t0, recv(ids[5], &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: &Node{Id: []byte("junk")}}}})))
	wantLines(t, h.Handle(t0, recv(ids[5], &Message{})))
	if len(h.Active()) != 0 {
		t.Fatal("a forged or junk sender was taken in")
	}
}

func TestHyParViewDisconnectRefillsFromPassive(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 2})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1], ids[2])
	h.Handle(t0, neighbor(ids[3], false)) // rejected: n3 goes to the passive view
	wantLines(t, h.Handle(t0, recv(ids[1], &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: true}}})),
		"link n1 false",
		"close n1",
		"send n3 NEIGHBOR(low)",
		"timer 2 n3 5s",
		"neighbours [n2]")
	if names(h.Passive()) != "n3 n1" {
		t.Fatalf("passive [%s], want [n3 n1]", names(h.Passive()))
	}
	// n3 accepts.
	wantLines(t, h.Handle(t0, recv(ids[3], &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: NewNode(ids[3], nil, nil), Accepted: true}}})),
		"cancel 2 n3",
		"link n3 true",
		"neighbours [n2 n3]")
}

func TestHyParViewFailurePromotesWithHighPriority(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 1})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1])
	h.Handle(t0, neighbor(ids[2], false)) // to passive
	h.Handle(t0, neighbor(ids[3], false)) // to passive
	out := h.Handle(t0, protocols.PeerDown{Peer: ids[1]})
	asked := out[1].(protocols.Send).To // a random passive node
	other := map[peer.ID]peer.ID{ids[2]: ids[3], ids[3]: ids[2]}[asked]
	wantLines(t, out,
		"link n1 false",
		"send "+name(asked)+" NEIGHBOR(high)",
		"timer 2 "+name(asked)+" 5s",
		"neighbours []")
	// No answer in time: it is taken for dead and the other one is asked.
	wantLines(t, h.Handle(t0.Add(5*time.Second), protocols.TimerFired{Timer: protocols.Timer{Kind: timerNeighbor, Peer: asked}}),
		"cancel 2 "+name(asked),
		"send "+name(other)+" NEIGHBOR(high)",
		"timer 2 "+name(other)+" 5s")
	if names(h.Passive()) != name(other) {
		t.Fatalf("passive [%s], want [%s]", names(h.Passive()), name(other))
	}
	// It refuses (high priority cannot be refused by the protocol, but a reply may
	// race): it stays in the passive view and is not asked again before the next shuffle.
	wantLines(t, h.Handle(t0, recv(other, &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: NewNode(other, nil, nil)}}})),
		"cancel 2 "+name(other))
	if names(h.Passive()) != name(other) {
		t.Fatalf("passive [%s], want [%s]", names(h.Passive()), name(other))
	}
	// The next shuffle tick asks it again.
	lines := transcript(h.Handle(t0.Add(10*time.Second), protocols.TimerFired{Timer: protocols.Timer{Kind: timerShuffle}}))
	if len(lines) < 2 || lines[1] != "send "+name(other)+" NEIGHBOR(high)" {
		t.Fatalf("shuffle tick: %v, want a new request to %s", lines, name(other))
	}
}

func TestHyParViewShuffle(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1:6]...)
	for i := 10; i < 50; i++ { // fill the passive view (30)
		h.Handle(t0, neighbor(ids[i], false))
	}
	if len(h.Passive()) != 30 {
		t.Fatalf("passive view of %d, want 30", len(h.Passive()))
	}
	out := h.Handle(t0.Add(10*time.Second), protocols.TimerFired{Timer: protocols.Timer{Kind: timerShuffle}})
	lines := transcript(out)
	if len(lines) != 2 || lines[0] != "timer shuffle" || !strings.HasSuffix(lines[1], "SHUFFLE(7 nodes,ttl=6)") {
		t.Fatalf("shuffle tick: %v, want the timer re-armed and a SHUFFLE of ka+kp=7 nodes with ttl ARWL", lines)
	}
	if out[0].(protocols.SetTimer).After != 10*time.Second {
		t.Fatal("shuffle timer not re-armed with the interval")
	}
	sh := out[1].(protocols.Send).Msg.(*Message).GetShuffle()
	if sh.GetOrigin().PeerID() != ids[0] {
		t.Fatal("shuffle origin is not the node")
	}
	// The reply: 7 new nodes; a full passive view evicts the nodes just sent first.
	sent := map[peer.ID]bool{}
	for _, n := range sh.GetNodes() {
		sent[n.PeerID()] = true
	}
	var fresh []*Node
	for i := 50; i < 57; i++ {
		fresh = append(fresh, NewNode(ids[i], nil, nil))
	}
	reply := &Message{Body: &Message_ShuffleReply{ShuffleReply: &ShuffleReply{Nodes: fresh, Nonce: sh.GetNonce()}}}
	wantLines(t, h.Handle(t0, recv(ids[3], reply)))
	pas := h.Passive()
	if len(pas) != 30 {
		t.Fatalf("passive view of %d after the reply, want 30", len(pas))
	}
	kept := map[peer.ID]bool{}
	for _, p := range pas {
		kept[p] = true
	}
	freshKept := 0
	for _, n := range fresh {
		if kept[n.PeerID()] {
			freshKept++
		}
	}
	evictedSent := 0
	for p := range sent {
		if !kept[p] && p != ids[0] && !h.isActive(p) {
			evictedSent++
		}
	}
	passiveSent := 0
	for p := range sent {
		if p != ids[0] && !h.isActive(p) {
			passiveSent++
		}
	}
	if passiveSent != 4 || evictedSent != passiveSent {
		t.Fatalf("%d of the %d passive nodes sent were evicted, want all 4 of them first", evictedSent, passiveSent)
	}
	// 7 arrivals: 4 evict the nodes sent, 3 evict at random (possibly an arrival).
	if freshKept < 4 {
		t.Fatalf("only %d of the 7 new nodes kept", freshKept)
	}
	// A stale reply is ignored.
	wantLines(t, h.Handle(t0, recv(ids[3], reply)))
}

func TestHyParViewShuffleAcceptAndForward(t *testing.T) {
	shuffle := func(ttl uint32) protocols.Input {
		return recv(ids[1], &Message{Body: &Message_Shuffle{Shuffle: &Shuffle{
			Origin: NewNode(ids[20], nil, nil), Nodes: []*Node{NewNode(ids[21], nil, nil), NewNode(ids[22], nil, nil)}, Ttl: ttl, Nonce: 7,
		}}})
	}
	t.Run("forward while ttl lasts", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, shuffle(4)), "send n2 SHUFFLE(2 nodes,ttl=3)")
	})
	t.Run("accept at the end of the walk", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		h.Handle(t0, neighbor(ids[30], false))
		h.Handle(t0, neighbor(ids[31], false))
		h.Handle(t0, neighbor(ids[32], false))
		h.Handle(t0, neighbor(ids[33], false))
		h.Handle(t0, neighbor(ids[34], false))
		h.Handle(t0, neighbor(ids[35], false))
		// active is n1 n2 n30 n31 n32 (5), passive n33 n34 n35
		wantLines(t, h.Handle(t0, shuffle(1)), "send n20 SHUFFLE_REPLY(3 nodes)", "close n20")
		if got := names(h.Passive()); got != "n33 n34 n35 n20 n21 n22" {
			t.Fatalf("passive [%s], want the origin and its nodes added", got)
		}
	})
}

func TestHyParViewLeave(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	h.Handle(t0, protocols.Start{})
	withActive(h, ids[1], ids[2])
	wantLines(t, h.Handle(t0, protocols.Leave{}),
		"send n1 DISCONNECT(alive=false)", "close n1", "link n1 false",
		"send n2 DISCONNECT(alive=false)", "close n2", "link n2 false",
		"cancel 1 -",
		"neighbours []")
	if out := h.Handle(t0, join(ids[3])); out != nil {
		t.Fatalf("after Leave the core answered %v", transcript(out))
	}
	// The receiving side forgets a node that leaves for good.
	g := newHV(t, HyParViewConfig{})
	g.Handle(t0, protocols.Start{})
	withActive(g, ids[1])
	g.Handle(t0, recv(ids[1], &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: false}}}))
	if len(g.Active())+len(g.Passive()) != 0 {
		t.Fatal("a node that left for good is still in a view")
	}
}

func TestHyParViewConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   HyParViewConfig
		field string
	}{
		{HyParViewConfig{ActiveSize: -1}, "ActiveSize"},
		{HyParViewConfig{PassiveSize: -3}, "PassiveSize"},
		{HyParViewConfig{ARWL: 2, PRWL: 3}, "PRWL"},
		{HyParViewConfig{ShuffleInterval: -time.Second}, "ShuffleInterval"},
		{HyParViewConfig{ShuffleActive: 40, ShufflePassive: 40}, "ShuffleActive"},
	} {
		err := tc.cfg.Validate()
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(ce.Field, tc.field) {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	if err := (HyParViewConfig{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	d := HyParViewConfig{}.WithDefaults()
	if d.ActiveSize != 5 || d.PassiveSize != 30 || d.ARWL != 6 || d.PRWL != 3 || d.ShuffleActive != 3 || d.ShufflePassive != 4 {
		t.Fatalf("defaults %+v are not the paper's", d)
	}
	if _, err := NewHyParView(&Node{Id: []byte("x")}, HyParViewConfig{}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("a self without a valid ID was accepted")
	}
}
