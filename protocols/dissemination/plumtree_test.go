package dissemination_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/sim"
)

func newPTNet(t testing.TB, seed uint64, n int) *overlayNet {
	return newOverlayNet(t, seed, n, func() proto.Message { return new(dissemination.Message) },
		func(_ int, id peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewPlumtree(id, dissemination.PlumtreeConfig{}, rng)
		})
}

func TestPlumtreeDeliversOnceAndBuildsATree(t *testing.T) {
	const n = 200
	net := newPTNet(t, 1, n)
	rng := rand.New(rand.NewPCG(2, 2))
	var gossipFirst, gossipLater uint64
	for k := 0; k < 20; k++ {
		before := net.s.Stats().ByKind["GOSSIP"].Msgs
		origin := net.ids[rng.IntN(n)]
		id := net.broadcast(origin) // the same payload every time: still distinct broadcasts
		net.s.RunFor(5 * time.Second)
		if err := net.check(id, origin); err != nil {
			t.Fatalf("broadcast %d: %v", k, err)
		}
		sent := net.s.Stats().ByKind["GOSSIP"].Msgs - before
		if k == 0 {
			gossipFirst = sent
		}
		gossipLater = sent
	}
	// RMR = payload messages / (deliveries) - 1: the first broadcast floods every link,
	// later ones follow the tree.
	rmr := float64(gossipLater)/float64(n-1) - 1
	t.Logf("GOSSIP messages: first broadcast %d, 20th %d (RMR %.3f)", gossipFirst, gossipLater, rmr)
	if gossipFirst < 2*n || rmr > 0.05 {
		t.Fatalf("no tree emerged: first %d payload messages, last RMR %.3f", gossipFirst, rmr)
	}
	eager := 0
	for _, c := range net.cores {
		eager += len(c.(*dissemination.Plumtree).Eager(""))
	}
	if eager/2 < n-1 || eager/2 > n+10 {
		t.Fatalf("%d eager links for %d nodes, want about a spanning tree (%d)", eager/2, n, n-1)
	}
}

func TestPlumtreeRepairsAfterFailures(t *testing.T) {
	const n = 200
	net := newPTNet(t, 3, n)
	rng := rand.New(rand.NewPCG(4, 4))
	for k := 0; k < 5; k++ {
		net.broadcast(net.ids[rng.IntN(n)])
		net.s.RunFor(5 * time.Second)
	}
	// 20% crash; the membership tells the survivors (Neighbours without the dead).
	live := net.crash(rng, 0.2)
	net.s.RunFor(time.Second)
	for k := 0; k < 5; k++ {
		origin := live[rng.IntN(len(live))]
		id := net.broadcast(origin)
		net.s.RunFor(10 * time.Second)
		if err := net.check(id, origin); err != nil {
			t.Fatalf("broadcast %d after the failures: %v", k, err)
		}
	}
}

