package membership

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// Helpers shared by the tests of this package (Newscast's and the fuzz test use them too).

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testIDs returns n fixed peer IDs: testIDs(k)[i] is the same for every k > i.
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

func names(ps []peer.ID) string {
	var s []string
	for _, p := range ps {
		s = append(s, name(p))
	}
	return strings.Join(s, " ")
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
			case hvTimerShuffle:
				lines = append(lines, "timer shuffle") // the first delay is random: checked apart
			case hvTimerNeighbor:
				lines = append(lines, fmt.Sprintf("timer neighbor %s %v", name(v.Timer.Peer), v.After))
			default:
				lines = append(lines, fmt.Sprintf("timer %d %s %v", v.Timer.Kind, name(v.Timer.Peer), v.After))
			}
		case protocols.CancelTimer:
			switch v.Timer.Kind {
			case hvTimerShuffle:
				lines = append(lines, "cancel shuffle")
			case hvTimerNeighbor:
				lines = append(lines, "cancel neighbor "+name(v.Timer.Peer))
			default:
				lines = append(lines, fmt.Sprintf("cancel %d %s", v.Timer.Kind, name(v.Timer.Peer)))
			}
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
	case *Message_Newscast:
		return fmt.Sprintf("NEWSCAST(%d items,reply=%v)", len(b.Newscast.GetItems()), b.Newscast.GetReply())
	}
	return "?"
}

func wantLines(t *testing.T, got []protocols.Output, want ...string) {
	t.Helper()
	g := transcript(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outputs:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

func recv(from peer.ID, m *Message) protocols.Input { return protocols.Receive{From: from, Msg: m} }

// HyParView inputs.

func neighbor(from peer.ID, high bool) protocols.Input {
	return recv(from, &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: NewNode(from, nil, nil), HighPriority: high}}})
}

func neighborReply(from peer.ID, accepted bool) protocols.Input {
	return recv(from, &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: NewNode(from, nil, nil), Accepted: accepted}}})
}

func join(from peer.ID) protocols.Input {
	return recv(from, &Message{Body: &Message_Join{Join: &Join{Sender: NewNode(from, nil, nil)}}})
}

func forwardJoin(from, joiner peer.ID, ttl uint32) protocols.Input {
	return recv(from, &Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: NewNode(joiner, nil, nil), Ttl: ttl}}})
}

func disconnect(from peer.ID, alive bool) protocols.Input {
	return recv(from, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: alive}}})
}

func shuffleMsg(from, origin peer.ID, nodes []peer.ID, ttl uint32, nonce uint64) protocols.Input {
	s := &Shuffle{Origin: NewNode(origin, nil, nil), Ttl: ttl, Nonce: nonce}
	for _, p := range nodes {
		s.Nodes = append(s.Nodes, NewNode(p, nil, nil))
	}
	return recv(from, &Message{Body: &Message_Shuffle{Shuffle: s}})
}

func hvTick() protocols.Input {
	return protocols.TimerFired{Timer: protocols.Timer{Kind: hvTimerShuffle}}
}

func hvTimeout(p peer.ID) protocols.Input {
	return protocols.TimerFired{Timer: protocols.Timer{Kind: hvTimerNeighbor, Peer: p}}
}

// newHV returns a started HyParView core of ids[0] without bootstrap peers.
func newHV(t *testing.T, cfg HyParViewConfig) *HyParView {
	t.Helper()
	h, err := NewHyParView(NewNode(ids[0], nil, nil), cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	h.Handle(t0, protocols.Start{})
	return h
}

// withActive makes h take the given peers as neighbours (high-priority NEIGHBOR).
func withActive(h *HyParView, ps ...peer.ID) {
	for _, p := range ps {
		h.Handle(t0, neighbor(p, true))
	}
}

// withPassive puts the given peers into h's passive view, in order, by SHUFFLEs that end
// at h (which never start NEIGHBOR requests).
func withPassive(h *HyParView, ps ...peer.ID) {
	for len(ps) > 0 {
		k := min(len(ps), h.shuffleLimit()+1)
		h.Handle(t0, shuffleMsg(ps[0], ps[0], ps[1:k], 0, 1))
		ps = ps[k:]
	}
}

func wantViews(t *testing.T, h *HyParView, active, passive string) {
	t.Helper()
	if a, p := names(h.Active()), names(h.Passive()); a != active || p != passive {
		t.Fatalf("views: active [%s] passive [%s], want active [%s] passive [%s]", a, p, active, passive)
	}
}

// sendTo returns the destination of the i-th output, which must be a Send.
func sendTo(t *testing.T, outs []protocols.Output, i int) peer.ID {
	t.Helper()
	if i >= len(outs) {
		t.Fatalf("no output %d in %v", i, transcript(outs))
	}
	s, ok := outs[i].(protocols.Send)
	if !ok {
		t.Fatalf("output %d is %s, want a send", i, transcript(outs)[i])
	}
	return s.To
}

// other returns the one of a, b that is not p.
func other(p, a, b peer.ID) peer.ID {
	if p == a {
		return b
	}
	return a
}

func TestHyParViewStartAndJoinContacts(t *testing.T) {
	t.Run("first node only sets its shuffle timer", func(t *testing.T) {
		h, _ := NewHyParView(NewNode(ids[0], nil, nil), HyParViewConfig{}, rand.New(rand.NewPCG(1, 2)))
		out := h.Handle(t0, protocols.Start{})
		wantLines(t, out, "timer shuffle")
		if d := out[0].(protocols.SetTimer).After; d < 5*time.Second || d > 10*time.Second {
			t.Fatalf("first shuffle after %v, want within [5s, 10s]", d)
		}
		wantLines(t, h.Handle(t0, protocols.Start{Bootstrap: ids[1:2]})) // a second Start is ignored
	})
	t.Run("unanswered contacts are replaced, answered ones are not", func(t *testing.T) {
		h, _ := NewHyParView(NewNode(ids[0], nil, nil), HyParViewConfig{}, rand.New(rand.NewPCG(1, 2)))
		wantLines(t, h.Handle(t0, protocols.Start{Bootstrap: []peer.ID{ids[1], ids[0], ids[2], ids[1]}}),
			"timer shuffle",
			"link n1 true",
			"send n1 JOIN",
			"neighbours [n1]")
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[1]}),
			"link n1 false",
			"link n2 true",
			"send n2 JOIN",
			"neighbours [n2]")
		// n2 answers (here: it shuffles with us), so it is no longer a pending contact:
		// its failure later is an ordinary one and does not start a new JOIN.
		h.Handle(t0, shuffleMsg(ids[2], ids[2], nil, 0, 9))
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[2]}),
			"link n2 false",
			"neighbours []")
		// Isolated (both views empty): the next shuffle tick joins again from the start
		// of the bootstrap list.
		wantLines(t, h.Handle(t0.Add(10*time.Second), hvTick()),
			"timer shuffle",
			"link n1 true",
			"send n1 JOIN",
			"neighbours [n1]")
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[1]}),
			"link n1 false",
			"link n2 true",
			"send n2 JOIN",
			"neighbours [n2]")
		// The list is exhausted: wait for the next tick.
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[2]}),
			"link n2 false",
			"neighbours []")
	})
}

