package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/sim"
)

func init() { clusteringRunners["tman"] = runTMan }

// tmanParams are the flags of `lab clustering -protocol tman`.
type tmanParams struct {
	n           int
	seed        uint64
	memberships []string
	topology    string
	view        int
	msgSize     int
	psi         int
	probe       int
	interval    time.Duration
	cycles      int
	warmup      int
	fail        float64
	failCycles  int
	joinGap     time.Duration
	latency     time.Duration
	replot      string
}

func parseTMan(args []string) (tmanParams, error) {
	fs := flag.NewFlagSet("lab clustering -protocol tman", flag.ContinueOnError)
	n := fs.Int("n", 1000, "number of nodes")
	seed := fs.Uint64("seed", 1, "seed of the whole run")
	memb := fs.String("membership", "newscast", "membership at layer 0: newscast, hyparview, or both comma-separated")
	topo := fs.String("topology", "ring", "where the nodes sit, rank = distance: ring or line (node i at position i)")
	view := fs.Int("view", 0, "T-Man's view size c (0: the default, 20)")
	msgSize := fs.Int("m", 0, "T-Man's message size m (0: the view size)")
	psi := fs.Int("psi", 0, "T-Man's psi: peers drawn among the psi best (0: the default, 2)")
	probe := fs.Int("probe", 0, "T-Man's Probe: every probe-th cycle the exchange goes to the oldest view entry (0: the default, 2; -1: never, the paper's selection)")
	interval := fs.Duration("interval", time.Second, "T-Man's cycle")
	cycles := fs.Int("cycles", 40, "T-Man cycles measured")
	warmup := fs.Int("warmup", 10, "membership cycles after the joins, before T-Man starts everywhere at once")
	fail := fs.Float64("fail", 0, "fraction of nodes that crash at once after the measured cycles (0: none)")
	failCycles := fs.Int("fail-cycles", 60, "cycles measured after the crash")
	joinGap := fs.Duration("join-gap", 10*time.Millisecond, "virtual time between two joins")
	latency := fs.Duration("latency", 10*time.Millisecond, "one-way link latency")
	replot := fs.String("replot", "", "read the figures from this clustering.json (of an earlier tman run) instead of running, and draw its plots")
	if err := fs.Parse(args); err != nil {
		return tmanParams{}, err
	}
	p := tmanParams{n: *n, seed: *seed, topology: *topo, view: *view, msgSize: *msgSize, psi: *psi, probe: *probe, interval: *interval,
		cycles: *cycles, warmup: *warmup, fail: *fail, failCycles: *failCycles, joinGap: *joinGap, latency: *latency, replot: *replot}
	for _, s := range strings.Split(*memb, ",") {
		switch s = strings.TrimSpace(s); s {
		case "newscast", "hyparview":
			p.memberships = append(p.memberships, s)
		default:
			return p, fmt.Errorf("-membership %q: use newscast or hyparview", s)
		}
	}
	cfg := p.config()
	switch {
	case p.n < 3:
		return p, fmt.Errorf("-n %d: at least 3 nodes", p.n)
	case p.topology != "ring" && p.topology != "line":
		return p, fmt.Errorf("-topology %q: ring or line", p.topology)
	case p.cycles < 1 || p.warmup < 0 || p.failCycles < 1:
		return p, fmt.Errorf("-cycles and -fail-cycles must be positive, -warmup not negative")
	case p.fail < 0 || p.fail >= 1:
		return p, fmt.Errorf("-fail %v: a fraction in [0, 1)", p.fail)
	case p.interval <= 0 || p.latency < 0 || p.joinGap < 0:
		return p, fmt.Errorf("-interval must be positive; -latency, -join-gap not negative")
	}
	if err := cfg.Validate(); err != nil {
		return p, err
	}
	if d := cfg.WithDefaults(); d.ViewSize >= p.n {
		return p, fmt.Errorf("-view %d: must be below -n", d.ViewSize)
	}
	return p, nil
}

