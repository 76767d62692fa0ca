package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
	"github.com/unsserv/go-unsserv/sim"
)

func init() {
	experiments["sampling"] = experiment{
		summary: "peer sampling (MRWB, RWD, a plain random walk) on a graph with heavy-tailed degrees: chi-square and KL of the samples against uniform, messages per sample",
		run:     runSampling,
	}
}

// samplingParams are the flags of the sampling experiment.
type samplingParams struct {
	protocols []string
	walks     []int // walk lengths to sweep; nil: each protocol's default
	n         int
	m         int
	samples   int
	seed      uint64
	latency   time.Duration
	warmup    time.Duration
	batch     int
	gap       time.Duration
}

var samplingNames = []string{"mrwb", "rwd", "naive"}

func parseSampling(args []string) (samplingParams, error) {
	fs := flag.NewFlagSet("lab sampling", flag.ContinueOnError)
	protos := fs.String("protocol", "mrwb,rwd,naive", "sampling algorithm: mrwb, rwd or naive (a plain random walk); a comma-separated list runs each")
	n := fs.Int("n", 1000, "number of nodes")
	m := fs.Int("m", 2, "links each node brings when it joins the preferential-attachment graph (its minimum degree)")
	samples := fs.Int("samples", 0, "samples drawn per protocol, from origins drawn uniformly; 0 means 30 per node")
	walks := fs.String("walk", "", "walk lengths (steps) to sweep, e.g. 10,25,50; empty: each algorithm's default (MRWB 25, RWD 40, naive 25)")
	seed := fs.Uint64("seed", 1, "seed of the whole run (graph, latencies, walks, origins)")
	latency := fs.Duration("latency", 10*time.Millisecond, "mean one-way link latency (drawn uniformly in [latency/2, 3 latency/2])")
	warmup := fs.Duration("warmup", 30*time.Second, "virtual time before the first sample (links, and RWD's weights, settle)")
	batch := fs.Int("batch", 100, "samples asked for at once, every -gap")
	gap := fs.Duration("gap", 100*time.Millisecond, "virtual time between two batches")
	if err := fs.Parse(args); err != nil {
		return samplingParams{}, err
	}
	p := samplingParams{n: *n, m: *m, samples: *samples, seed: *seed, latency: *latency, warmup: *warmup, batch: *batch, gap: *gap}
	if p.samples == 0 {
		p.samples = 30 * p.n
	}
	for _, s := range strings.Split(*protos, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(samplingNames, s) {
			return p, fmt.Errorf("-protocol %q: use %s", s, strings.Join(samplingNames, ", "))
		}
		p.protocols = append(p.protocols, s)
	}
	if strings.TrimSpace(*walks) != "" {
		for _, s := range strings.Split(*walks, ",") {
			w, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || w < 1 || w > 10000 {
				return p, fmt.Errorf("-walk %q: give walk lengths between 1 and 10000", s)
			}
			p.walks = append(p.walks, w)
		}
	}
	switch {
	case p.m < 1:
		return p, fmt.Errorf("-m %d: at least 1", p.m)
	case p.n < p.m+2:
		return p, fmt.Errorf("-n %d: at least m+2 nodes", p.n)
	case p.samples < 1 || p.batch < 1:
		return p, fmt.Errorf("-samples and -batch must be positive")
	case p.gap <= 0 || p.latency < 0 || p.warmup < 0:
		return p, fmt.Errorf("-gap must be positive; -latency and -warmup not negative")
	}
	return p, nil
}

// Figures of the experiment (JSON). No wall-clock value goes in here.
type samplingResult struct {
	Experiment   string        `json:"experiment"`
	Graph        string        `json:"graph"`
	N            int           `json:"n"`
	M            int           `json:"m"`
	Seed         uint64        `json:"seed"`
	Samples      int           `json:"samples"`
	LatencyMs    float64       `json:"latency_ms"`
	WarmupMs     float64       `json:"warmup_ms"`
	Degree       degreeSummary `json:"degree"`
	RWDMaxDegree int           `json:"rwd_max_degree"` // dmax given to RWD: the graph's largest degree + 1
	Runs         []samplingRun `json:"runs"`
}

type degreeSummary struct {
	Min  int     `json:"min"`
	Max  int     `json:"max"`
	Mean float64 `json:"mean"`
	P50  int     `json:"p50"`
	P99  int     `json:"p99"`
}