func TestHyParViewJoinAtContact(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	withActive(h, ids[1], ids[2])
	// The contact takes the joiner in, acknowledges with its own descriptor (the joiner
	// took the contact in when it sent JOIN, knowing only its ID), and starts a walk from
	// each other neighbour.
	wantLines(t, h.Handle(t0, join(ids[9])),
		"link n9 true",
		"send n9 NEIGHBOR_REPLY(true)",
		"send n1 FORWARD_JOIN(n9,ttl=6)",
		"send n2 FORWARD_JOIN(n9,ttl=6)",
		"neighbours [n1 n2 n9]")

	// On the joiner's side the acknowledgement only refreshes the contact's descriptor.
	j, _ := NewHyParView(NewNode(ids[9], nil, nil), HyParViewConfig{}, rand.New(rand.NewPCG(5, 5)))
	j.Handle(t0, protocols.Start{Bootstrap: []peer.ID{ids[0]}})
	rec := []byte("signed record")
	ack := &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: NewNode(ids[0], rec, nil), Accepted: true}}}
	wantLines(t, j.Handle(t0, recv(ids[0], ack)))
	if string(j.active[0].n.GetRecord()) != string(rec) {
		t.Fatal("the contact's descriptor was not refreshed from its acknowledgement")
	}
}

func TestHyParViewJoinEvictsWhenFull(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 2})
	withActive(h, ids[1], ids[2])
	out := h.Handle(t0, join(ids[9]))
	victim := sendTo(t, out, 0)
	rest := other(victim, ids[1], ids[2])
	if victim != ids[1] && victim != ids[2] {
		t.Fatalf("evicted %s, want n1 or n2", name(victim))
	}
	wantLines(t, out,
		"send "+name(victim)+" DISCONNECT(alive=true)",
		"close "+name(victim),
		"link "+name(victim)+" false",
		"link n9 true",
		"send n9 NEIGHBOR_REPLY(true)",
		"send "+name(rest)+" FORWARD_JOIN(n9,ttl=6)",
		"neighbours ["+name(rest)+" n9]")
	wantViews(t, h, name(rest)+" n9", name(victim))
	// The victim is not asked straight back into the slot that frees up.
	wantLines(t, h.Handle(t0, disconnect(rest, true)),
		"link "+name(rest)+" false", "close "+name(rest), "neighbours [n9]")

	// The victim is random.
	victims := map[peer.ID]bool{}
	for seed := range uint64(20) {
		h, _ := NewHyParView(NewNode(ids[0], nil, nil), HyParViewConfig{ActiveSize: 2}, rand.New(rand.NewPCG(seed, 0)))
		h.Handle(t0, protocols.Start{})
		withActive(h, ids[1], ids[2])
		victims[sendTo(t, h.Handle(t0, join(ids[9])), 0)] = true
	}
	if len(victims) != 2 {
		t.Fatalf("over 20 seeds only %d distinct victims", len(victims))
	}
}

func TestHyParViewRepairsHalfLinks(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 2})
	withActive(h, ids[1])
	// n7 walks a joiner to us and n8 shuffles with us as if we were their neighbours:
	// we are not, so they are told to drop their half of the link. The messages are
	// handled all the same.
	wantLines(t, h.Handle(t0, forwardJoin(ids[7], ids[9], 0)),
		"send n7 DISCONNECT(alive=true)",
		"link n9 true", "send n9 NEIGHBOR(high)", "neighbours [n1 n9]")
	wantLines(t, h.Handle(t0, shuffleMsg(ids[8], ids[8], nil, 0, 1)),
		"send n8 DISCONNECT(alive=true)",
		"send n8 SHUFFLE_REPLY(0 nodes)", "close n8")
	// A node we asked to become a neighbour may already count us as one.
	wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[9]}),
		"link n9 false", "send n8 NEIGHBOR(low)", "timer neighbor n8 5s", "neighbours [n1]")
	wantLines(t, h.Handle(t0, shuffleMsg(ids[8], ids[8], nil, 0, 1)),
		"send n8 SHUFFLE_REPLY(0 nodes)", "close n8")
}

func TestHyParViewForwardJoin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		active  []peer.ID
		from    peer.ID
		joiner  peer.ID
		ttl     uint32
		want    []string
		passive string
	}{
		{"the walk ends at ttl 0", ids[1:3], ids[1], ids[9], 0,
			[]string{"link n9 true", "send n9 NEIGHBOR(high)", "neighbours [n1 n2 n9]"}, ""},
		{"the walk ends where the sender is the only neighbour", ids[1:2], ids[1], ids[9], 5,
			[]string{"link n9 true", "send n9 NEIGHBOR(high)", "neighbours [n1 n9]"}, ""},
		{"at ttl PRWL the joiner enters the passive view and the walk goes on", ids[1:3], ids[1], ids[9], 3,
			[]string{"send n2 FORWARD_JOIN(n9,ttl=2)"}, "n9"},
		{"elsewhere the walk goes on, never back to the sender", ids[1:3], ids[1], ids[9], 5,
			[]string{"send n2 FORWARD_JOIN(n9,ttl=4)"}, ""},
		{"nor to the joiner", []peer.ID{ids[1], ids[2]}, ids[2], ids[1], 5, nil, ""},
		{"an absurd ttl is clamped to ARWL", ids[1:3], ids[1], ids[9], 1 << 30,
			[]string{"send n2 FORWARD_JOIN(n9,ttl=5)"}, ""},
		{"a joiner that is a neighbour already changes nothing", ids[1:3], ids[1], ids[2], 0, nil, ""},
		{"a walk about this very node changes nothing", ids[1:3], ids[1], ids[0], 0, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHV(t, HyParViewConfig{})
			withActive(h, tc.active...)
			wantLines(t, h.Handle(t0, forwardJoin(tc.from, tc.joiner, tc.ttl)), tc.want...)
			if got := names(h.Passive()); got != tc.passive {
				t.Fatalf("passive [%s], want [%s]", got, tc.passive)
			}
		})
	}
}

