package clustering_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/protocols/membership"
	"github.com/unsserv/go-unsserv/sim"
)

// tmanNet runs T-Man at layer 1 over Newscast at layer 0 in the simulator, with the
// nodes placed on a ring (node i at position i) and rank = ring distance: the ideal
// view of a node holds its ViewSize nearest nodes on the ring.
type tmanNet struct {
	s     *sim.Sim
	ids   []peer.ID
	pos   map[peer.ID]int
	cores []*clustering.TMan
	cfg   clustering.TManConfig
}

// tmanRingDist is the distance between positions a and b on a ring of n.
func tmanRingDist(a, b, n int) int {
	d := a - b
	if d < 0 {
		d = -d
	}
	return min(d, n-d)
}

func newTManNet(t testing.TB, seed uint64, n int, cfg clustering.TManConfig) *tmanNet {
	t.Helper()
	ids, err := sim.PeerIDs(seed, n)
	if err != nil {
		t.Fatal(err)
	}
	net := &tmanNet{ids: ids, pos: map[peer.ID]int{}, cores: make([]*clustering.TMan, n), cfg: cfg.WithDefaults()}
	for i, id := range ids {
		net.pos[id] = i
	}
	s, err := sim.New(sim.Config{
		Seed:    seed,
		Latency: sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		Layers: []sim.Layer{
			{NewMessage: func() proto.Message { return new(membership.Message) }},
			{NewMessage: func() proto.Message { return new(clustering.TManMessage) },
				Kind: func(m proto.Message) string { return clustering.TManKind(m.(*clustering.TManMessage)) }},
		},
		OnLayerEvent: func(_ time.Time, node peer.ID, layer int, ev protocols.Output) {
			if nc, ok := ev.(membership.NeighboursChanged); ok && layer == 0 {
				ps := make([]peer.ID, 0, len(nc.Nodes))
				for _, d := range nc.Nodes {
					ps = append(ps, d.PeerID())
				}
				_ = net.s.InputLayer(node, 1, protocols.Neighbours{Peers: ps})
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
	for i, id := range ids {
		nc, err := membership.NewNewscast(membership.NewNode(id, nil, nil), membership.NewscastConfig{Interval: time.Second}, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		me := i
		rank := func(nd clustering.Node) float64 {
			p, ok := net.pos[nd.ID]
			if !ok {
				return math.Inf(1)
			}
			return float64(tmanRingDist(me, p, n))
		}
		tm, err := clustering.NewTMan(id, cfg, rank, sim.NodeRand(seed, n+i))
		if err != nil {
			t.Fatal(err)
		}
		net.cores[i] = tm
		if err := s.AddStack(id, nc, tm); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	for i, id := range ids {
		var bs []peer.ID
		if i > 0 {
			bs = []peer.ID{ids[rng.IntN(i)]}
		}
		_ = s.Input(id, protocols.Start{Bootstrap: bs})
		_ = s.InputLayer(id, 1, protocols.Start{})
		s.RunFor(5 * time.Millisecond)
	}
	return net
}

// idealFraction is the mean, over live nodes, of the fraction of their view that is
// ideal: nodes at most as far as the ViewSize-th nearest live node.
func (net *tmanNet) idealFraction() float64 {
	n := len(net.ids)
	var live []int
	for i, id := range net.ids {
		if net.s.Alive(id) {
			live = append(live, i)
		}
	}
	c := min(net.cfg.ViewSize, len(live)-1)
	sum := 0.0
	for _, i := range live {
		ds := make([]int, 0, len(live)-1)
		for _, j := range live {
			if j != i {
				ds = append(ds, tmanRingDist(i, j, n))
			}
		}
		sort.Ints(ds)
		bound := ds[c-1]
		good := 0
		for _, nd := range net.cores[i].View() {
			if p := net.pos[nd.ID]; net.s.Alive(nd.ID) && tmanRingDist(i, p, n) <= bound {
				good++
			}
		}
		sum += float64(good) / float64(c)
	}
	return sum / float64(len(live))
}

// largestComponent is the fraction of live nodes in the largest connected component of
// the clustered overlay (neighbour links between live nodes, taken as undirected).
func (net *tmanNet) largestComponent() float64 {
	adj := map[peer.ID][]peer.ID{}
	var live []peer.ID
	for i, id := range net.ids {
		if !net.s.Alive(id) {
			continue
		}
		live = append(live, id)
		for _, q := range net.cores[i].Neighbours() {
			if net.s.Alive(q) {
				adj[id] = append(adj[id], q)
				adj[q] = append(adj[q], id)
			}
		}
	}
	seen := map[peer.ID]bool{}
	best := 0
	for _, start := range live {
		if seen[start] {
			continue
		}
		size := 0
		stack := []peer.ID{start}
		seen[start] = true
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			size++
			for _, q := range adj[p] {
				if !seen[q] {
					seen[q] = true
					stack = append(stack, q)
				}
			}
		}
		best = max(best, size)
	}
	return float64(best) / float64(len(live))
}

// viewProblems checks every live view: at most ViewSize entries, no self, no
// duplicates, neighbours a prefix of the view.
func (net *tmanNet) viewProblems(t testing.TB) {
	t.Helper()
	for i, id := range net.ids {
		if !net.s.Alive(id) {
			continue
		}
		v := net.cores[i].View()
		if len(v) > net.cfg.ViewSize {
			t.Fatalf("node %d: view of %d > %d", i, len(v), net.cfg.ViewSize)
		}
		var seen []peer.ID
		for _, nd := range v {
			if nd.ID == id || slices.Contains(seen, nd.ID) {
				t.Fatalf("node %d: self or duplicate %s in view", i, nd.ID.ShortString())
			}
			seen = append(seen, nd.ID)
		}
		ns := net.cores[i].Neighbours()
		if len(ns) > len(v) {
			t.Fatalf("node %d: %d neighbours, view of %d", i, len(ns), len(v))
		}
		for k, q := range ns {
			if v[k].ID != q {
				t.Fatalf("node %d: neighbours are not the view's best", i)
			}
		}
	}
}