type samplingRun struct {
	Protocol   string  `json:"protocol"`
	WalkLength int     `json:"walk_length"`
	Answered   int     `json:"answered"`
	Chi2       float64 `json:"chi2"`
	DF         int     `json:"df"`
	P          float64 `json:"p_value"`
	Uniform    bool    `json:"uniform_at_5pct"` // p >= 0.05
	KLBits     float64 `json:"kl_bits"`
	KLFloor    float64 `json:"kl_floor_bits"` // a perfect sampler's expected KL with this many samples
	MinRatio   float64 `json:"min_count_ratio"`
	MaxRatio   float64 `json:"max_count_ratio"`
	// Messages while sampling: those of the walks (moves, bounces, backtracks, results)
	// per sample, and upkeep (links, RWD's weights) per node, warm-up included.
	WalkMsgsPerSample float64           `json:"walk_msgs_per_sample"`
	UpkeepPerNode     float64           `json:"upkeep_msgs_per_node"`
	UpkeepPerNodeMin  float64           `json:"upkeep_msgs_per_node_per_min"` // after the warm-up
	MsgsByKind        map[string]uint64 `json:"msgs_by_kind"`
	HopsPerSample     float64           `json:"hops_per_sample"`
	BouncesPerSample  float64           `json:"bounces_per_sample"`
	WalksPerSample    float64           `json:"walks_per_sample"` // attempts: walks ending at the origin are replaced
	// The exact output distribution of the sampler, from the walk's transition matrix
	// at the end of the run (MRWB and the plain walk: from the degrees; RWD: the
	// weights the cores agreed on), the restart of walks that end at their origin
	// included, origins uniform (every node as origin: ExactOrigins): its total
	// variation distance from uniform over the nodes, and the chi-square excess over
	// DF it makes a test of this many samples expect. Unlike Chi2, no sampling noise.
	ExactTV         float64 `json:"exact_tv"`
	ExactChi2Excess float64 `json:"exact_chi2_excess"`
	ExactOrigins    int     `json:"exact_origins"`
	// MeanSelfLoop is the probability that a step stays put, averaged over the nodes
	// (MRWB: rejected proposals; RWD: the self-loop weights; 0 for the plain walk).
	MeanSelfLoop float64      `json:"mean_self_loop"`
	P50LatencyMs float64      `json:"p50_latency_ms"`
	P95LatencyMs float64      `json:"p95_latency_ms"`
	ByDegree     []degreeBias `json:"by_degree"`
	Sim          simSummary   `json:"sim"`
}

// degreeBias is how often the nodes of a degree class were sampled, over the expected.
type degreeBias struct {
	Lo    int     `json:"degree_lo"`
	Hi    int     `json:"degree_hi"`
	Nodes int     `json:"nodes"`
	Ratio float64 `json:"count_ratio"`
}

func runSampling(args []string, prog *progress) (any, []plotSpec, error) {
	p, err := parseSampling(args)
	if err != nil {
		return nil, nil, err
	}
	adj := preferentialGraph(p.n, p.m, rand.New(rand.NewPCG(p.seed, 0x6a7a)))
	degs := make([]int, p.n)
	for i, ns := range adj {
		degs[i] = len(ns)
	}
	sorted := slices.Clone(degs)
	slices.Sort(sorted)
	sum := 0
	for _, d := range degs {
		sum += d
	}
	res := samplingResult{
		Experiment: "sampling", Graph: "preferential attachment (Barabási-Albert)", N: p.n, M: p.m, Seed: p.seed,
		Samples: p.samples, LatencyMs: virtualMs(p.latency), WarmupMs: virtualMs(p.warmup),
		Degree: degreeSummary{Min: sorted[0], Max: sorted[p.n-1], Mean: round3(float64(sum) / float64(p.n)),
			P50: sorted[p.n/2], P99: sorted[min(p.n-1, p.n*99/100)]},
		RWDMaxDegree: sorted[p.n-1] + 1,
	}
	for _, name := range p.protocols {
		walks := p.walks
		if walks == nil {
			walks = []int{0}
		}
		for _, w := range walks {
			r, err := samplingOnce(p, adj, res.RWDMaxDegree, name, w, prog)
			if err != nil {
				return nil, nil, err
			}
			res.Runs = append(res.Runs, r)
		}
	}
	return res, samplingPlots(res, degs), nil
}