func (p tmanParams) config() clustering.TManConfig {
	return clustering.TManConfig{ViewSize: p.view, MessageSize: p.msgSize, Psi: p.psi, Probe: p.probe, Interval: p.interval}
}

// Figures (JSON). No wall-clock value goes in here.
type tmanResult struct {
	Experiment  string    `json:"experiment"`
	Protocol    string    `json:"protocol"`
	N           int       `json:"n"`
	Seed        uint64    `json:"seed"`
	Topology    string    `json:"topology"`
	ViewSize    int       `json:"view_size"`
	MessageSize int       `json:"message_size"`
	Psi         int       `json:"psi"`
	Probe       int       `json:"probe"`
	IntervalMs  float64   `json:"interval_ms"`
	LatencyMs   float64   `json:"latency_ms"`
	Log2N       float64   `json:"log2_n"`
	Runs        []tmanRun `json:"runs"`
}

type tmanRun struct {
	Membership string `json:"membership"`
	// Cycles holds the figures at the start of T-Man (cycle 0) and after each cycle.
	Cycles []tmanCycle `json:"cycles"`
	// Converged95 is the first cycle after which the views hold at least 95% of their
	// ideal entries on average (nil: never); Converged99 the same at 99%.
	Converged95 *int `json:"cycles_to_0_95"`
	Converged99 *int `json:"cycles_to_0_99"`
	// Over log2 N, for the paper's O(log N).
	Converged95PerLog2N float64 `json:"cycles_to_0_95_over_log2_n"`
	// T-Man messages and bytes sent per node per cycle over the measured cycles.
	MsgsPerNodeCycle  map[string]float64 `json:"msgs_per_node_per_cycle"`
	BytesPerNodeCycle float64            `json:"bytes_per_node_per_cycle"`
	Fail              *tmanFail          `json:"fail,omitempty"`
	Sim               simSummary         `json:"sim"`
}

type tmanCycle struct {
	Cycle int `json:"cycle"`
	// IdealMean is the mean over live nodes of the fraction of the view (ViewSize
	// entries) that is ideal: live nodes at most as far as the ViewSize-th nearest live
	// node. IdealMin is the smallest such fraction; Perfect the fraction of live nodes
	// whose view is entirely ideal.
	IdealMean float64 `json:"ideal_mean"`
	IdealMin  float64 `json:"ideal_min"`
	Perfect   float64 `json:"perfect"`
	// Dead is the mean number of crashed nodes in a live view.
	Dead float64 `json:"dead_per_view"`
	// LargestComponent is the fraction of live nodes in the largest connected component
	// of the clustered overlay (T-Man's neighbours, links taken as undirected).
	LargestComponent float64 `json:"largest_component"`
}

type tmanFail struct {
	Fraction  float64     `json:"fraction"`
	Survivors int         `json:"survivors"`
	Cycles    []tmanCycle `json:"cycles"`
	// Purged is the first cycle after the crash with no crashed node in any live view.
	Purged *int `json:"cycles_to_purged"`
	// Recovered95 is the first cycle after the crash with views 95% ideal again.
	Recovered95 *int `json:"cycles_to_0_95"`
}

func runTMan(args []string, prog *progress) (any, []plotSpec, error) {
	p, err := parseTMan(args)
	if err != nil {
		return nil, nil, err
	}
	if p.replot != "" {
		b, err := os.ReadFile(p.replot)
		if err != nil {
			return nil, nil, err
		}
		var res tmanResult
		if err := json.Unmarshal(b, &res); err != nil || res.Protocol != "tman" || len(res.Runs) == 0 {
			return nil, nil, fmt.Errorf("-replot %s: not the figures of a tman run (%v)", p.replot, err)
		}
		return res, tmanPlots(res), nil
	}
	d := p.config().WithDefaults()
	res := tmanResult{Experiment: "clustering", Protocol: "tman", N: p.n, Seed: p.seed, Topology: p.topology,
		ViewSize: d.ViewSize, MessageSize: d.MessageSize, Psi: d.Psi, Probe: d.Probe, IntervalMs: virtualMs(p.interval),
		LatencyMs: virtualMs(p.latency), Log2N: round3(math.Log2(float64(p.n)))}
	for _, m := range p.memberships {
		r, err := tmanOnce(p, m, prog)
		if err != nil {
			return nil, nil, err
		}
		res.Runs = append(res.Runs, r)
	}
	return res, tmanPlots(res), nil
}