func TestHyParViewNeighborRequests(t *testing.T) {
	t.Run("low priority fills a free slot", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1])
		wantLines(t, h.Handle(t0, neighbor(ids[3], false)),
			"link n3 true",
			"send n3 NEIGHBOR_REPLY(true)",
			"neighbours [n1 n3]")
	})
	t.Run("low priority is refused by a full view", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, neighbor(ids[3], false)), "send n3 NEIGHBOR_REPLY(false)")
		wantViews(t, h, "n1 n2", "")
	})
	t.Run("a neighbour asking again is told yes and nothing changes", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1], ids[2])
		wantLines(t, h.Handle(t0, neighbor(ids[2], false)), "send n2 NEIGHBOR_REPLY(true)")
	})
	t.Run("high priority is accepted by a full view, evicting a neighbour", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1], ids[2])
		withPassive(h, ids[5])
		out := h.Handle(t0, neighbor(ids[4], true))
		victim := sendTo(t, out, 0)
		rest := other(victim, ids[1], ids[2])
		wantLines(t, out,
			"send "+name(victim)+" DISCONNECT(alive=true)",
			"close "+name(victim),
			"link "+name(victim)+" false",
			"link n4 true",
			"send n4 NEIGHBOR_REPLY(true)",
			"neighbours ["+name(rest)+" n4]")
		wantViews(t, h, name(rest)+" n4", "n5 "+name(victim))
	})
	t.Run("a passive node that is accepted leaves the passive view", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1])
		withPassive(h, ids[5], ids[6])
		wantLines(t, h.Handle(t0, neighbor(ids[5], false)),
			"link n5 true", "send n5 NEIGHBOR_REPLY(true)", "neighbours [n1 n5]")
		wantViews(t, h, "n1 n5", "n6")
	})
}

func TestHyParViewNeighborReplies(t *testing.T) {
	// Each case: ActiveSize 2, neighbours n1 n2, passive n3; n2 fails, so n3 is asked.
	setup := func(t *testing.T) *HyParView {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1], ids[2])
		withPassive(h, ids[3])
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[2]}),
			"link n2 false",
			"send n3 NEIGHBOR(low)",
			"timer neighbor n3 5s",
			"neighbours [n1]")
		return h
	}
	t.Run("accepted", func(t *testing.T) {
		h := setup(t)
		wantLines(t, h.Handle(t0, neighborReply(ids[3], true)),
			"cancel neighbor n3", "link n3 true", "neighbours [n1 n3]")
		wantViews(t, h, "n1 n3", "")
	})
	t.Run("accepted after the view filled up: evict", func(t *testing.T) {
		h := setup(t)
		h.Handle(t0, neighbor(ids[4], false)) // takes the free slot
		out := h.Handle(t0, neighborReply(ids[3], true))
		victim := sendTo(t, out, 1)
		rest := other(victim, ids[1], ids[4])
		wantLines(t, out,
			"cancel neighbor n3",
			"send "+name(victim)+" DISCONNECT(alive=true)",
			"close "+name(victim),
			"link "+name(victim)+" false",
			"link n3 true",
			"neighbours ["+name(rest)+" n3]")
	})
	t.Run("refused: stays passive, not asked again before the next shuffle", func(t *testing.T) {
		h := setup(t)
		wantLines(t, h.Handle(t0, neighborReply(ids[3], false)), "cancel neighbor n3")
		wantViews(t, h, "n1", "n3")
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[9]})) // would refill
		out := h.Handle(t0.Add(10*time.Second), hvTick())
		if g := transcript(out); len(g) != 4 || g[1] != "send n3 NEIGHBOR(low)" || g[2] != "timer neighbor n3 5s" || g[3] != "send n1 SHUFFLE(2 nodes,ttl=6)" {
			t.Fatalf("shuffle tick: %v, want n3 asked again and a shuffle", g)
		}
	})
	t.Run("late acceptance with a free slot is taken", func(t *testing.T) {
		h := setup(t)
		wantLines(t, h.Handle(t0.Add(5*time.Second), hvTimeout(ids[3]))) // n3 taken for dead
		wantViews(t, h, "n1", "")
		wantLines(t, h.Handle(t0.Add(6*time.Second), neighborReply(ids[3], true)),
			"link n3 true", "neighbours [n1 n3]")
	})
	t.Run("late acceptance without a free slot is undone", func(t *testing.T) {
		h := setup(t)
		h.Handle(t0.Add(5*time.Second), hvTimeout(ids[3]))
		h.Handle(t0, neighbor(ids[4], false))
		wantLines(t, h.Handle(t0.Add(6*time.Second), neighborReply(ids[3], true)),
			"send n3 DISCONNECT(alive=true)", "close n3")
		wantViews(t, h, "n1 n4", "n3")
	})
	t.Run("an acceptance nobody asked for is undone", func(t *testing.T) {
		h := setup(t)
		wantLines(t, h.Handle(t0, neighborReply(ids[7], true)),
			"send n7 DISCONNECT(alive=true)", "close n7")
		wantViews(t, h, "n1", "n3 n7")
	})
	t.Run("refusing a high-priority request counts as a failure", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 1})
		withActive(h, ids[1])
		withPassive(h, ids[3])
		wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[1]}),
			"link n1 false", "send n3 NEIGHBOR(high)", "timer neighbor n3 5s", "neighbours []")
		wantLines(t, h.Handle(t0, neighborReply(ids[3], false)), "cancel neighbor n3")
		wantViews(t, h, "", "")
	})
}

func TestHyParViewDisconnect(t *testing.T) {
	h := newHV(t, HyParViewConfig{ActiveSize: 2})
	withActive(h, ids[1], ids[2])
	withPassive(h, ids[3])
	// n1 drops us: it goes to the passive view, and a passive node other than n1 is
	// asked to fill the slot.
	wantLines(t, h.Handle(t0, disconnect(ids[1], true)),
		"link n1 false",
		"close n1",
		"send n3 NEIGHBOR(low)",
		"timer neighbor n3 5s",
		"neighbours [n2]")
	wantViews(t, h, "n2", "n3 n1")
	wantLines(t, h.Handle(t0, neighborReply(ids[3], true)),
		"cancel neighbor n3", "link n3 true", "neighbours [n2 n3]")
	// n2 leaves the network for good: it is forgotten. n1 dropped us lately: it is not
	// asked back with low priority before the next shuffle.
	wantLines(t, h.Handle(t0, disconnect(ids[2], false)),
		"link n2 false", "close n2", "neighbours [n3]")
	wantViews(t, h, "n3", "n1")
	// With no neighbour left, even n1 and n3, which dropped us, are asked: a
	// high-priority request cannot be refused.
	out := h.Handle(t0, disconnect(ids[3], true))
	a, b := sendTo(t, out, 2), sendTo(t, out, 4)
	wantLines(t, out,
		"link n3 false", "close n3",
		"send "+name(a)+" NEIGHBOR(high)", "timer neighbor "+name(a)+" 5s",
		"send "+name(b)+" NEIGHBOR(high)", "timer neighbor "+name(b)+" 5s",
		"neighbours []")
	if !sameSet([]peer.ID{a, b}, []peer.ID{ids[1], ids[3]}) {
		t.Fatalf("asked %s and %s, want n1 and n3", name(a), name(b))
	}
}

