package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/membership"
	"github.com/unsserv/go-unsserv/sim"
)

// membershipParams are the flags of the membership experiment.
type membershipParams struct {
	protocols []string
	n         int
	fails     []float64
	seed      uint64
	warmup    int
	cycles    int
	sources   int
	joinGap   time.Duration
	latency   time.Duration
	notify    bool
}

func parseMembership(args []string) (membershipParams, error) {
	fs := flag.NewFlagSet("lab membership", flag.ContinueOnError)
	protos := fs.String("protocol", "hyparview", "hyparview, newscast, or both comma-separated")
	n := fs.Int("n", 10000, "number of nodes")
	fail := fs.String("fail", "0.8", "fraction of nodes that crash at once; a comma-separated list sweeps")
	seed := fs.Uint64("seed", 1, "seed of the whole run")
	warmup := fs.Int("warmup", 20, "cycles (shuffle periods) of steady state after the joins, before the crash")
	cycles := fs.Int("cycles", 30, "cycles measured after the crash")
	sources := fs.Int("sources", 10, "flood sources averaged per measurement")
	joinGap := fs.Duration("join-gap", 10*time.Millisecond, "virtual time between two joins")
	latency := fs.Duration("latency", 10*time.Millisecond, "one-way link latency")
	notify := fs.Bool("notify-crash", false, "neighbours of a crashed node learn it at once (a closed connection), instead of when they next send to it as in the paper")
	if err := fs.Parse(args); err != nil {
		return membershipParams{}, err
	}
	p := membershipParams{n: *n, seed: *seed, warmup: *warmup, cycles: *cycles, sources: *sources, joinGap: *joinGap, latency: *latency, notify: *notify}
	for _, s := range strings.Split(*protos, ",") {
		switch s = strings.TrimSpace(s); s {
		case "hyparview", "newscast":
			p.protocols = append(p.protocols, s)
		default:
			return p, fmt.Errorf("-protocol %q: use hyparview or newscast", s)
		}
	}
	for _, s := range strings.Split(*fail, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || f < 0 || f >= 1 {
			return p, fmt.Errorf("-fail %q: fractions in [0, 1)", s)
		}
		p.fails = append(p.fails, f)
	}
	switch {
	case p.n < 2:
		return p, fmt.Errorf("-n %d: at least 2 nodes", p.n)
	case p.cycles < 1 || p.warmup < 0 || p.sources < 1:
		return p, fmt.Errorf("-cycles, -sources must be at least 1 and -warmup not negative")
	}
	return p, nil
}

// Figures of the experiment (JSON). No wall-clock value goes in here.
type membershipResult struct {
	Experiment string          `json:"experiment"`
	N          int             `json:"n"`
	Seed       uint64          `json:"seed"`
	Warmup     int             `json:"warmup_cycles"`
	Cycles     int             `json:"cycles"`
	Sources    int             `json:"flood_sources"`
	LatencyMs  float64         `json:"latency_ms"`
	Notify     bool            `json:"notify_crash"`
	Runs       []membershipRun `json:"runs"`
}

type membershipRun struct {
	Protocol     string       `json:"protocol"`
	CycleSeconds float64      `json:"cycle_s"`
	Fail         float64      `json:"fail"`
	Before       overlayFig   `json:"before"`
	InDegree     degreeFig    `json:"in_degree_before"`
	MsgsPerCycle kindCounts   `json:"msgs_per_node_per_cycle"`
	Survivors    int          `json:"survivors"`
	FirstFlood   float64      `json:"reliability_first_flood"`
	After        []overlayFig `json:"after"`
	Recovered    *int         `json:"cycles_to_reliability_0_99"`
	Sim          simSummary   `json:"sim"`
	perCycle     []float64    // reliability per cycle, for plots
	degrees      map[int]int  // for plots
}

type overlayFig struct {
	Cycle            int     `json:"cycle"`
	Reliability      float64 `json:"reliability"`
	LargestComponent float64 `json:"largest_component"`
	Connected        bool    `json:"connected"`
}

