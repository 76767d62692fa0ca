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

// ptNet: Plumtree cores over a fixed random overlay of degree about 5.
type ptNet struct {
	s         *sim.Sim
	ids       []peer.ID
	cores     []*dissemination.Plumtree
	adj       map[peer.ID][]peer.ID
	delivered map[peer.ID]map[string]int
	seq       uint64
}

func kind(m proto.Message) string {
	switch m.(*dissemination.Message).GetBody().(type) {
	case *dissemination.Message_Gossip:
		return "GOSSIP"
	case *dissemination.Message_Ihave:
		return "IHAVE"
	case *dissemination.Message_Graft:
		return "GRAFT"
	case *dissemination.Message_Prune:
		return "PRUNE"
	}
	return "?"
}

func newPTNet(t *testing.T, seed uint64, n int) *ptNet {
	t.Helper()
	ids, _ := sim.PeerIDs(seed, n)
	net := &ptNet{ids: ids, adj: map[peer.ID][]peer.ID{}, delivered: map[peer.ID]map[string]int{}}
	s, err := sim.New(sim.Config{
		Seed: seed, Latency: sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		NewMessage: func() proto.Message { return new(dissemination.Message) },
		Kind:       kind,
		OnEvent: func(_ time.Time, node peer.ID, ev protocols.Output) {
			if d, ok := ev.(dissemination.Delivered); ok {
				if net.delivered[node] == nil {
					net.delivered[node] = map[string]int{}
				}
				net.delivered[node][string(d.ID)]++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
	// A ring plus random chords: connected, degree about 5.
	rng := rand.New(rand.NewPCG(seed, 7))
	link := func(a, b peer.ID) {
		if a != b && !slices.Contains(net.adj[a], b) {
			net.adj[a] = append(net.adj[a], b)
			net.adj[b] = append(net.adj[b], a)
		}
	}
	for i := range ids {
		link(ids[i], ids[(i+1)%n])
		link(ids[i], ids[rng.IntN(n)])
		link(ids[i], ids[rng.IntN(n)])
	}
	for i, id := range ids {
		c, err := dissemination.NewPlumtree(id, dissemination.PlumtreeConfig{}, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		net.cores = append(net.cores, c)
		_ = s.Add(id, c)
		_ = s.Input(id, protocols.Neighbours{Peers: net.adj[id]})
	}
	return net
}

func (n *ptNet) broadcast(from peer.ID) []byte {
	n.seq++
	b := &dissemination.Broadcast{Origin: []byte(from), Seq: n.seq, Payload: []byte("same payload")}
	_ = n.s.Input(from, protocols.Call{Req: dissemination.Publish{Broadcast: b}})
	return dissemination.BroadcastID(b)
}

// check: every live node but the origin delivered id exactly once.
func (n *ptNet) check(id []byte, origin peer.ID) error {
	for _, p := range n.ids {
		if !n.s.Alive(p) || p == origin {
			continue
		}
		if c := n.delivered[p][string(id)]; c != 1 {
			return fmt.Errorf("%s delivered the broadcast %d times", p.ShortString(), c)
		}
	}
	return nil
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
		eager += len(c.Eager())
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
	dead := map[peer.ID]bool{}
	for _, i := range rng.Perm(n)[:n/5] {
		dead[net.ids[i]] = true
		net.s.Crash(net.ids[i])
	}
	// Keep the live overlay connected: a ring over the survivors, plus surviving links.
	var live []peer.ID
	for _, id := range net.ids {
		if !dead[id] {
			live = append(live, id)
		}
	}
	for i, id := range live {
		var ns []peer.ID
		for _, q := range net.adj[id] {
			if !dead[q] {
				ns = append(ns, q)
			}
		}
		for _, q := range []peer.ID{live[(i+1)%len(live)], live[(i+len(live)-1)%len(live)]} {
			if !slices.Contains(ns, q) {
				ns = append(ns, q)
			}
		}
		_ = net.s.Input(id, protocols.Neighbours{Peers: ns})
	}
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