func TestHyParViewFailureRecovery(t *testing.T) {
	t.Run("promotion, timeout, next candidate", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 1})
		withActive(h, ids[1])
		withPassive(h, ids[2], ids[3])
		out := h.Handle(t0, protocols.PeerDown{Peer: ids[1]})
		a := sendTo(t, out, 1)
		b := other(a, ids[2], ids[3])
		wantLines(t, out,
			"link n1 false",
			"send "+name(a)+" NEIGHBOR(high)",
			"timer neighbor "+name(a)+" 5s",
			"neighbours []")
		// No answer in time: a is taken for dead, b is asked.
		wantLines(t, h.Handle(t0.Add(5*time.Second), hvTimeout(a)),
			"send "+name(b)+" NEIGHBOR(high)",
			"timer neighbor "+name(b)+" 5s")
		wantViews(t, h, "", name(b))
		// A timer of a request that is no longer outstanding does nothing.
		wantLines(t, h.Handle(t0.Add(5*time.Second), hvTimeout(a)))
		wantLines(t, h.Handle(t0.Add(6*time.Second), neighborReply(b, true)),
			"cancel neighbor "+name(b), "link "+name(b)+" true", "neighbours ["+name(b)+"]")
		wantViews(t, h, name(b), "")
	})
	t.Run("several slots are refilled in parallel", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 3})
		withActive(h, ids[1])
		withPassive(h, ids[2:7]...)
		out := h.Handle(t0, protocols.PeerDown{Peer: ids[1]})
		g := transcript(out)
		asked := []peer.ID{sendTo(t, out, 1), sendTo(t, out, 3), sendTo(t, out, 5)}
		if len(g) != 8 || g[0] != "link n1 false" || g[7] != "neighbours []" ||
			asked[0] == asked[1] || asked[1] == asked[2] || asked[0] == asked[2] {
			t.Fatalf("outputs %v, want three high-priority requests to distinct passive nodes", g)
		}
		for i, p := range asked {
			if g[1+2*i] != "send "+name(p)+" NEIGHBOR(high)" || g[2+2*i] != "timer neighbor "+name(p)+" 5s" {
				t.Fatalf("outputs %v, want three high-priority requests", g)
			}
		}
		// One candidate turns out dead: dropped, and another one asked.
		out = h.Handle(t0, protocols.PeerDown{Peer: asked[1]})
		next := sendTo(t, out, 1)
		wantLines(t, out, "cancel neighbor "+name(asked[1]), "send "+name(next)+" NEIGHBOR(high)", "timer neighbor "+name(next)+" 5s")
		if slices.Contains(asked, next) || slices.Contains(h.Passive(), asked[1]) {
			t.Fatalf("asked %s after %s failed; passive [%s]", name(next), name(asked[1]), names(h.Passive()))
		}
		// The others accept: with every slot taken or asked for, nothing more is sent.
		wantLines(t, h.Handle(t0, neighborReply(asked[0], true)),
			"cancel neighbor "+name(asked[0]), "link "+name(asked[0])+" true", "neighbours ["+name(asked[0])+"]")
		wantLines(t, h.Handle(t0, neighborReply(next, true)),
			"cancel neighbor "+name(next), "link "+name(next)+" true", "neighbours ["+name(asked[0])+" "+name(next)+"]")
	})
}

func TestHyParViewShuffleStart(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	withActive(h, ids[1:6]...)
	withPassive(h, ids[10:40]...)
	wantViews(t, h, "n1 n2 n3 n4 n5", names(ids[10:40]))
	before := h.Passive()
	out := h.Handle(t0.Add(10*time.Second), hvTick())
	target := sendTo(t, out, 1)
	wantLines(t, out, "timer shuffle", "send "+name(target)+" SHUFFLE(7 nodes,ttl=6)")
	if out[0].(protocols.SetTimer).After != 10*time.Second {
		t.Fatal("shuffle timer not re-armed with ShuffleInterval")
	}
	sh := out[1].(protocols.Send).Msg.(*Message).GetShuffle()
	if sh.GetOrigin().PeerID() != ids[0] || sh.GetNonce() == 0 {
		t.Fatalf("shuffle origin %s nonce %d", name(sh.GetOrigin().PeerID()), sh.GetNonce())
	}
	sent := nodeIDs(sh.GetNodes())
	var fromActive, fromPassive []peer.ID
	for _, p := range sent {
		switch {
		case slices.Contains(h.Active(), p):
			fromActive = append(fromActive, p)
		case slices.Contains(before, p):
			fromPassive = append(fromPassive, p)
		}
	}
	if len(fromActive) != 3 || len(fromPassive) != 4 || len(slices.Compact(slices.Sorted(slices.Values(sent)))) != 7 {
		t.Fatalf("shuffle carries [%s], want 3 distinct active and 4 distinct passive nodes", names(sent))
	}

	// The reply: 4 new nodes replace exactly the 4 passive nodes sent.
	fresh := []*Node{NewNode(ids[50], nil, nil), NewNode(ids[51], nil, nil), NewNode(ids[52], nil, nil), NewNode(ids[53], nil, nil)}
	reply := &Message{Body: &Message_ShuffleReply{ShuffleReply: &ShuffleReply{Nodes: fresh, Nonce: sh.GetNonce()}}}
	wrong := &Message{Body: &Message_ShuffleReply{ShuffleReply: &ShuffleReply{Nodes: fresh, Nonce: sh.GetNonce() + 2}}}
	wantLines(t, h.Handle(t0, recv(target, wrong)))
	if !slices.Equal(h.Passive(), before) {
		t.Fatal("a reply with an unknown nonce changed the passive view")
	}
	wantLines(t, h.Handle(t0, recv(target, proto.Clone(reply).(*Message))))
	want := slices.DeleteFunc(slices.Clone(before), func(p peer.ID) bool { return slices.Contains(fromPassive, p) })
	want = append(want, ids[50:54]...)
	if got := h.Passive(); !sameSet(got, want) {
		t.Fatalf("passive after the reply [%s], want [%s]", names(got), names(want))
	}
	// Only one reply per shuffle is taken.
	after := h.Passive()
	wantLines(t, h.Handle(t0, recv(target, proto.Clone(reply).(*Message))))
	if !slices.Equal(h.Passive(), after) {
		t.Fatal("a second reply to the same shuffle changed the passive view")
	}

	t.Run("small views, configured ttl", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2, ShuffleTTL: 2})
		withActive(h, ids[1], ids[2])
		withPassive(h, ids[3])
		out := h.Handle(t0.Add(10*time.Second), hvTick())
		wantLines(t, out, "timer shuffle", "send "+name(sendTo(t, out, 1))+" SHUFFLE(3 nodes,ttl=2)")
	})
	t.Run("no neighbour, no shuffle", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		wantLines(t, h.Handle(t0.Add(10*time.Second), hvTick()), "timer shuffle")
	})
}