type degreeFig struct {
	Min  int      `json:"min"`
	Max  int      `json:"max"`
	Mean float64  `json:"mean"`
	Std  float64  `json:"std"`
	Hist [][2]int `json:"hist"` // [degree, nodes]
}

type kindCounts map[string]float64

type simSummary struct {
	Events    uint64 `json:"events"`
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	PeerDowns uint64 `json:"peer_downs"`
}

func runMembership(args []string, prog *progress) (any, []plotSpec, error) {
	p, err := parseMembership(args)
	if err != nil {
		return nil, nil, err
	}
	res := membershipResult{Experiment: "membership", N: p.n, Seed: p.seed, Warmup: p.warmup, Cycles: p.cycles,
		Sources: p.sources, LatencyMs: float64(p.latency) / 1e6, Notify: p.notify}
	for _, proto := range p.protocols {
		for _, f := range p.fails {
			r, err := membershipOnce(p, proto, f, prog)
			if err != nil {
				return nil, nil, err
			}
			res.Runs = append(res.Runs, r)
		}
	}
	return res, membershipPlots(res), nil
}

// overlayNet is a simulated network of membership cores.
type overlayNet struct {
	s     *sim.Sim
	ids   []peer.ID
	index map[peer.ID]int
	view  func(i int) []peer.ID
	cycle time.Duration
}

// MembershipKind names a membership message by its body, for counting.
func membershipKind(m proto.Message) string {
	switch m.(*membership.Message).GetBody().(type) {
	case *membership.Message_Join:
		return "JOIN"
	case *membership.Message_ForwardJoin:
		return "FORWARD_JOIN"
	case *membership.Message_Neighbor:
		return "NEIGHBOR"
	case *membership.Message_NeighborReply:
		return "NEIGHBOR_REPLY"
	case *membership.Message_Disconnect:
		return "DISCONNECT"
	case *membership.Message_Shuffle:
		return "SHUFFLE"
	case *membership.Message_ShuffleReply:
		return "SHUFFLE_REPLY"
	case *membership.Message_Newscast:
		return "NEWSCAST"
	}
	return "OTHER"
}

// buildOverlay adds n nodes, each joining through a random earlier node, one every
// joinGap.
func buildOverlay(p membershipParams, protocol string, prog *progress) (*overlayNet, error) {
	return buildStack(p, protocol, nil, prog)
}

// buildStack is buildOverlay with, if upper is not nil, a second layer stacked on the
// membership of every node (see upperLayer).
func buildStack(p membershipParams, protocol string, upper *upperLayer, prog *progress) (*overlayNet, error) {
	ids, err := sim.PeerIDs(p.seed, p.n)
	if err != nil {
		return nil, err
	}
	net := &overlayNet{ids: ids, index: make(map[peer.ID]int, len(ids))}
	cfg := sim.Config{
		Seed:               p.seed,
		Latency:            sim.Fixed(p.latency),
		NewMessage:         func() proto.Message { return new(membership.Message) },
		Kind:               membershipKind,
		NotifyLinksOnCrash: p.notify,
	}
	if upper != nil {
		upper.configure(net, &cfg)
	}
	s, err := sim.New(cfg)
	if err != nil {
		return nil, err
	}
	net.s = s
	hvs := make([]*membership.HyParView, 0, p.n)
	ncs := make([]*membership.Newscast, 0, p.n)
	for i, id := range ids {
		net.index[id] = i
		self := membership.NewNode(id, nil, nil)
		var core protocols.Core
		switch protocol {
		case "hyparview":
			hv, err := membership.NewHyParView(self, membership.HyParViewConfig{}, sim.NodeRand(p.seed, i))
			if err != nil {
				return nil, err
			}
			hvs = append(hvs, hv)
			core = hv
		case "newscast":
			nc, err := membership.NewNewscast(self, membership.NewscastConfig{}, sim.NodeRand(p.seed, i))
			if err != nil {
				return nil, err
			}
			ncs = append(ncs, nc)
			core = nc
		}
		if upper == nil {
			err = s.Add(id, core)
		} else {
			err = upper.add(s, i, id, core)
		}
		if err != nil {
			return nil, err
		}
	}
	switch protocol {
	case "hyparview":
		net.view = func(i int) []peer.ID { return hvs[i].Active() }
		net.cycle = membership.HyParViewConfig{}.WithDefaults().ShuffleInterval
	case "newscast":
		net.view = func(i int) []peer.ID { return ncs[i].View() }
		net.cycle = membership.NewscastConfig{}.WithDefaults().Interval
	}
	rng := rand.New(rand.NewPCG(p.seed, 0xb007))
	_ = s.Input(ids[0], protocols.Start{})
	upper.start(s, ids[0])
	for i := 1; i < p.n; i++ {
		s.RunFor(p.joinGap)
		contact := ids[rng.IntN(i)]
		_ = s.Input(ids[i], protocols.Start{Bootstrap: []peer.ID{contact}})
		upper.start(s, ids[i])
		if i%500 == 0 {
			prog.update("%s: %d of %d joined", protocol, i, p.n)
		}
	}
	return net, nil
}