// tmanGate passes everything to the T-Man core but the first Start (the one the
// membership's join brings), so that every node starts T-Man at the same moment.
type tmanGate struct {
	core   *clustering.TMan
	starts int
}

func (g *tmanGate) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if _, ok := in.(protocols.Start); ok {
		g.starts++
		if g.starts == 1 {
			return nil
		}
	}
	return g.core.Handle(now, in)
}

// tmanWorld is the placement: node i at position i, on a ring or a line.
type tmanWorld struct {
	n    int
	ring bool
}

func (w tmanWorld) dist(a, b int) int {
	d := a - b
	if d < 0 {
		d = -d
	}
	if w.ring {
		d = min(d, w.n-d)
	}
	return d
}

func tmanOnce(p tmanParams, memb string, prog *progress) (tmanRun, error) {
	w := tmanWorld{n: p.n, ring: p.topology == "ring"}
	cfg := p.config()
	c := cfg.WithDefaults().ViewSize
	cores := make([]*clustering.TMan, p.n)
	var index map[peer.ID]int
	up := &upperLayer{
		layer: sim.Layer{
			NewMessage: func() proto.Message { return new(clustering.TManMessage) },
			Kind:       func(m proto.Message) string { return clustering.TManKind(m.(*clustering.TManMessage)) },
		},
		newCore: func(i int, id peer.ID) (protocols.Core, error) {
			rank := func(nd clustering.Node) float64 {
				j, ok := index[nd.ID]
				if !ok {
					return math.Inf(1)
				}
				return float64(w.dist(i, j))
			}
			// Membership cores draw from NodeRand(seed, i), T-Man's from NodeRand(seed, N+i).
			tm, err := clustering.NewTMan(id, cfg, rank, sim.NodeRand(p.seed, p.n+i))
			if err != nil {
				return nil, err
			}
			cores[i] = tm
			return &tmanGate{core: tm}, nil
		},
	}
	ids, err := sim.PeerIDs(p.seed, p.n)
	if err != nil {
		return tmanRun{}, err
	}
	index = make(map[peer.ID]int, p.n)
	for i, id := range ids {
		index[id] = i
	}
	mp := membershipParams{n: p.n, seed: p.seed, joinGap: p.joinGap, latency: p.latency}
	net, err := buildStack(mp, memb, up, prog)
	if err != nil {
		return tmanRun{}, fmt.Errorf("tman over %s: %w", memb, err)
	}
	s := net.s
	for k := 0; k < p.warmup; k++ {
		s.RunFor(net.cycle)
		prog.update("tman over %s: membership warm-up cycle %d of %d", memb, k+1, p.warmup)
	}
	for _, id := range ids {
		_ = s.InputLayer(id, 1, protocols.Start{})
	}
	alive := make([]bool, p.n)
	for i := range alive {
		alive[i] = true
	}
	m := &tmanMeasure{w: w, c: c, cores: cores, index: index, alive: alive}
	r := tmanRun{Membership: memb}
	before := s.Stats()
	for k := 0; k <= p.cycles; k++ {
		if k > 0 {
			s.RunFor(p.interval)
		}
		fig := m.measure(k)
		r.Cycles = append(r.Cycles, fig)
		if r.Converged95 == nil && fig.IdealMean >= 0.95 {
			r.Converged95 = &fig.Cycle
		}
		if r.Converged99 == nil && fig.IdealMean >= 0.99 {
			r.Converged99 = &fig.Cycle
		}
		prog.update("tman over %s: cycle %d of %d, %.3f ideal", memb, k, p.cycles, fig.IdealMean)
	}
	if r.Converged95 != nil {
		r.Converged95PerLog2N = round3(float64(*r.Converged95) / math.Log2(float64(p.n)))
	}
	after := s.Stats()
	r.MsgsPerNodeCycle = map[string]float64{}
	for k, cnt := range after.ByKind {
		if strings.HasPrefix(k, "TMAN_") {
			if d := cnt.Msgs - before.ByKind[k].Msgs; d > 0 {
				r.MsgsPerNodeCycle[k] = round3(float64(d) / float64(p.n) / float64(p.cycles))
			}
		}
	}
	if len(after.ByLayer) > 1 {
		r.BytesPerNodeCycle = round3(float64(after.ByLayer[1].Bytes-before.ByLayer[1].Bytes) / float64(p.n) / float64(p.cycles))
	}
	if p.fail > 0 {
		f := &tmanFail{Fraction: p.fail}
		rng := rand.New(rand.NewPCG(p.seed, 0xfa11))
		for _, i := range rng.Perm(p.n)[:int(math.Round(p.fail*float64(p.n)))] {
			alive[i] = false
			s.Crash(ids[i])
		}
		for _, a := range alive {
			if a {
				f.Survivors++
			}
		}
		for k := 0; k <= p.failCycles; k++ {
			if k > 0 {
				s.RunFor(p.interval)
			}
			fig := m.measure(k)
			f.Cycles = append(f.Cycles, fig)
			if f.Purged == nil && fig.Dead == 0 {
				f.Purged = &fig.Cycle
			}
			if f.Recovered95 == nil && fig.IdealMean >= 0.95 {
				f.Recovered95 = &fig.Cycle
			}
			prog.update("tman over %s: cycle %d after the crash, %.3f ideal", memb, k, fig.IdealMean)
		}
		r.Fail = f
	}
	st := s.Stats()
	r.Sim = simSummary{Events: st.Events, Messages: st.Sent.Msgs, Bytes: st.Sent.Bytes, PeerDowns: st.PeerDowns}
	return r, nil
}