func TestHyParViewShuffleReceive(t *testing.T) {
	t.Run("forward while the ttl lasts, never to the sender or the origin", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		withActive(h, ids[1], ids[2], ids[20])
		wantLines(t, h.Handle(t0, shuffleMsg(ids[1], ids[20], ids[21:23], 4, 7)), "send n2 SHUFFLE(2 nodes,ttl=3)")
		wantLines(t, h.Handle(t0, shuffleMsg(ids[1], ids[20], ids[21:23], 1<<20, 7)), "send n2 SHUFFLE(2 nodes,ttl=5)")
		wantViews(t, h, "n1 n2 n20", "")
	})
	t.Run("accept at the end of the walk", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{ActiveSize: 2})
		withActive(h, ids[1], ids[2])
		withPassive(h, ids[33], ids[34], ids[35])
		out := h.Handle(t0, shuffleMsg(ids[1], ids[20], ids[21:23], 1, 7))
		wantLines(t, out, "send n20 SHUFFLE_REPLY(3 nodes)", "close n20")
		r := out[0].(protocols.Send).Msg.(*Message).GetShuffleReply()
		if r.GetNonce() != 7 || !sameSet(nodeIDs(r.GetNodes()), []peer.ID{ids[33], ids[34], ids[35]}) {
			t.Fatalf("reply nonce %d nodes [%s]", r.GetNonce(), names(nodeIDs(r.GetNodes())))
		}
		wantViews(t, h, "n1 n2", "n33 n34 n35 n20 n21 n22")
	})
	t.Run("accept where the sender is the only neighbour; the origin is a neighbour", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		withActive(h, ids[1])
		wantLines(t, h.Handle(t0, shuffleMsg(ids[1], ids[1], ids[21:23], 5, 7)), "send n1 SHUFFLE_REPLY(0 nodes)")
		wantViews(t, h, "n1", "n21 n22")
	})
	t.Run("too many nodes are cut, bad ones skipped", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{})
		withActive(h, ids[1])
		in := shuffleMsg(ids[1], ids[20], ids[21:41], 0, 7)
		s := in.(protocols.Receive).Msg.(*Message).GetShuffle()
		s.Nodes[1] = &Node{Id: []byte("junk")}
		s.Nodes[2] = NewNode(ids[0], nil, nil)
		wantLines(t, h.Handle(t0, in), "send n20 SHUFFLE_REPLY(0 nodes)", "close n20")
		// ka+kp+1 = 8 nodes are read: n21, junk, n0 (itself), n24..n28.
		wantViews(t, h, "n1", "n20 n21 n24 n25 n26 n27 n28")
	})
	t.Run("a full passive view evicts the nodes sent in the reply first", func(t *testing.T) {
		h := newHV(t, HyParViewConfig{PassiveSize: 5})
		withActive(h, ids[1])
		withPassive(h, ids[30:35]...)
		out := h.Handle(t0, shuffleMsg(ids[1], ids[20], ids[21:23], 0, 7))
		sent := nodeIDs(out[0].(protocols.Send).Msg.(*Message).GetShuffleReply().GetNodes())
		want := slices.DeleteFunc(slices.Clone(ids[30:35]), func(p peer.ID) bool { return slices.Contains(sent, p) })
		want = append(want, ids[20], ids[21], ids[22])
		if len(sent) != 3 || !sameSet(h.Passive(), want) {
			t.Fatalf("sent [%s], passive [%s], want [%s]", names(sent), names(h.Passive()), names(want))
		}
	})
}

func TestHyParViewIgnoresNonsense(t *testing.T) {
	from := ids[5]
	junk := &Node{Id: []byte("junk")}
	forged := NewNode(ids[6], nil, nil)
	for i, m := range []proto.Message{
		&Message{},
		&Message{Body: &Message_Join{}},
		&Message{Body: &Message_Join{Join: &Join{}}},
		&Message{Body: &Message_Join{Join: &Join{Sender: junk}}},
		&Message{Body: &Message_Join{Join: &Join{Sender: forged}}},
		&Message{Body: &Message_ForwardJoin{}},
		&Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Ttl: 3}}},
		&Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: junk}}},
		&Message{Body: &Message_Neighbor{}},
		&Message{Body: &Message_Neighbor{Neighbor: &Neighbor{HighPriority: true}}},
		&Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: forged, HighPriority: true}}},
		&Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: junk, HighPriority: true}}},
		&Message{Body: &Message_NeighborReply{}},
		&Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: forged, Accepted: true}}},
		&Message{Body: &Message_Shuffle{}},
		&Message{Body: &Message_Shuffle{Shuffle: &Shuffle{Nodes: []*Node{forged}}}},
		&Message{Body: &Message_Shuffle{Shuffle: &Shuffle{Origin: junk}}},
		&Message{Body: &Message_Shuffle{Shuffle: &Shuffle{Origin: NewNode(ids[0], nil, nil)}}},
		&Message{Body: &Message_ShuffleReply{}},
		&Message{Body: &Message_ShuffleReply{ShuffleReply: &ShuffleReply{Nodes: []*Node{forged}, Nonce: 12345}}},
		&Message{Body: &Message_Newscast{Newscast: &NewscastExchange{Sender: forged}}},
		NewNode(ids[7], nil, nil), // not a membership message at all
	} {
		h := newHV(t, HyParViewConfig{})
		withActive(h, ids[1])
		if out := h.Handle(t0, protocols.Receive{From: from, Msg: m}); len(out) != 0 {
			t.Errorf("message %d (%v): outputs %v, want none", i, m, transcript(out))
		}
		wantViews(t, h, "n1", "")
	}
	h := newHV(t, HyParViewConfig{})
	wantLines(t, h.Handle(t0, neighbor(ids[0], true))) // from itself
	wantLines(t, h.Handle(t0, protocols.Receive{From: "", Msg: &Message{Body: &Message_Join{Join: &Join{Sender: forged}}}}))
	wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ""}))
	wantLines(t, h.Handle(t0, protocols.TimerFired{Timer: protocols.Timer{Kind: 99}}))
}