// preferentialGraph builds a Barabási-Albert graph: a clique of m+1 nodes, then each new
// node links to m distinct earlier nodes drawn in proportion to their degree.
func preferentialGraph(n, m int, rng *rand.Rand) [][]int {
	adj := make([][]int, n)
	var ends []int // both ends of every link: drawing from it draws by degree
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

func samplingOnce(p samplingParams, adj [][]int, dmax int, name string, walk int, prog *progress) (samplingRun, error) {
	n := len(adj)
	ids, _ := sim.PeerIDs(p.seed, n)
	index := make(map[peer.ID]int, n)
	for i, id := range ids {
		index[id] = i
	}
	counts := make([]int, n)
	asked := map[uint64]time.Time{}
	var lat []float64
	kinds := map[string]uint64{}
	sampling_ := false
	var upkeepAfter uint64 // upkeep messages after the warm-up
	s, err := sim.New(sim.Config{
		Seed:       p.seed,
		Latency:    sim.Uniform{Min: p.latency / 2, Max: p.latency * 3 / 2},
		NewMessage: func() proto.Message { return new(sampling.Message) },
		Kind:       func(m proto.Message) string { return m.(*sampling.Message).Kind() },
		OnSend: func(_ time.Time, _ int, _, _ peer.ID, m proto.Message) {
			k := m.(*sampling.Message).Kind()
			if sampling_ || !sampling.WalkKind(k) {
				kinds[k]++
			}
			if sampling_ && !sampling.WalkKind(k) {
				upkeepAfter++
			}
		},
		OnEvent: func(now time.Time, _ peer.ID, ev protocols.Output) {
			if e, ok := ev.(sampling.Sampled); ok {
				if j, ok := index[e.Node.PeerID()]; ok {
					counts[j]++
				}
				if at, ok := asked[e.ID]; ok {
					lat = append(lat, virtualMs(now.Sub(at)))
					delete(asked, e.ID)
				}
			}
		},
	})
	if err != nil {
		return samplingRun{}, err
	}
	// The simulator reports an unreachable peer after 1 s (sim.Config.DetectDelay): a
	// node need not remember the walks it passed on for longer than a few seconds.
	wc := sampling.WalkConfig{WalkLength: walk, HopTimeout: 3 * time.Second}
	var stats []func() sampling.Stats
	var rwds []*sampling.RWD
	for i, id := range ids {
		// Node i's core draws from NodeRand(seed, i), whatever the protocol.
		rng := sim.NodeRand(p.seed, i)
		var c protocols.Core
		switch name {
		case "mrwb":
			x, err := sampling.NewMRWB(id, sampling.MRWBConfig{WalkConfig: wc}, rng)
			if err != nil {
				return samplingRun{}, err
			}
			c, stats = x, append(stats, x.Stats)
		case "rwd":
			x, err := sampling.NewRWD(id, sampling.RWDConfig{WalkConfig: wc, MaxDegree: dmax}, rng)
			if err != nil {
				return samplingRun{}, err
			}
			c, stats, rwds = x, append(stats, x.Stats), append(rwds, x)
		case "naive":
			x, err := sampling.NewRandomWalk(id, sampling.RandomWalkConfig{WalkConfig: wc}, rng)
			if err != nil {
				return samplingRun{}, err
			}
			c, stats = x, append(stats, x.Stats)
		}
		if err := s.Add(id, c); err != nil {
			return samplingRun{}, err
		}
		// The fixed graph stands in for the membership: each node is given its
		// neighbours once, as the runtime passes a membership's.
		peers := make([]peer.ID, len(adj[i]))
		for k, j := range adj[i] {
			peers[k] = ids[j]
		}
		_ = s.Input(id, protocols.Neighbours{Peers: peers})
	}
	s.RunFor(p.warmup)

	sampling_ = true
	rng := rand.New(rand.NewPCG(p.seed, 0x5a3b1e))
	var next uint64
	for k := 0; k < p.samples; k += p.batch {
		for b := 0; b < p.batch && k+b < p.samples; b++ {
			next++
			asked[next] = s.Now()
			_ = s.Input(ids[rng.IntN(n)], protocols.Call{Req: sampling.Sample{ID: next}})
		}
		s.RunFor(p.gap)
		prog.update("%s: %d of %d samples asked", name, min(k+p.batch, p.samples), p.samples)
	}
	s.RunFor(60 * time.Second) // the last walks come back (or time out and are replaced)

	var st sampling.Stats
	for _, f := range stats {
		x := f()
		st.Walks += x.Walks
		st.Hops += x.Hops
		st.Bounces += x.Bounces
	}
	u := sampling.TestUniform(counts)
	wl := walk
	if wl == 0 {
		wl = map[string]int{"mrwb": 25, "rwd": 40, "naive": 25}[name]
	}
	r := samplingRun{
		Protocol: name, WalkLength: wl, Answered: u.Samples,
		Chi2: round3(u.Chi2), DF: u.DF, P: roundSig(u.P), Uniform: u.P >= 0.05,
		KLBits: round4(u.KL), KLFloor: round4(u.Floor), MinRatio: round3(u.MinRatio), MaxRatio: round3(u.MaxRatio),
		MsgsByKind: kinds,
	}
	var walkMsgs, upkeep uint64
	for k, c := range kinds {
		if sampling.WalkKind(k) {
			walkMsgs += c
		} else {
			upkeep += c
		}
	}
	if u.Samples > 0 {
		r.WalkMsgsPerSample = round3(float64(walkMsgs) / float64(u.Samples))
		r.HopsPerSample = round3(float64(st.Hops) / float64(u.Samples))
		r.BouncesPerSample = round3(float64(st.Bounces) / float64(u.Samples))
		r.WalksPerSample = round3(float64(st.Walks) / float64(u.Samples))
	}
	r.UpkeepPerNode = round3(float64(upkeep) / float64(n))
	r.UpkeepPerNodeMin = round3(float64(upkeepAfter) / float64(n) / (s.Now().Sub(sim.Epoch) - p.warmup).Minutes())
	slices.Sort(lat)
	r.P50LatencyMs = round3(rankPercentile(lat, 0.5))
	r.P95LatencyMs = round3(rankPercentile(lat, 0.95))
	r.ByDegree = biasByDegree(adj, counts, u.Samples)
	rows := transitionRows(name, adj, rwds, index)
	prog.update("%s: exact output distribution (%d origins, %d steps)", name, n, wl)
	r.ExactTV, r.ExactChi2Excess, r.ExactOrigins = exactBias(rows, wl, u.Samples)
	for i, row := range rows {
		for _, e := range row {
			if e.to == i {
				r.MeanSelfLoop += e.p / float64(n)
			}
		}
	}
	r.MeanSelfLoop = round4(r.MeanSelfLoop)
	ss := s.Stats()
	r.Sim = simSummary{Events: ss.Events, Messages: ss.Sent.Msgs, Bytes: ss.Sent.Bytes, PeerDowns: ss.PeerDowns}
	return r, nil
}

// biasByDegree groups the nodes by degree (classes doubling in width) and gives each
// class's samples over what a uniform sampler would give it.
func biasByDegree(adj [][]int, counts []int, total int) []degreeBias {
	type acc struct{ nodes, count int }
	classes := map[int]*acc{}
	for i, ns := range adj {
		k := int(math.Floor(math.Log2(float64(max(1, len(ns))))))
		if classes[k] == nil {
			classes[k] = &acc{}
		}
		classes[k].nodes++
		classes[k].count += counts[i]
	}
	keys := make([]int, 0, len(classes))
	for k := range classes {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var out []degreeBias
	for _, k := range keys {
		a := classes[k]
		exp := float64(total) * float64(a.nodes) / float64(len(adj))
		out = append(out, degreeBias{Lo: 1 << k, Hi: 1<<(k+1) - 1, Nodes: a.nodes, Ratio: round3(float64(a.count) / exp)})
	}
	return out
}

// roundSig keeps four significant digits (p-values span many orders of magnitude).
func roundSig(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 4, 64), 64)
	return v
}

