package sampling_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
	"github.com/unsserv/go-unsserv/sim"
)

// sampleNet runs one sampling core per node in the simulator over a fixed undirected
// graph, standing in for the membership: each node gets its graph neighbours once, as
// protocols.Neighbours.
type sampleNet struct {
	s      *sim.Sim
	ids    []peer.ID
	index  map[peer.ID]int
	adj    [][]int
	cores  []protocols.Core
	counts []int          // samples naming each node
	got    map[uint64]int // request ID -> node sampled
	origin map[uint64]int // request ID -> asking node
	failed map[uint64]string
	nextID uint64
}

type coreFunc func(id peer.ID, rng *rand.Rand) (protocols.Core, error)

func mrwbCore(cfg sampling.MRWBConfig) coreFunc {
	return func(id peer.ID, rng *rand.Rand) (protocols.Core, error) { return sampling.NewMRWB(id, cfg, rng) }
}

func rwdCore(cfg sampling.RWDConfig) coreFunc {
	return func(id peer.ID, rng *rand.Rand) (protocols.Core, error) { return sampling.NewRWD(id, cfg, rng) }
}

func naiveCore(cfg sampling.RandomWalkConfig) coreFunc {
	return func(id peer.ID, rng *rand.Rand) (protocols.Core, error) { return sampling.NewRandomWalk(id, cfg, rng) }
}

// preferential builds a Barabási-Albert graph: a clique of m+1 nodes, then each new node
// links to m distinct earlier nodes drawn in proportion to their degree. Its degrees
// are heavy-tailed: a few hubs, most nodes at m.
func preferential(n, m int, rng *rand.Rand) [][]int {
	adj := make([][]int, n)
	var ends []int // every link's two ends: drawing from it is drawing by degree
	link := func(a, b int) {
		adj[a] = append(adj[a], b)
		adj[b] = append(adj[b], a)
		ends = append(ends, a, b)
	}
	for a := 0; a <= m; a++ {
		for b := 0; b < a; b++ {
			link(a, b)
		}
	}
	for v := m + 1; v < n; v++ {
		var targets []int
		for len(targets) < m {
			if t := ends[rng.IntN(len(ends))]; !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
		for _, t := range targets {
			link(v, t)
		}
	}
	return adj
}

func newSampleNet(t testing.TB, seed uint64, adj [][]int, newCore coreFunc) *sampleNet {
	t.Helper()
	n := len(adj)
	ids, _ := sim.PeerIDs(seed, n)
	net := &sampleNet{ids: ids, adj: adj, index: map[peer.ID]int{}, counts: make([]int, n),
		got: map[uint64]int{}, origin: map[uint64]int{}, failed: map[uint64]string{}}
	for i, id := range ids {
		net.index[id] = i
	}
	s, err := sim.New(sim.Config{
		Seed:       seed,
		Latency:    sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		NewMessage: func() proto.Message { return new(sampling.Message) },
		Kind:       func(m proto.Message) string { return m.(*sampling.Message).Kind() },
		OnEvent: func(_ time.Time, node peer.ID, ev protocols.Output) {
			switch e := ev.(type) {
			case sampling.Sampled:
				j, ok := net.index[e.Node.PeerID()]
				if !ok {
					t.Errorf("sample %d names unknown peer %x", e.ID, e.Node.GetId())
					return
				}
				if _, dup := net.got[e.ID]; dup {
					t.Errorf("sample %d answered twice", e.ID)
				}
				if net.ids[net.origin[e.ID]] != node {
					t.Errorf("sample %d answered at %s, asked at %s", e.ID, node.ShortString(), net.ids[net.origin[e.ID]].ShortString())
				}
				net.got[e.ID] = j
				net.counts[j]++
			case sampling.SampleFailed:
				net.failed[e.ID] = e.Reason
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
	for i, id := range ids {
		c, err := newCore(id, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		net.cores = append(net.cores, c)
		if err := s.Add(id, c); err != nil {
			t.Fatal(err)
		}
		peers := make([]peer.ID, len(adj[i]))
		for k, j := range adj[i] {
			peers[k] = ids[j]
		}
		_ = s.Input(id, protocols.Neighbours{Peers: peers})
	}
	return net
}

// sample asks node i for a sample and returns the request ID.
func (n *sampleNet) sample(i int) uint64 {
	n.nextID++
	n.origin[n.nextID] = i
	_ = n.s.Input(n.ids[i], protocols.Call{Req: sampling.Sample{ID: n.nextID}})
	return n.nextID
}

// run asks for total samples from origins drawn uniformly among live, batch at a time
// every gap, then lets the last walks finish.
func (n *sampleNet) run(rng *rand.Rand, live []int, total, batch int, gap time.Duration) {
	for k := 0; k < total; k += batch {
		for b := 0; b < batch && k+b < total; b++ {
			n.sample(live[rng.IntN(len(live))])
		}
		n.s.RunFor(gap)
	}
	n.s.RunFor(30 * time.Second)
}

// check: every request was answered once, with another node.
func (n *sampleNet) check() error {
	for id := uint64(1); id <= n.nextID; id++ {
		j, ok := n.got[id]
		if !ok {
			return fmt.Errorf("sample %d (asked at node %d) not answered (failed: %q)", id, n.origin[id], n.failed[id])
		}
		if j == n.origin[id] {
			return fmt.Errorf("sample %d named the asking node itself", id)
		}
	}
	return nil
}

func (n *sampleNet) stats() sampling.Stats {
	var t sampling.Stats
	for _, c := range n.cores {
		var s sampling.Stats
		switch v := c.(type) {
		case *sampling.MRWB:
			s = v.Stats()
		case *sampling.RWD:
			s = v.Stats()
		case *sampling.RandomWalk:
			s = v.Stats()
		}
		t.Walks += s.Walks
		t.Samples += s.Samples
		t.Timeouts += s.Timeouts
		t.AtOrigin += s.AtOrigin
		t.Stuck += s.Stuck
		t.Hops += s.Hops
		t.Bounces += s.Bounces
		t.Rerouted += s.Rerouted
		t.Backtracked += s.Backtracked
		t.Overfull += s.Overfull
	}
	return t
}

func allNodes(n int) []int {
	xs := make([]int, n)
	for i := range xs {
		xs[i] = i
	}
	return xs
}