func TestHyParViewLeave(t *testing.T) {
	h := newHV(t, HyParViewConfig{})
	withActive(h, ids[1], ids[2])
	withPassive(h, ids[3])
	wantLines(t, h.Handle(t0, protocols.PeerDown{Peer: ids[9]}), "send n3 NEIGHBOR(low)", "timer neighbor n3 5s")
	wantLines(t, h.Handle(t0, protocols.Leave{}),
		"send n1 DISCONNECT(alive=false)", "close n1", "link n1 false",
		"send n2 DISCONNECT(alive=false)", "close n2", "link n2 false",
		"send n3 DISCONNECT(alive=false)", "close n3", "cancel neighbor n3",
		"cancel shuffle",
		"neighbours []")
	for _, in := range []protocols.Input{
		join(ids[4]), neighbor(ids[4], true), protocols.Start{Bootstrap: ids[4:5]}, hvTick(), hvTimeout(ids[3]),
		protocols.PeerDown{Peer: ids[1]}, protocols.SelfUpdated{Meta: []byte("x")}, protocols.Leave{},
	} {
		if out := h.Handle(t0, in); out != nil {
			t.Fatalf("after Leave, %T gave %v", in, transcript(out))
		}
	}
	wantViews(t, h, "", "")

	t.Run("the other side forgets a node that left", func(t *testing.T) {
		g := newHV(t, HyParViewConfig{})
		withActive(g, ids[1])
		withPassive(g, ids[2])
		wantLines(t, g.Handle(t0, disconnect(ids[2], false))) // passive: just forgotten
		wantLines(t, g.Handle(t0, disconnect(ids[1], false)), "link n1 false", "close n1", "neighbours []")
		wantViews(t, g, "", "")
	})
}

func TestHyParViewDescriptors(t *testing.T) {
	h, _ := NewHyParView(NewNode(ids[0], nil, []byte("v1")), HyParViewConfig{}, rand.New(rand.NewPCG(1, 2)))
	out := h.Handle(t0, protocols.Start{Bootstrap: ids[1:2]})
	j := out[2].(protocols.Send).Msg.(*Message).GetJoin().GetSender()
	if string(j.GetMeta()) != "v1" {
		t.Fatalf("JOIN sender meta %q, want v1", j.GetMeta())
	}
	j.Meta[0] = 'X' // the driver owns what was sent: the core must not see this
	rec, meta := []byte("record"), []byte("v2")
	wantLines(t, h.Handle(t0, protocols.SelfUpdated{Record: rec, Meta: meta}))
	rec[0], meta[0] = 'X', 'X'
	// The contact answers with its own descriptor, which replaces the bare one.
	out = h.Handle(t0, recv(ids[1], &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: NewNode(ids[1], []byte("r1"), []byte("m1"))}}}))
	s := out[0].(protocols.Send).Msg.(*Message).GetNeighborReply().GetSender()
	if string(s.GetRecord()) != "record" || string(s.GetMeta()) != "v2" {
		t.Fatalf("reply sender record %q meta %q, want the updated ones", s.GetRecord(), s.GetMeta())
	}
	out = h.Handle(t0, join(ids[2]))
	nc := out[len(out)-1].(NeighboursChanged)
	if len(nc.Nodes) != 2 || string(nc.Nodes[0].GetRecord()) != "r1" || string(nc.Nodes[0].GetMeta()) != "m1" {
		t.Fatalf("neighbours %v, want n1 with its record and meta", nc.Nodes)
	}
	nc.Nodes[0].Meta[0] = 'X'
	fj := out[2].(protocols.Send).Msg.(*Message).GetForwardJoin().GetJoiner() // after the link and the JOIN acknowledgement
	fj.Id = []byte("mangled")
	out = h.Handle(t0, join(ids[3]))
	nc = out[len(out)-1].(NeighboursChanged)
	if string(nc.Nodes[0].GetMeta()) != "m1" || nc.Nodes[1].PeerID() != ids[2] {
		t.Fatalf("neighbours %v: a descriptor handed out is shared with the core", nc.Nodes)
	}
}

func TestHyParViewConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   HyParViewConfig
		field string
	}{
		{HyParViewConfig{ActiveSize: -1}, "ActiveSize"},
		{HyParViewConfig{PassiveSize: -3}, "PassiveSize"},
		{HyParViewConfig{ARWL: -1}, "ARWL"},
		{HyParViewConfig{PRWL: -1}, "PRWL"},
		{HyParViewConfig{ShuffleActive: -1}, "ShuffleActive"},
		{HyParViewConfig{ShufflePassive: -1}, "ShufflePassive"},
		{HyParViewConfig{ShuffleTTL: -1}, "ShuffleTTL"},
		{HyParViewConfig{ShuffleInterval: -time.Second}, "ShuffleInterval"},
		{HyParViewConfig{NeighborTimeout: -time.Second}, "NeighborTimeout"},
		{HyParViewConfig{ARWL: 2, PRWL: 3}, "PRWL"},
		{HyParViewConfig{PRWL: 7}, "PRWL"}, // ARWL defaults to 6
		{HyParViewConfig{ShuffleActive: 300}, "ShuffleActive"},
		{HyParViewConfig{ShufflePassive: 300}, "ShufflePassive"},
	} {
		err := tc.cfg.Validate()
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || ce.Field != "HyParViewConfig."+tc.field {
			t.Errorf("%+v: %v, want an error naming HyParViewConfig.%s", tc.cfg, err, tc.field)
		}
		if _, err := NewHyParView(NewNode(ids[0], nil, nil), tc.cfg, rand.New(rand.NewPCG(1, 1))); err == nil {
			t.Errorf("%+v: NewHyParView accepted it", tc.cfg)
		}
	}
	if err := (HyParViewConfig{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	d := HyParViewConfig{}.WithDefaults()
	if d != (HyParViewConfig{ActiveSize: 5, PassiveSize: 30, ARWL: 6, PRWL: 3, ShuffleActive: 3, ShufflePassive: 4,
		ShuffleTTL: 6, ShuffleInterval: 10 * time.Second, NeighborTimeout: 5 * time.Second}) {
		t.Fatalf("defaults %+v are not the paper's", d)
	}
	if d := (HyParViewConfig{ARWL: 4}).WithDefaults(); d.ShuffleTTL != 4 {
		t.Fatalf("ShuffleTTL defaults to %d, want ARWL (4)", d.ShuffleTTL)
	}
	if _, err := NewHyParView(&Node{Id: []byte("x")}, HyParViewConfig{}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("a self without a valid ID was accepted")
	}
	if _, err := NewHyParView(NewNode(ids[0], nil, nil), HyParViewConfig{}, nil); err == nil {
		t.Fatal("a nil rng was accepted")
	}
}

func sameSet(a, b []peer.ID) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// hvNet is a tiny network of HyParView cores for tests: a FIFO queue of inputs, delivery
// without delay (a message is encoded and decoded on the way), a fake clock that only
// timers move, and every output checked against the core's views as it comes.
type hvNet struct {
	t      testing.TB
	ids    []peer.ID
	index  map[peer.ID]int // lookups only
	cores  []*HyParView
	alive  []bool
	live   []bool      // started and not crashed
	links  [][]peer.ID // Link{Up} per node, in order
	timers [][]hvNetTimer
	queue  []hvNetEvent
	dirty  []int // nodes that took an input since the last check
	now    time.Time
	seq    uint64
	trace  hash.Hash64
	buf    []byte
}

type hvNetTimer struct {
	timer protocols.Timer
	at    time.Time
	seq   uint64
}

type hvNetEvent struct {
	to, from int // from is -1 for anything but a message
	in       protocols.Input
}

func newHVNet(t testing.TB, seed uint64, n int, cfg HyParViewConfig) *hvNet {
	net := &hvNet{t: t, ids: testIDs(n), index: map[peer.ID]int{}, now: t0, trace: fnv.New64a()}
	for i, id := range net.ids {
		c, err := NewHyParView(NewNode(id, nil, nil), cfg, rand.New(rand.NewPCG(seed, uint64(i))))
		if err != nil {
			t.Fatal(err)
		}
		net.index[id] = i
		net.cores = append(net.cores, c)
	}
	net.alive = make([]bool, n)
	net.live = make([]bool, n)
	net.links = make([][]peer.ID, n)
	net.timers = make([][]hvNetTimer, n)
	return net
}

func (n *hvNet) mix(vs ...any) {
	for _, v := range vs {
		switch v := v.(type) {
		case int:
			n.buf = binary.BigEndian.AppendUint64(n.buf[:0], uint64(v))
		case uint64:
			n.buf = binary.BigEndian.AppendUint64(n.buf[:0], v)
		case string:
			n.buf = append(n.buf[:0], v...)
		case []byte:
			n.buf = append(n.buf[:0], v...)
		}
		n.trace.Write(n.buf)
	}
}

func (n *hvNet) start(i int, bootstrap ...peer.ID) {
	n.alive[i], n.live[i] = true, true
	n.handle(i, protocols.Start{Bootstrap: bootstrap})
	n.drain()
}

// handle gives one input to node i and carries out its outputs.
func (n *hvNet) handle(i int, in protocols.Input) {
	t, c := n.t, n.cores[i]
	if !slices.Contains(n.dirty, i) {
		n.dirty = append(n.dirty, i)
	}
	before := c.Active()
	switch v := in.(type) {
	case protocols.Receive:
		n.mix(i, "recv", n.index[v.From])
	case protocols.TimerFired:
		n.mix(i, "timer", int(v.Timer.Kind), string(v.Timer.Peer))
	case protocols.PeerDown:
		n.mix(i, "down", string(v.Peer))
	default:
		n.mix(i, fmt.Sprintf("%T", in))
	}
	outs := c.Handle(n.now, in)
	events := 0
	for k, o := range outs {
		switch o := o.(type) {
		case protocols.Send:
			if o.To == n.ids[i] {
				t.Fatalf("%s sends to itself", name(o.To))
			}
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(o.Msg)
			if err != nil {
				t.Fatal(err)
			}
			n.mix("send", string(o.To), b)
			j, ok := n.index[o.To]
			if !ok || !n.alive[j] {
				n.queue = append(n.queue, hvNetEvent{to: i, from: -1, in: protocols.PeerDown{Peer: o.To}})
				continue
			}
			m := new(Message)
			if err := proto.Unmarshal(b, m); err != nil {
				t.Fatal(err)
			}
			n.queue = append(n.queue, hvNetEvent{to: j, from: i, in: protocols.Receive{From: n.ids[i], Msg: m}})
		case protocols.Close:
			n.mix("close", string(o.Peer))
		case protocols.Link:
			n.mix("link", string(o.Peer), fmt.Sprint(o.Up))
			k := slices.Index(n.links[i], o.Peer)
			if o.Up == (k >= 0) {
				t.Fatalf("node %d: Link{%s, %v} repeats the link's state", i, o.Peer.ShortString(), o.Up)
			}
			if o.Up {
				n.links[i] = append(n.links[i], o.Peer)
			} else {
				n.links[i] = slices.Delete(n.links[i], k, k+1)
			}
		case protocols.SetTimer:
			n.mix("set", int(o.Timer.Kind), string(o.Timer.Peer), int(o.After))
			n.timers[i] = slices.DeleteFunc(n.timers[i], func(x hvNetTimer) bool { return x.timer == o.Timer })
			n.seq++
			n.timers[i] = append(n.timers[i], hvNetTimer{timer: o.Timer, at: n.now.Add(o.After), seq: n.seq})
		case protocols.CancelTimer:
			n.mix("cancel", int(o.Timer.Kind), string(o.Timer.Peer))
			n.timers[i] = slices.DeleteFunc(n.timers[i], func(x hvNetTimer) bool { return x.timer == o.Timer })
		case NeighboursChanged:
			events++
			got := nodeIDs(o.Nodes)
			n.mix("neighbours", fmt.Sprint(got))
			if k != len(outs)-1 || !slices.Equal(got, c.Active()) {
				t.Fatalf("node %d: NeighboursChanged [%v] at %d of %d outputs, active view %v", i, got, k, len(outs), c.Active())
			}
		default:
			t.Fatalf("unexpected output %T", o)
		}
	}
	after := c.Active()
	if !sameSet(n.links[i], after) {
		t.Fatalf("node %d: links %v but active view %v", i, n.links[i], after)
	}
	if changed := !sameSet(before, after); events > 1 || changed && events != 1 {
		t.Fatalf("node %d: active view changed: %v, yet %d NeighboursChanged", i, changed, events)
	}
}

// drain delivers queued inputs until none is left.
func (n *hvNet) drain() {
	for steps := 0; len(n.queue) > 0; steps++ {
		if steps > 1_000_000 {
			n.t.Fatal("the network never settles")
		}
		e := n.queue[0]
		n.queue = n.queue[1:]
		if !n.alive[e.to] {
			// A message to a crashed node fails at its sender.
			if e.from >= 0 && n.alive[e.from] {
				n.queue = append(n.queue, hvNetEvent{to: e.from, from: -1, in: protocols.PeerDown{Peer: n.ids[e.to]}})
			}
			continue
		}
		n.handle(e.to, e.in)
	}
}

// advance moves the clock by d, firing due timers in order; after each, the network
// settles and check (if not nil) is called.
func (n *hvNet) advance(d time.Duration, check func()) {
	end := n.now.Add(d)
	for {
		bi, bk := -1, -1
		for i, ts := range n.timers {
			if !n.alive[i] {
				continue
			}
			for k, x := range ts {
				if x.at.After(end) {
					continue
				}
				if bi < 0 || x.at.Before(n.timers[bi][bk].at) || x.at.Equal(n.timers[bi][bk].at) && x.seq < n.timers[bi][bk].seq {
					bi, bk = i, k
				}
			}
		}
		if bi < 0 {
			break
		}
		x := n.timers[bi][bk]
		n.timers[bi] = slices.Delete(n.timers[bi], bk, bk+1)
		n.now = x.at
		n.handle(bi, protocols.TimerFired{Timer: x.timer})
		n.drain()
		if check != nil {
			check()
		}
	}
	n.now = end
}

// problems lists HyParView's invariants broken among live nodes: active view within
// [1, ActiveSize], passive view within PassiveSize, no self, no duplicates, views
// disjoint, no crashed neighbour, active views symmetric and, if asked, connected.
// Unless all is set, only the nodes that took an input since the last check are
// looked at: a broken view needs one of its ends to have changed.
func (n *hvNet) problems(cfg HyParViewConfig, connected, all bool) []string {
	cfg = cfg.WithDefaults()
	var out []string
	nodes := n.dirty
	if all {
		nodes = nil
		for i := range n.ids {
			nodes = append(nodes, i)
		}
	}
	n.dirty = n.dirty[:0]
	seen := make([]int, len(n.ids)) // seen[j] == i+1: node j is in a view of node i
	for _, i := range nodes {
		c := n.cores[i]
		if !n.live[i] {
			continue
		}
		if len(c.active) < 1 || len(c.active) > cfg.ActiveSize {
			out = append(out, fmt.Sprintf("node %d: active view of %d", i, len(c.active)))
		}
		if len(c.passive) > cfg.PassiveSize {
			out = append(out, fmt.Sprintf("node %d: passive view of %d", i, len(c.passive)))
		}
		for _, e := range append(c.active[:len(c.active):len(c.active)], c.passive...) {
			j, ok := n.index[e.id]
			switch {
			case !ok || !bytes.Equal(e.n.GetId(), []byte(e.id)):
				out = append(out, fmt.Sprintf("node %d: a bad descriptor for %s", i, e.id))
			case j == i:
				out = append(out, fmt.Sprintf("node %d: itself in a view", i))
			case seen[j] == i+1:
				out = append(out, fmt.Sprintf("node %d: node %d twice, or in both views", i, j))
			}
			seen[j] = i + 1
		}
		for _, e := range c.active {
			j := n.index[e.id]
			if !n.live[j] {
				out = append(out, fmt.Sprintf("node %d: crashed node %d in the active view", i, j))
			} else if !n.cores[j].isActive(n.ids[i]) {
				out = append(out, fmt.Sprintf("node %d has %d active, not the other way round", i, j))
			}
		}
	}
	if connected {
		if k, total := n.reach(); k != total {
			out = append(out, fmt.Sprintf("overlay not connected: %d of %d live nodes reachable", k, total))
		}
	}
	return out
}

// reach counts the live nodes reachable over active links from the first live one.
func (n *hvNet) reach() (reached, total int) {
	seen := make([]bool, len(n.ids))
	var stack []int
	for i := range n.ids {
		if n.live[i] {
			total++
			if len(stack) == 0 {
				seen[i] = true
				stack = append(stack, i)
			}
		}
	}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		reached++
		for _, e := range n.cores[i].active {
			if j := n.index[e.id]; n.live[j] && !seen[j] {
				seen[j] = true
				stack = append(stack, j)
			}
		}
	}
	return reached, total
}