func membershipOnce(p membershipParams, protocol string, fail float64, prog *progress) (membershipRun, error) {
	net, err := buildOverlay(p, protocol, prog)
	if err != nil {
		return membershipRun{}, err
	}
	s := net.s
	r := membershipRun{Protocol: protocol, Fail: fail, CycleSeconds: net.cycle.Seconds()}
	rng := rand.New(rand.NewPCG(p.seed, 0xf100d))
	alive := make([]bool, p.n)
	for i := range alive {
		alive[i] = true
	}
	var before sim.Stats
	for c := 0; c < p.warmup; c++ {
		if c == p.warmup/2 {
			before = s.Stats()
		}
		s.RunFor(net.cycle)
		prog.update("%s fail=%.2f: warm-up cycle %d of %d", protocol, fail, c+1, p.warmup)
	}
	if measured := p.warmup - p.warmup/2; measured > 0 {
		after := s.Stats()
		r.MsgsPerCycle = kindCounts{}
		for k, c := range after.ByKind {
			if d := c.Msgs - before.ByKind[k].Msgs; d > 0 {
				r.MsgsPerCycle[k] = round3(float64(d) / float64(p.n) / float64(measured))
			}
		}
	}
	r.Before = net.measure(rng, alive, p.sources, 0, false)
	r.InDegree, r.degrees = net.inDegrees(alive)

	// Crash a fraction of the nodes at once.
	for _, i := range rng.Perm(p.n)[:int(math.Round(fail*float64(p.n)))] {
		alive[i] = false
		s.Crash(net.ids[i])
	}
	for _, a := range alive {
		if a {
			r.Survivors++
		}
	}
	first := net.measure(rng, alive, p.sources, 0, true)
	r.FirstFlood = first.Reliability
	r.After = append(r.After, first)
	r.perCycle = append(r.perCycle, first.Reliability)
	for c := 1; c <= p.cycles; c++ {
		s.RunFor(net.cycle)
		fig := net.measure(rng, alive, p.sources, c, true)
		r.After = append(r.After, fig)
		r.perCycle = append(r.perCycle, fig.Reliability)
		if r.Recovered == nil && fig.Reliability >= 0.99 {
			c := c
			r.Recovered = &c
		}
		prog.update("%s fail=%.2f: cycle %d of %d after the crash, reliability %.3f", protocol, fail, c, p.cycles, fig.Reliability)
	}
	st := s.Stats()
	r.Sim = simSummary{Events: st.Events, Messages: st.Sent.Msgs, Bytes: st.Sent.Bytes, PeerDowns: st.PeerDowns}
	return r, nil
}