// samplingPlots: samples over expected by degree class, one line per run; KL against
// uniform per run, beside a perfect sampler's; p-value against walk length when swept.
func samplingPlots(res samplingResult, degs []int) []plotSpec {
	title := fmt.Sprintf("N=%d, BA m=%d, %d samples", res.N, res.M, res.Samples)
	bias := newPlot("Samples over the uniform expectation, by degree\n"+title, "degree (classes doubling in width, at their lower bound)", "samples / expected (log)")
	bias.X.Scale = plot.LogScale{}
	bias.X.Tick.Marker = pow2Ticks{}
	bias.Y.Scale = plot.LogScale{}
	bias.Y.Tick.Marker = pow2Ticks{}
	bias.Legend.Top, bias.Legend.Left = true, true
	lo, hi := 0.5, 2.0
	for _, r := range res.Runs {
		for _, b := range r.ByDegree {
			lo, hi = math.Min(lo, b.Ratio/1.3), math.Max(hi, b.Ratio*1.3)
		}
	}
	bias.Y.Min, bias.Y.Max = math.Max(lo, 1.0/64), hi
	for i, r := range res.Runs {
		pts := make(plotter.XYs, len(r.ByDegree))
		for k, b := range r.ByDegree {
			pts[k] = plotter.XY{X: float64(b.Lo), Y: math.Max(b.Ratio, 1.0/64)}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			continue
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		bias.Add(l, sc)
		bias.Legend.Add(fmt.Sprintf("%s, %d steps", r.Protocol, r.WalkLength), l, sc)
	}
	specs := []plotSpec{{"sampling-degree.svg", saver(bias)}}

	names := make([]string, len(res.Runs))
	kl := make(plotter.Values, len(res.Runs))
	floor := make(plotter.Values, len(res.Runs))
	for i, r := range res.Runs {
		names[i] = fmt.Sprintf("%s/%d", r.Protocol, r.WalkLength)
		kl[i] = r.KLBits
		floor[i] = r.KLFloor
	}
	klp := newPlot("KL divergence of the samples from uniform\n"+title, "protocol / walk length", "bits")
	if b, err := plotter.NewBarChart(kl, vg.Points(18)); err == nil {
		b.Color, b.LineStyle.Width, b.Offset = plotutil.Color(0), 0, -vg.Points(9)
		klp.Add(b)
		klp.Legend.Add("measured", b)
	}
	if b, err := plotter.NewBarChart(floor, vg.Points(18)); err == nil {
		b.Color, b.LineStyle.Width, b.Offset = plotutil.Color(2), 0, vg.Points(9)
		klp.Add(b)
		klp.Legend.Add("a perfect sampler (expected)", b)
	}
	klp.Legend.Top, klp.Legend.Left = true, true
	klp.NominalX(names...)
	klp.X.Min, klp.X.Max = -0.7, float64(len(names))-0.3
	top := 0.0
	for i := range kl {
		top = math.Max(top, math.Max(kl[i], floor[i]))
	}
	klp.Y.Min, klp.Y.Max = 0, top*1.25
	specs = append(specs, plotSpec{"sampling-kl.svg", saver(klp)})

	// p-value against walk length, when several were run.
	byProto := map[string][]samplingRun{}
	var protos []string
	for _, r := range res.Runs {
		if _, ok := byProto[r.Protocol]; !ok {
			protos = append(protos, r.Protocol)
		}
		byProto[r.Protocol] = append(byProto[r.Protocol], r)
	}
	sweep := false
	for _, rs := range byProto {
		sweep = sweep || len(rs) > 1
	}
	if sweep {
		wp := newPlot(fmt.Sprintf("Chi-square p-value against walk length\n%s; p below %g drawn at %g", title, pFloor, pFloor), "walk length (steps)", "p-value (log)")
		wp.Y.Scale = plot.LogScale{}
		wp.Y.Tick.Marker = decadeTicks{}
		wp.Y.Min, wp.Y.Max = pFloor/3, 2
		for i, proto := range protos {
			rs := byProto[proto]
			pts := make(plotter.XYs, len(rs))
			for k, r := range rs {
				pts[k] = plotter.XY{X: float64(r.WalkLength), Y: math.Max(r.P, pFloor)}
			}
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				continue
			}
			l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			wp.Add(l, sc)
			wp.Legend.Add(proto, l, sc)
		}
		if l, err := plotter.NewLine(plotter.XYs{{X: float64(minWalk(res.Runs)), Y: 0.05}, {X: float64(maxWalk(res.Runs)), Y: 0.05}}); err == nil {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			wp.Add(l)
			wp.Legend.Add("5%", l)
		}
		// Bottom right, lifted above the line of p-values at the floor.
		wp.Legend.Top, wp.Legend.Left = false, false
		wp.Legend.YOffs = vg.Points(60)
		specs = append(specs, plotSpec{"sampling-walk.svg", saver(wp)})

		tv := newPlot("Exact distance from uniform against walk length\n"+title, "walk length (steps)", "total variation (log)")
		tv.Y.Scale = plot.LogScale{}
		tv.Y.Tick.Marker = decadeTicks{}
		tv.Y.Min, tv.Y.Max = 5e-5, 1
		for i, proto := range protos {
			rs := byProto[proto]
			pts := make(plotter.XYs, len(rs))
			for k, r := range rs {
				pts[k] = plotter.XY{X: float64(r.WalkLength), Y: math.Max(r.ExactTV, 1e-4)}
			}
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				continue
			}
			l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			tv.Add(l, sc)
			tv.Legend.Add(proto, l, sc)
		}
		tv.Legend.Top, tv.Legend.Left = false, true
		specs = append(specs, plotSpec{"sampling-walk-tv.svg", saver(tv)})
	}
	return specs
}

