package clustering_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/protocols/membership"
	"github.com/unsserv/go-unsserv/sim"
)

// xbNet runs, in the simulator, a stack per node: HyParView at layer 0 and X-BOT at
// layer 1, fed HyParView's neighbours as the runtime feeds them. Nodes sit at random
// points of the unit square; a node's rank of another is their distance.
type xbNet struct {
	s     *sim.Sim
	ids   []peer.ID
	index map[peer.ID]int
	pos   [][2]float64
	xb    []*clustering.XBOT
	dead  []bool
	cycle time.Duration
}

func xbDist(a, b [2]float64) float64 { return math.Hypot(a[0]-b[0], a[1]-b[1]) }

func newXBNet(t testing.TB, seed uint64, n int, cfg clustering.XBOTConfig) *xbNet {
	t.Helper()
	ids, err := sim.PeerIDs(seed, n)
	if err != nil {
		t.Fatal(err)
	}
	net := &xbNet{ids: ids, index: map[peer.ID]int{}, dead: make([]bool, n), cycle: cfg.WithDefaults().OptimizePeriod}
	prng := rand.New(rand.NewPCG(seed, 0x9051))
	for i, id := range ids {
		net.index[id] = i
		net.pos = append(net.pos, [2]float64{prng.Float64(), prng.Float64()})
	}
	scfg := sim.Config{
		Seed:               seed,
		Latency:            sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		NotifyLinksOnCrash: true,
		Layers: []sim.Layer{
			{NewMessage: func() proto.Message { return new(membership.Message) }},
			{NewMessage: func() proto.Message { return new(clustering.XBotMessage) },
				Kind: func(m proto.Message) string { return m.(*clustering.XBotMessage).Kind() }},
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
	}
	s, err := sim.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
	for i, id := range ids {
		hv, err := membership.NewHyParView(membership.NewNode(id, nil, nil), membership.HyParViewConfig{}, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		me := net.pos[i]
		rank := func(nd clustering.Node) float64 {
			j, ok := net.index[nd.ID]
			if !ok {
				return math.Inf(1)
			}
			return xbDist(me, net.pos[j])
		}
		xb, err := clustering.NewXBOT(id, cfg, rank, sim.NodeRand(seed, n+i))
		if err != nil {
			t.Fatal(err)
		}
		net.xb = append(net.xb, xb)
		if err := s.AddStack(id, hv, xb); err != nil {
			t.Fatal(err)
		}
	}
	jrng := rand.New(rand.NewPCG(seed, 0xb007))
	for i, id := range ids {
		var boot []peer.ID
		if i > 0 {
			s.RunFor(10 * time.Millisecond)
			boot = []peer.ID{ids[jrng.IntN(i)]}
		}
		_ = s.Input(id, protocols.Start{Bootstrap: boot})
		_ = s.InputLayer(id, 1, protocols.Start{})
	}
	return net
}

// avgCost is the mean cost (distance) of the live nodes' active links.
func (net *xbNet) avgCost() float64 {
	sum, k := 0.0, 0
	for i, x := range net.xb {
		if net.dead[i] {
			continue
		}
		for _, p := range x.Active() {
			sum += xbDist(net.pos[i], net.pos[net.index[p]])
			k++
		}
	}
	if k == 0 {
		return 0
	}
	return sum / float64(k)
}

// largestComponent is the fraction of live nodes in the largest connected component of
// the X-BOT overlay (links taken as undirected, dead nodes left out).
func (net *xbNet) largestComponent() float64 {
	n := len(net.ids)
	adj := make([][]int, n)
	live := 0
	for i, x := range net.xb {
		if net.dead[i] {
			continue
		}
		live++
		for _, p := range x.Active() {
			if j := net.index[p]; !net.dead[j] {
				adj[i] = append(adj[i], j)
				adj[j] = append(adj[j], i)
			}
		}
	}
	seen := make([]bool, n)
	best := 0
	for i := range n {
		if seen[i] || net.dead[i] {
			continue
		}
		size, queue := 0, []int{i}
		seen[i] = true
		for len(queue) > 0 {
			v := queue[0]
			queue = queue[1:]
			size++
			for _, w := range adj[v] {
				if !seen[w] {
					seen[w] = true
					queue = append(queue, w)
				}
			}
		}
		best = max(best, size)
	}
	if live == 0 {
		return 0
	}
	return float64(best) / float64(live)
}

// asymmetric lists the live links a->b with b live and a not in b's active view.
func (net *xbNet) asymmetric() []string {
	var out []string
	for i, x := range net.xb {
		if net.dead[i] {
			continue
		}
		for _, p := range x.Active() {
			j := net.index[p]
			if !net.dead[j] && !slices.Contains(net.xb[j].Active(), net.ids[i]) {
				out = append(out, fmt.Sprintf("%d->%d", i, j))
			}
		}
	}
	slices.Sort(out)
	return out
}

// crash crashes a fraction of the live nodes at once.
func (net *xbNet) crash(rng *rand.Rand, fraction float64) {
	var live []int
	for i := range net.ids {
		if !net.dead[i] {
			live = append(live, i)
		}
	}
	for _, k := range rng.Perm(len(live))[:int(fraction*float64(len(live)))] {
		net.dead[live[k]] = true
		net.s.Crash(net.ids[live[k]])
	}
}

// viewProblems reports views over their bounds, holding the node itself, or
// duplicates.
func (net *xbNet) viewProblems(cfg clustering.XBOTConfig) error {
	cfg = cfg.WithDefaults()
	for i, x := range net.xb {
		if net.dead[i] {
			continue
		}
		a, p := x.Active(), x.Passive()
		if len(a) > cfg.ActiveView || len(p) > cfg.PassiveView {
			return fmt.Errorf("node %d: views %d/%d over their bounds", i, len(a), len(p))
		}
		all := append(slices.Clone(a), p...)
		if slices.Contains(all, net.ids[i]) {
			return fmt.Errorf("node %d holds itself", i)
		}
		slices.Sort(all)
		if len(slices.Compact(all)) != len(a)+len(p) {
			return fmt.Errorf("node %d: a node in both views or twice", i)
		}
	}
	return nil
}