// measure floods from random live sources over the views and reports the mean fraction
// of live nodes reached, and the largest connected component of live nodes. With
// detect, every node the flood reached learns which of its neighbours are dead (the
// flood's sends to them fail), as in the paper's simulations.
func (net *overlayNet) measure(rng *rand.Rand, alive []bool, sources, cycle int, detect bool) overlayFig {
	var live []int
	for i, a := range alive {
		if a {
			live = append(live, i)
		}
	}
	fig := overlayFig{Cycle: cycle}
	if len(live) == 0 {
		return fig
	}
	views := make([][]int, len(alive))
	for _, i := range live {
		for _, q := range net.view(i) {
			if j, ok := net.index[q]; ok {
				views[i] = append(views[i], j)
			}
		}
	}
	reachedAny := make([]bool, len(alive))
	var sum float64
	for k := 0; k < sources; k++ {
		src := live[rng.IntN(len(live))]
		seen := make([]bool, len(alive))
		seen[src] = true
		queue := []int{src}
		count := 1
		for len(queue) > 0 {
			i := queue[0]
			queue = queue[1:]
			reachedAny[i] = true
			for _, j := range views[i] {
				if !seen[j] && alive[j] {
					seen[j] = true
					count++
					queue = append(queue, j)
				}
			}
		}
		sum += float64(count) / float64(len(live))
	}
	fig.Reliability = round4(sum / float64(sources))
	fig.LargestComponent = round4(float64(largestComponent(views, alive)) / float64(len(live)))
	fig.Connected = fig.LargestComponent == 1
	if detect {
		for _, i := range live {
			if !reachedAny[i] {
				continue
			}
			for _, j := range views[i] {
				if !alive[j] {
					_ = net.s.Input(net.ids[i], protocols.PeerDown{Peer: net.ids[j], Err: errFloodDetect})
				}
			}
		}
	}
	return fig
}

var errFloodDetect = fmt.Errorf("send failed during a flood")

// largestComponent counts the nodes of the largest connected component of live nodes,
// the views taken as undirected links.
func largestComponent(views [][]int, alive []bool) int {
	adj := make([][]int, len(views))
	for i, vs := range views {
		for _, j := range vs {
			if alive[i] && alive[j] {
				adj[i] = append(adj[i], j)
				adj[j] = append(adj[j], i)
			}
		}
	}
	seen := make([]bool, len(views))
	best := 0
	for i := range views {
		if !alive[i] || seen[i] {
			continue
		}
		size := 0
		stack := []int{i}
		seen[i] = true
		for len(stack) > 0 {
			v := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			size++
			for _, w := range adj[v] {
				if !seen[w] {
					seen[w] = true
					stack = append(stack, w)
				}
			}
		}
		best = max(best, size)
	}
	return best
}

func (net *overlayNet) inDegrees(alive []bool) (degreeFig, map[int]int) {
	deg := make([]int, len(alive))
	for i, a := range alive {
		if !a {
			continue
		}
		for _, q := range net.view(i) {
			if j, ok := net.index[q]; ok {
				deg[j]++
			}
		}
	}
	hist := map[int]int{}
	fig := degreeFig{Min: math.MaxInt}
	var sum, sq float64
	n := 0
	for i, d := range deg {
		if !alive[i] {
			continue
		}
		n++
		hist[d]++
		fig.Min = min(fig.Min, d)
		fig.Max = max(fig.Max, d)
		sum += float64(d)
		sq += float64(d) * float64(d)
	}
	fig.Mean = round3(sum / float64(n))
	fig.Std = round3(math.Sqrt(math.Max(0, sq/float64(n)-(sum/float64(n))*(sum/float64(n)))))
	keys := make([]int, 0, len(hist))
	for d := range hist {
		keys = append(keys, d)
	}
	slices.Sort(keys)
	for _, d := range keys {
		fig.Hist = append(fig.Hist, [2]int{d, hist[d]})
	}
	return fig, hist
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
func round4(x float64) float64 { return math.Round(x*10000) / 10000 }