func minWalk(rs []samplingRun) int {
	m := math.MaxInt
	for _, r := range rs {
		m = min(m, r.WalkLength)
	}
	return m
}

func maxWalk(rs []samplingRun) int {
	m := 0
	for _, r := range rs {
		m = max(m, r.WalkLength)
	}
	return m
}

// pFloor is where p-values too small to draw on a log axis are drawn.
const pFloor = 1e-12

// pow2Ticks labels a log axis at the powers of two.
type pow2Ticks struct{}

func (pow2Ticks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for v := 1.0 / 64; v <= hi; v *= 2 {
		if v >= lo {
			ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
	}
	return ts
}

// step is one entry of a sparse transition row.
type step struct {
	to int
	p  float64
}

// transitionRows returns the walk's transition matrix, row by row.
func transitionRows(name string, adj [][]int, rwds []*sampling.RWD, index map[peer.ID]int) [][]step {
	rows := make([][]step, len(adj))
	for i, ns := range adj {
		self := 1.0
		switch name {
		case "mrwb":
			for _, j := range ns {
				p := math.Min(1/float64(len(ns)), 1/float64(len(adj[j])))
				rows[i] = append(rows[i], step{j, p})
				self -= p
			}
		case "naive":
			for _, j := range ns {
				rows[i] = append(rows[i], step{j, 1 / float64(len(ns))})
			}
			self = 0
		case "rwd":
			links, s := rwds[i].Weights()
			for _, q := range rwds[i].Usable() {
				rows[i] = append(rows[i], step{index[q], links[q]})
			}
			self = s
		}
		if self > 0 {
			rows[i] = append(rows[i], step{i, self})
		}
	}
	return rows
}

// exactBias computes the sampler's output distribution: from each origin o, the walk's
// distribution after L steps, conditioned on not ending at o (walks that end at their
// origin are replaced), averaged over every origin. (Averaging over a random subset of
// origins is no shortcut: the distributions of unmixed walks differ so much from one
// origin to the next that the subset's noise swamps the bias.) It returns the total
// variation distance from uniform and the chi-square excess expected with the given
// number of samples. Cost: N L (links + N) operations.
func exactBias(rows [][]step, L, samples int) (tv, excess float64, origins int) {
	n := len(rows)
	os := make([]int, n)
	for i := range os {
		os[i] = i
	}
	q := make([]float64, n)
	x, y := make([]float64, n), make([]float64, n)
	for _, o := range os {
		clear(x)
		x[o] = 1
		for l := 0; l < L; l++ {
			clear(y)
			for a, v := range x {
				if v == 0 {
					continue
				}
				for _, e := range rows[a] {
					y[e.to] += v * e.p
				}
			}
			x, y = y, x
		}
		if stay := x[o]; stay < 1 {
			for j, v := range x {
				if j != o {
					q[j] += v / (1 - stay) / float64(len(os))
				}
			}
		}
	}
	u := 1 / float64(n)
	for _, v := range q {
		tv += math.Abs(v - u)
		excess += (v - u) * (v - u) / u
	}
	return round4(tv / 2), round3(excess * float64(samples)), len(os)
}

// decadeTicks labels a log axis at the powers of ten.
type decadeTicks struct{}

func (decadeTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		v := math.Pow(10, e)
		if v < lo*0.999 || v > hi*1.001 {
			continue
		}
		label := strconv.FormatFloat(v, 'g', -1, 64)
		if e < -3 {
			label = fmt.Sprintf("1e%d", int(e))
		}
		ts = append(ts, plot.Tick{Value: v, Label: label})
	}
	return ts
}
