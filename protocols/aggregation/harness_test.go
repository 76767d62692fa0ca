package aggregation_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/aggregation"
	"github.com/unsserv/go-unsserv/sim"
)

// aggNet runs one aggregation core per node in the simulator over a fixed random overlay
// (a ring plus two random chords per node: connected, degree about 6), standing in for
// the membership.
type aggNet struct {
	t     testing.TB
	s     *sim.Sim
	seed  uint64
	ids   []peer.ID
	cores []*aggregation.PushPull
	adj   map[peer.ID][]peer.ID
	rng   *rand.Rand
	cfg   aggregation.PushPullConfig
	index map[peer.ID]int
	// finals[i][e] is node i's final estimate of epoch e.
	finals []map[uint64]float64
	next   int // the next spare identity for joins
	all    []peer.ID
}

func newAggNet(t testing.TB, seed uint64, n int, loss float64, cfg aggregation.PushPullConfig, value func(i int) float64) *aggNet {
	t.Helper()
	ids, err := sim.PeerIDs(seed, n+64) // spare identities for joins
	if err != nil {
		t.Fatal(err)
	}
	net := &aggNet{t: t, seed: seed, ids: slices.Clone(ids[:n]), adj: map[peer.ID][]peer.ID{}, rng: rand.New(rand.NewPCG(seed, 11)), cfg: cfg,
		index: map[peer.ID]int{}, next: n, all: ids}
	for i, id := range ids {
		net.index[id] = i
	}
	net.finals = make([]map[uint64]float64, len(ids))
	s, err := sim.New(sim.Config{
		Seed: seed, Latency: sim.Uniform{Min: 5 * time.Millisecond, Max: 30 * time.Millisecond}, Loss: loss,
		NewMessage: func() proto.Message { return new(aggregation.Message) },
		Kind:       func(m proto.Message) string { return aggregation.Kind(m.(*aggregation.Message)) },
		OnEvent: func(_ time.Time, node peer.ID, ev protocols.Output) {
			if u, ok := ev.(aggregation.Updated); ok && u.Estimate.FinalEpoch != 0 {
				i := net.index[node]
				if net.finals[i] == nil {
					net.finals[i] = map[uint64]float64{}
				}
				if _, seen := net.finals[i][u.Estimate.FinalEpoch]; !seen {
					net.finals[i][u.Estimate.FinalEpoch] = u.Estimate.Final
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
	for i := range n {
		net.link(ids[i], ids[(i+1)%n])
		net.link(ids[i], ids[net.rng.IntN(n)])
		net.link(ids[i], ids[net.rng.IntN(n)])
	}
	for i, id := range net.ids {
		c := cfg
		c.Value = value(i)
		core, err := aggregation.NewPushPull(id, c, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		net.cores = append(net.cores, core)
		if err := s.Add(id, core); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range net.ids {
		_ = s.Input(id, protocols.Start{})
		_ = s.Input(id, protocols.Neighbours{Peers: net.adj[id]})
	}
	return net
}

// randomPeers replaces the fixed overlay by the paper's peer sampling: every cycle each
// live node gets view uniformly random live nodes as its neighbours.
func (n *aggNet) randomPeers(view int) {
	var refresh func(*sim.Sim)
	refresh = func(s *sim.Sim) {
		live := n.live()
		for _, i := range live {
			var ns []peer.ID
			for len(ns) < min(view, len(live)-1) {
				q := n.ids[live[n.rng.IntN(len(live))]]
				if q != n.ids[i] && !slices.Contains(ns, q) {
					ns = append(ns, q)
				}
			}
			_ = s.Input(n.ids[i], protocols.Neighbours{Peers: ns})
		}
		s.At(s.Now().Add(n.cycle()), refresh)
	}
	n.s.At(n.s.Now(), refresh)
}

// join adds a node with the given value, linked to k random live nodes (both ways, as
// a symmetric membership would), and starts it.
func (n *aggNet) join(value float64, k int) int {
	n.t.Helper()
	id := n.all[n.next]
	n.next++
	c := n.cfg
	c.Value = value
	core, err := aggregation.NewPushPull(id, c, sim.NodeRand(n.seed, len(n.ids)))
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.s.Add(id, core); err != nil {
		n.t.Fatal(err)
	}
	n.ids = append(n.ids, id)
	n.cores = append(n.cores, core)
	live := n.live()
	for j := 0; j < k; j++ {
		q := n.ids[live[n.rng.IntN(len(live))]]
		n.link(id, q)
		_ = n.s.Input(q, protocols.Neighbours{Peers: n.adj[q]})
	}
	_ = n.s.Input(id, protocols.Start{})
	_ = n.s.Input(id, protocols.Neighbours{Peers: n.adj[id]})
	return len(n.ids) - 1
}

func (n *aggNet) link(a, b peer.ID) {
	if a != b && !slices.Contains(n.adj[a], b) {
		n.adj[a] = append(n.adj[a], b)
		n.adj[b] = append(n.adj[b], a)
	}
}

func (n *aggNet) cycle() time.Duration { return n.cfg.WithDefaults().Cycle }

// live returns the indices of the live nodes.
func (n *aggNet) live() []int {
	var out []int
	for i, id := range n.ids {
		if n.s.Alive(id) {
			out = append(out, i)
		}
	}
	return out
}

// maxEpoch is the highest epoch a live node is in.
func (n *aggNet) maxEpoch() uint64 {
	var e uint64
	for _, i := range n.live() {
		e = max(e, n.cores[i].Estimate().Epoch)
	}
	return e
}

// runToEpochStart runs until some node starts an epoch after the current highest one.
func (n *aggNet) runToEpochStart() uint64 {
	e := n.maxEpoch()
	for k := 0; k < 10000 && n.maxEpoch() == e; k++ {
		n.s.RunFor(n.cycle() / 20)
	}
	return n.maxEpoch()
}

// stats of the estimates of the live nodes in epoch e.
type epochStats struct {
	nodes      int
	mean, vari float64
	truth      float64 // mean of the values the nodes started the epoch with
	maxRel     float64 // largest |estimate - truth| / |truth|
	known      int
}

func (n *aggNet) epochStats(e uint64, truth func(start []float64) float64) epochStats {
	var st epochStats
	var vals, starts []float64
	for _, i := range n.live() {
		est := n.cores[i].Estimate()
		if est.Epoch != e {
			continue
		}
		st.nodes++
		v, _ := n.cores[i].EpochValue()
		starts = append(starts, v)
		if est.Known {
			st.known++
			vals = append(vals, est.Value)
		}
	}
	if len(vals) == 0 {
		return st
	}
	st.truth = truth(starts)
	for _, v := range vals {
		st.mean += v
	}
	st.mean /= float64(len(vals))
	for _, v := range vals {
		st.vari += (v - st.mean) * (v - st.mean)
		st.maxRel = max(st.maxRel, math.Abs(v-st.truth)/math.Abs(st.truth))
	}
	st.vari /= float64(len(vals))
	return st
}

func meanOf(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