// tmanMeasure computes the figures of one moment.
type tmanMeasure struct {
	w     tmanWorld
	c     int
	cores []*clustering.TMan
	index map[peer.ID]int
	alive []bool
}

func (m *tmanMeasure) measure(cycle int) tmanCycle {
	var live []int
	for i, a := range m.alive {
		if a {
			live = append(live, i)
		}
	}
	fig := tmanCycle{Cycle: cycle, IdealMin: 1}
	c := min(m.c, len(live)-1)
	perfect, dead := 0, 0
	for k, i := range live {
		bound := m.bound(live, k, c)
		good := 0
		for _, nd := range m.cores[i].View() {
			j, ok := m.index[nd.ID]
			switch {
			case !ok:
			case !m.alive[j]:
				dead++
			case m.w.dist(i, j) <= bound:
				good++
			}
		}
		f := float64(min(good, c)) / float64(c)
		fig.IdealMean += f
		fig.IdealMin = min(fig.IdealMin, f)
		if good >= c {
			perfect++
		}
	}
	fig.IdealMean = sig(fig.IdealMean / float64(len(live)))
	fig.IdealMin = sig(fig.IdealMin)
	fig.Perfect = sig(float64(perfect) / float64(len(live)))
	fig.Dead = sig(float64(dead) / float64(len(live)))
	views := make([][]int, len(m.alive))
	for _, i := range live {
		for _, q := range m.cores[i].Neighbours() {
			if j, ok := m.index[q]; ok {
				views[i] = append(views[i], j)
			}
		}
	}
	fig.LargestComponent = sig(float64(largestComponent(views, m.alive)) / float64(len(live)))
	return fig
}

// bound returns the distance of the c-th nearest live node to live[k] (live is sorted
// by position): walk outwards on both sides, c steps.
func (m *tmanMeasure) bound(live []int, k, c int) int {
	n := len(live)
	i := live[k]
	l, r := 1, 1 // offsets in live, left and right
	d := 0
	for step := 0; step < c; step++ {
		dl, dr := math.MaxInt, math.MaxInt
		if m.w.ring || k-l >= 0 {
			dl = m.w.dist(i, live[((k-l)%n+n)%n])
		}
		if m.w.ring || k+r < n {
			dr = m.w.dist(i, live[(k+r)%n])
		}
		if dl <= dr {
			d = dl
			l++
		} else {
			d = dr
			r++
		}
	}
	return d
}