// crash stops the given nodes at once; live nodes linked to them learn it (PeerDown), as
// a closed connection tells the runtime.
func (n *hvNet) crash(nodes []int) {
	for _, i := range nodes {
		n.alive[i], n.live[i] = false, false
	}
	for i := range n.ids {
		if !n.alive[i] {
			continue
		}
		for _, q := range n.links[i] {
			if !n.alive[n.index[q]] {
				n.queue = append(n.queue, hvNetEvent{to: i, from: -1, in: protocols.PeerDown{Peer: q}})
			}
		}
	}
	n.drain()
}

// runHVNet joins n nodes one by one through random contacts (a tenth of a second
// apart), runs shuffle periods, crashes half the nodes and runs shuffle periods again.
// check, if not nil, is called with a phase name whenever the network has settled.
func runHVNet(t testing.TB, seed uint64, size int, cfg HyParViewConfig, check func(net *hvNet, phase string)) *hvNet {
	net := newHVNet(t, seed, size, cfg)
	rng := rand.New(rand.NewPCG(seed, 1<<40))
	if check == nil {
		check = func(*hvNet, string) {}
	}
	net.start(0)
	for i := 1; i < size; i++ {
		net.start(i, net.ids[rng.IntN(i)])
		check(net, "join")
		net.advance(100*time.Millisecond, func() { check(net, "join") })
	}
	period := cfg.WithDefaults().ShuffleInterval
	for range 5 {
		net.advance(period, func() { check(net, "shuffle") })
	}
	check(net, "before crash")
	net.crash(rng.Perm(size)[:size/2])
	check(net, "crash")
	for range 5 {
		net.advance(period, func() { check(net, "healing") })
	}
	check(net, "healed")
	return net
}

func TestHyParViewNetwork(t *testing.T) {
	cfg := HyParViewConfig{}
	var activeSum, passiveSum, live int
	runHVNet(t, 42, 200, cfg, func(net *hvNet, phase string) {
		// While the network heals from the crash, views may be short or cut apart;
		// every other invariant holds whenever the network has settled.
		healing := phase == "crash" || phase == "healing"
		var ps []string
		all := !strings.HasPrefix(phase, "join") && phase != "shuffle" && phase != "healing"
		for _, p := range net.problems(cfg, !healing, all) {
			if !healing || !strings.Contains(p, "active view of 0") {
				ps = append(ps, p)
			}
		}
		if len(ps) > 0 {
			t.Fatalf("%s at %v: %d problems: %v", phase, net.now.Sub(t0), len(ps), ps[:min(len(ps), 10)])
		}
		if phase == "before crash" || phase == "healed" {
			activeSum, passiveSum, live = 0, 0, 0
			for i, c := range net.cores {
				if net.live[i] {
					activeSum += len(c.Active())
					passiveSum += len(c.Passive())
					live++
				}
			}
			t.Logf("%s: %d live nodes, mean active view %.2f, mean passive view %.2f", phase, live,
				float64(activeSum)/float64(live), float64(passiveSum)/float64(live))
			// Shuffles fill passive views, and the active views are (nearly) full.
			if float64(activeSum)/float64(live) < 4 || float64(passiveSum)/float64(live) < 20 {
				t.Fatalf("%s: views too small", phase)
			}
		}
	})
	if live != 100 {
		t.Fatalf("%d nodes survived, want 100", live)
	}
}

func TestHyParViewDeterministic(t *testing.T) {
	run := func(seed uint64) uint64 {
		return runHVNet(t, seed, 60, HyParViewConfig{}, nil).trace.Sum64()
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Fatalf("same seed, different traces: %x and %x", a, b)
	}
	if a == c {
		t.Fatalf("different seeds, same trace %x: the trace hashes nothing", a)
	}
}