func TestPlumtreeBoundedCaches(t *testing.T) {
	ids, _ := sim.PeerIDs(5, 2)
	c, err := dissemination.NewPlumtree(ids[0], dissemination.PlumtreeConfig{Seen: 10, Cache: 5, Missing: 3}, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	t0 := sim.Epoch
	c.Handle(t0, protocols.Neighbours{Peers: ids[1:]})
	for i := 0; i < 100; i++ {
		b := &dissemination.Broadcast{Origin: []byte(ids[1]), Seq: uint64(i)}
		out := c.Handle(t0, protocols.Receive{From: ids[1], Msg: &dissemination.Message{Body: &dissemination.Message_Gossip{Gossip: &dissemination.Gossip{Broadcast: b}}}})
		if len(out) == 0 {
			t.Fatalf("broadcast %d not delivered", i)
		}
		// announcements of ids never received
		ann := &dissemination.Announcement{Id: dissemination.ID([]byte("x"), uint64(i), nil)}
		c.Handle(t0, protocols.Receive{From: ids[1], Msg: &dissemination.Message{Body: &dissemination.Message_Ihave{Ihave: &dissemination.IHave{Announcements: []*dissemination.Announcement{ann}}}}})
	}
	// An old broadcast forgotten by Seen is delivered again: the bound is real.
	b := &dissemination.Broadcast{Origin: []byte(ids[1]), Seq: 0}
	out := c.Handle(t0, protocols.Receive{From: ids[1], Msg: &dissemination.Message{Body: &dissemination.Message_Gossip{Gossip: &dissemination.Gossip{Broadcast: b}}}})
	delivered := false
	for _, o := range out {
		_, ok := o.(dissemination.Delivered)
		delivered = delivered || ok
	}
	if !delivered {
		t.Fatal("Seen holds more than its bound")
	}
}

func TestPlumtreeSameSeedSameTrace(t *testing.T) {
	run := func() uint64 {
		net := newPTNet(t, 9, 100)
		for k := 0; k < 5; k++ {
			net.broadcast(net.ids[k*7])
			net.s.RunFor(3 * time.Second)
		}
		return net.s.TraceHash()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("traces differ: %x %x", a, b)
	}
}

// The paper's optimisation (Threshold > 0): a broadcast announced by A over 1 hop and
// received from S over 5 makes A's link a tree link (GRAFT without id) and S's lazy
// (PRUNE). Off by default: the same inputs only deliver.
func TestPlumtreeOptimisation(t *testing.T) {
	ids, _ := sim.PeerIDs(11, 4)
	a, s, o := ids[1], ids[2], ids[3]
	b := &dissemination.Broadcast{Origin: []byte(o), Seq: 1, Payload: []byte("x")}
	id := dissemination.BroadcastID(b)
	for _, threshold := range []int{3, -1} {
		c, err := dissemination.NewPlumtree(ids[0], dissemination.PlumtreeConfig{Threshold: threshold}, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		t0 := sim.Epoch
		c.Handle(t0, protocols.Neighbours{Peers: []peer.ID{a, s}})
		// A is lazy (it pruned us); S is eager.
		c.Handle(t0, protocols.Receive{From: a, Msg: &dissemination.Message{Body: &dissemination.Message_Prune{Prune: &dissemination.Prune{Origin: []byte(o)}}}})
		c.Handle(t0, protocols.Receive{From: a, Msg: &dissemination.Message{Body: &dissemination.Message_Ihave{Ihave: &dissemination.IHave{
			Announcements: []*dissemination.Announcement{{Id: id, Round: 1}}}}}})
		out := c.Handle(t0.Add(10*time.Millisecond), protocols.Receive{From: s, Msg: &dissemination.Message{Body: &dissemination.Message_Gossip{Gossip: &dissemination.Gossip{Broadcast: b, Round: 5}}}})
		var got []string
		for _, o := range out {
			switch v := o.(type) {
			case dissemination.Delivered:
				got = append(got, fmt.Sprintf("deliver round %d", v.Round))
			case protocols.Send:
				to := "A"
				if v.To == s {
					to = "S"
				}
				got = append(got, v.Msg.(*dissemination.Message).Kind()+" to "+to)
			}
		}
		want := []string{"deliver round 6", "GRAFT to A", "PRUNE to S"}
		if threshold < 0 {
			want = []string{"deliver round 6"} // A announced it: no IHAVE back
		}
		if !slices.Equal(got, want) {
			t.Fatalf("threshold %d: %q, want %q", threshold, got, want)
		}
		if threshold == 3 && (!slices.Equal(c.Eager(o), []peer.ID{a}) || !slices.Equal(c.Lazy(o), []peer.ID{s})) {
			t.Fatalf("eager %v lazy %v after the swap", c.Eager(o), c.Lazy(o))
		}
		// The shared tree is not changed by the optimisation.
		if threshold == 3 && (!slices.Equal(c.Eager(""), []peer.ID{s}) || !slices.Equal(c.Lazy(""), []peer.ID{a})) {
			t.Fatalf("shared tree: eager %v lazy %v", c.Eager(""), c.Lazy(""))
		}
	}
}