func tmanPlots(res tmanResult) []plotSpec {
	var specs []plotSpec
	conv := newPlot(fmt.Sprintf("T-Man: ideal view entries per cycle\nN=%d, %s, c=%d, seed %d", res.N, res.Topology, res.ViewSize, res.Seed),
		"cycles since T-Man started", "fraction of view entries ideal")
	conv.Y.Min, conv.Y.Max = 0, 1.02
	for i, r := range res.Runs {
		for k, series := range []struct {
			name string
			at   func(tmanCycle) float64
		}{
			{"mean", func(c tmanCycle) float64 { return c.IdealMean }},
			{"perfect views", func(c tmanCycle) float64 { return c.Perfect }},
		} {
			pts := make(plotter.XYs, len(r.Cycles))
			for j, c := range r.Cycles {
				pts[j] = plotter.XY{X: float64(c.Cycle), Y: series.at(c)}
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				continue
			}
			l.Color = plotutil.Color(i)
			l.Width = vg.Points(1.5)
			if k == 1 {
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			conv.Add(l)
			conv.Legend.Add(fmt.Sprintf("%s, %s", r.Membership, series.name), l)
		}
	}
	if l, err := plotter.NewLine(plotter.XYs{{X: res.Log2N, Y: 0}, {X: res.Log2N, Y: 1.02}}); err == nil {
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		l.Color = plotutil.Color(6)
		conv.Add(l)
		conv.Legend.Add("log2 N", l)
	}
	if l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0.95}, {X: float64(len(res.Runs[0].Cycles) - 1), Y: 0.95}}); err == nil {
		l.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
		l.Color = plotutil.Color(5)
		conv.Add(l)
		conv.Legend.Add("95%", l)
	}
	conv.Legend.XOffs = vg.Points(150) // past the rise, bottom left is empty
	conv.X.Max = float64(len(res.Runs[0].Cycles)) + 1
	specs = append(specs, plotSpec{"clustering-tman-convergence.svg", saver(conv)})

	if slices.ContainsFunc(res.Runs, func(r tmanRun) bool { return r.Fail != nil }) {
		frac := 0.0
		for _, r := range res.Runs {
			if r.Fail != nil {
				frac = r.Fail.Fraction
			}
		}
		fp := newPlot(fmt.Sprintf("T-Man after %.0f%% of the nodes crash\nN=%d, %s, seed %d", frac*100, res.N, res.Topology, res.Seed), "cycles after the crash", "")
		fp.Y.Min = 0
		for i, r := range res.Runs {
			if r.Fail == nil {
				continue
			}
			ideal := make(plotter.XYs, len(r.Fail.Cycles))
			dead := make(plotter.XYs, len(r.Fail.Cycles))
			for j, c := range r.Fail.Cycles {
				ideal[j] = plotter.XY{X: float64(c.Cycle), Y: c.IdealMean}
				dead[j] = plotter.XY{X: float64(c.Cycle), Y: c.Dead / float64(res.ViewSize)}
			}
			for k, pts := range []plotter.XYs{ideal, dead} {
				l, err := plotter.NewLine(pts)
				if err != nil {
					continue
				}
				l.Color = plotutil.Color(i)
				l.Width = vg.Points(1.5)
				name := "ideal fraction"
				if k == 1 {
					l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
					name = "crashed entries / c"
				}
				fp.Add(l)
				fp.Legend.Add(fmt.Sprintf("%s, %s", r.Membership, name), l)
			}
		}
		for _, r := range res.Runs {
			if r.Fail != nil {
				fp.X.Max = float64(len(r.Fail.Cycles)) + 1
			}
		}
		fp.Legend.YOffs = vg.Points(90)
		specs = append(specs, plotSpec{"clustering-tman-crash.svg", saver(fp)})
	}
	return specs
}
