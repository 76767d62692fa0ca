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

// overlayNet runs one dissemination core per node in the simulator over a fixed random
// overlay (a ring plus random chords: connected, degree about 5), standing in for the
// membership. Every algorithm's tests use it.
type overlayNet struct {
	s         *sim.Sim
	ids       []peer.ID
	cores     []protocols.Core
	adj       map[peer.ID][]peer.ID
	delivered map[peer.ID]map[string]int
	seq       uint64
}

// newCoreFunc builds node i's core.
type newCoreFunc func(i int, id peer.ID, rng *rand.Rand) (protocols.Core, error)

// kind names a message for the simulator's counters.
func kind(m proto.Message) string { return m.(dissemination.Carrier).Kind() }

func newOverlayNet(t testing.TB, seed uint64, n int, newMsg func() proto.Message, newCore newCoreFunc) *overlayNet {
	return newOverlayNetWith(t, seed, n, newMsg, newCore, nil)
}

// newOverlayNetWith is newOverlayNet with a chance to change the simulator's config
// (loss, more counters) before the network is built; tweak must keep calling the
// OnEvent it finds.
func newOverlayNetWith(t testing.TB, seed uint64, n int, newMsg func() proto.Message, newCore newCoreFunc, tweak func(*sim.Config)) *overlayNet {
	t.Helper()
	ids, _ := sim.PeerIDs(seed, n)
	net := &overlayNet{ids: ids, adj: map[peer.ID][]peer.ID{}, delivered: map[peer.ID]map[string]int{}}
	cfg := sim.Config{
		Seed: seed, Latency: sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		NewMessage: newMsg,
		Kind:       kind,
		OnEvent: func(_ time.Time, node peer.ID, ev protocols.Output) {
			if d, ok := ev.(dissemination.Delivered); ok {
				if net.delivered[node] == nil {
					net.delivered[node] = map[string]int{}
				}
				net.delivered[node][string(d.ID)]++
			}
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
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
		c, err := newCore(i, id, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		net.cores = append(net.cores, c)
		_ = s.Add(id, c)
		_ = s.Input(id, protocols.Neighbours{Peers: net.adj[id]})
	}
	return net
}

// broadcast publishes a broadcast from node from (always the same payload: still
// distinct broadcasts) and returns its id.
func (n *overlayNet) broadcast(from peer.ID) []byte {
	n.seq++
	b := &dissemination.Broadcast{Origin: []byte(from), Seq: n.seq, Payload: []byte("same payload")}
	_ = n.s.Input(from, protocols.Call{Req: dissemination.Publish{Broadcast: b}})
	return dissemination.BroadcastID(b)
}

// check: every live node but the origin delivered id exactly once.
func (n *overlayNet) check(id []byte, origin peer.ID) error {
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

// crash crashes a fraction of the nodes and gives the survivors new neighbour sets, as
// the membership would: their surviving links plus a ring over the survivors, so the
// live overlay stays connected. It returns the survivors.
func (n *overlayNet) crash(rng *rand.Rand, fraction float64) []peer.ID {
	dead := map[peer.ID]bool{}
	for _, i := range rng.Perm(len(n.ids))[:int(fraction*float64(len(n.ids)))] {
		dead[n.ids[i]] = true
		n.s.Crash(n.ids[i])
	}
	var live []peer.ID
	for _, id := range n.ids {
		if !dead[id] {
			live = append(live, id)
		}
	}
	for i, id := range live {
		var ns []peer.ID
		for _, q := range n.adj[id] {
			if !dead[q] {
				ns = append(ns, q)
			}
		}
		for _, q := range []peer.ID{live[(i+1)%len(live)], live[(i+len(live)-1)%len(live)]} {
			if !slices.Contains(ns, q) {
				ns = append(ns, q)
			}
		}
		n.adj[id] = ns
		_ = n.s.Input(id, protocols.Neighbours{Peers: ns})
	}
	return live
}
