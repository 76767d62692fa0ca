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
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/sim"
)

func init() { clusteringRunners["xbot"] = runXBOT }

// xbotParams are the flags of `lab clustering -protocol xbot`.
type xbotParams struct {
	n          int
	seed       uint64
	unbiased   []int // X-BOT's Unbiased per run; 0 here means none (XBOTConfig.Unbiased -1)
	active     int
	passive    int
	psl        int
	cycles     int
	fail       float64
	failCycles int
	joinGap    time.Duration
	latency    time.Duration
}

func parseXBOT(args []string) (xbotParams, error) {
	fs := flag.NewFlagSet("lab clustering -protocol xbot", flag.ContinueOnError)
	n := fs.Int("n", 1000, "number of nodes")
	seed := fs.Uint64("seed", 1, "seed of the whole run")
	unb := fs.String("unbiased", "1", "unbiased links per node (0: none); a comma-separated list sweeps, each run built anew with the same seed")
	active := fs.Int("active", 0, "X-BOT's active view (0: the default, 5)")
	passive := fs.Int("passive", 0, "X-BOT's passive view (0: the default, 30)")
	psl := fs.Int("psl", 0, "X-BOT's passive scan length (0: the default, 10)")
	cycles := fs.Int("cycles", 40, "optimisation periods (10 s) measured after the joins")
	fail := fs.Float64("fail", 0.5, "fraction of nodes that crash at once after the measured cycles (0: none)")
	failCycles := fs.Int("fail-cycles", 10, "cycles measured after the crash")
	joinGap := fs.Duration("join-gap", 10*time.Millisecond, "virtual time between two joins")
	latency := fs.Duration("latency", 10*time.Millisecond, "one-way link latency")
	if err := fs.Parse(args); err != nil {
		return xbotParams{}, err
	}
	p := xbotParams{n: *n, seed: *seed, active: *active, passive: *passive, psl: *psl, cycles: *cycles, fail: *fail,
		failCycles: *failCycles, joinGap: *joinGap, latency: *latency}
	for _, s := range strings.Split(*unb, ",") {
		u, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || u < 0 {
			return p, fmt.Errorf("-unbiased %q: non-negative integers, comma-separated", *unb)
		}
		p.unbiased = append(p.unbiased, u)
	}
	switch {
	case p.n < 3:
		return p, fmt.Errorf("-n %d: at least 3 nodes", p.n)
	case p.cycles < 1 || p.failCycles < 1:
		return p, fmt.Errorf("-cycles and -fail-cycles must be positive")
	case p.fail < 0 || p.fail >= 1 || math.Round(p.fail*float64(p.n)) > float64(p.n-2):
		return p, fmt.Errorf("-fail %v: a fraction in [0, 1) that leaves at least 2 nodes", p.fail)
	case p.joinGap < 0 || p.latency < 0:
		return p, fmt.Errorf("-join-gap and -latency must not be negative")
	}
	for _, u := range p.unbiased {
		if err := p.config(u).Validate(); err != nil {
			return p, fmt.Errorf("-unbiased %d: %w", u, err)
		}
	}
	return p, nil
}

func (p xbotParams) config(unbiased int) clustering.XBOTConfig {
	u := unbiased
	if u == 0 {
		u = -1 // none
	}
	return clustering.XBOTConfig{ActiveView: p.active, PassiveView: p.passive, PassiveScan: p.psl, Unbiased: u}
}

// Figures of the experiment (JSON). No wall-clock value goes in here.
type xbotResult struct {
	Experiment string    `json:"experiment"`
	Protocol   string    `json:"protocol"`
	N          int       `json:"n"`
	Seed       uint64    `json:"seed"`
	Topology   string    `json:"topology"`
	ActiveView int       `json:"active_view"`
	PSL        int       `json:"passive_scan"`
	Cycles     int       `json:"cycles"`
	CycleMs    float64   `json:"cycle_ms"`
	LatencyMs  float64   `json:"latency_ms"`
	Runs       []xbotRun `json:"runs"`
}

type xbotRun struct {
	Unbiased int `json:"unbiased"`
	// RandomCost is the mean cost (distance) of HyParView's links under X-BOT, a random
	// overlay of the same degree: the cost before any optimisation.
	RandomCost float64 `json:"random_link_cost"`
	// StartCost is X-BOT's mean link cost when the last node joined (early nodes may
	// have optimised already), FinalCost after the measured cycles.
	StartCost float64 `json:"start_link_cost"`
	FinalCost float64 `json:"final_link_cost"`
	// Reduction is 1 - FinalCost/RandomCost.
	Reduction float64 `json:"reduction"`
	// CyclesTo90 is the first cycle whose cost is within 10% of the reduction reached at
	// the end (cost <= final + 0.1*(random-final)).
	CyclesTo90 int                `json:"cycles_to_90pct"`
	PerCycle   []xbotCycle        `json:"per_cycle"`
	Degree     xbotDegree         `json:"degree"`
	Symmetric  float64            `json:"symmetric_fraction"`
	MsgsByKind map[string]float64 `json:"xbot_msgs_per_node_per_cycle"`
	Fail       *xbotFail          `json:"fail,omitempty"`
	Sim        simSummary         `json:"sim"`
}

type xbotCycle struct {
	Cycle            int     `json:"cycle"`
	Cost             float64 `json:"link_cost"`
	RandomCost       float64 `json:"hyparview_link_cost"`
	LargestComponent float64 `json:"largest_component"`
	UnbiasedLinks    float64 `json:"unbiased_link_fraction"`
	MeanDegree       float64 `json:"mean_degree"`
}

// xbotDegree describes the in-degree (how many active views hold a node) at the end.
type xbotDegree struct {
	Min   int         `json:"min"`
	Max   int         `json:"max"`
	Mean  float64     `json:"mean"`
	Hist  map[int]int `json:"histogram"`
	Full  float64     `json:"full_view_fraction"` // nodes whose active view is full
	Links int         `json:"links"`              // undirected links
}

type xbotFail struct {
	Fraction  float64     `json:"fraction"`
	Survivors int         `json:"survivors"`
	PerCycle  []xbotCycle `json:"per_cycle"`
}

func runXBOT(args []string, prog *progress) (any, []plotSpec, error) {
	p, err := parseXBOT(args)
	if err != nil {
		return nil, nil, err
	}
	d := p.config(1).WithDefaults()
	res := xbotResult{Experiment: "clustering", Protocol: "xbot", N: p.n, Seed: p.seed,
		Topology: "unit square, rank = Euclidean distance", ActiveView: d.ActiveView, PSL: d.PassiveScan,
		Cycles: p.cycles, CycleMs: virtualMs(d.OptimizePeriod), LatencyMs: virtualMs(p.latency)}
	for _, u := range p.unbiased {
		r, err := xbotOnce(p, u, prog)
		if err != nil {
			return nil, nil, err
		}
		res.Runs = append(res.Runs, r)
	}
	return res, xbotPlots(res), nil
}

// xbotNet is the experiment's view of the stacked network.
type xbotNet struct {
	net  *overlayNet
	xb   []*clustering.XBOT
	pos  [][2]float64
	dead []bool
}

func (x *xbotNet) dist(i, j int) float64 {
	return math.Hypot(x.pos[i][0]-x.pos[j][0], x.pos[i][1]-x.pos[j][1])
}

// measure computes one cycle's figures.
func (x *xbotNet) measure(cycle int) xbotCycle {
	n := len(x.xb)
	c := xbotCycle{Cycle: cycle}
	var sum, hsum float64
	var k, hk, live int
	views := make([][]int, n) // live links, for the largest component
	alive := make([]bool, n)
	type link struct{ a, b int }
	var unbiased []link
	for i, core := range x.xb {
		if x.dead[i] {
			continue
		}
		live++
		alive[i] = true
		for _, q := range core.Active() {
			j := x.net.index[q]
			sum += x.dist(i, j)
			k++
			views[i] = append(views[i], j)
		}
		for _, q := range core.Unbiased() {
			j := x.net.index[q]
			unbiased = append(unbiased, link{min(i, j), max(i, j)})
		}
		for _, q := range x.net.view(i) {
			hsum += x.dist(i, x.net.index[q])
			hk++
		}
	}
	if k > 0 {
		c.Cost = sum / float64(k)
		c.MeanDegree = float64(k) / float64(live)
		slices.SortFunc(unbiased, func(a, b link) int {
			if a.a != b.a {
				return a.a - b.a
			}
			return a.b - b.b
		})
		unbiased = slices.Compact(unbiased)
		c.UnbiasedLinks = float64(len(unbiased)) / (float64(k) / 2)
	}
	if hk > 0 {
		c.RandomCost = hsum / float64(hk)
	}
	if live > 0 {
		c.LargestComponent = float64(largestComponent(views, alive)) / float64(live)
	}
	return c
}

func xbotOnce(p xbotParams, unbiased int, prog *progress) (xbotRun, error) {
	cfg := p.config(unbiased)
	prng := rand.New(rand.NewPCG(p.seed, 0x9051))
	pos := make([][2]float64, p.n)
	for i := range pos {
		pos[i] = [2]float64{prng.Float64(), prng.Float64()}
	}
	x := &xbotNet{pos: pos, dead: make([]bool, p.n), xb: make([]*clustering.XBOT, p.n)}
	index := map[peer.ID]int{}
	up := &upperLayer{
		layer: sim.Layer{NewMessage: func() proto.Message { return new(clustering.XBotMessage) },
			Kind: func(m proto.Message) string { return m.(*clustering.XBotMessage).Kind() }},
		// Node i's membership core draws from NodeRand(seed, i); its X-BOT core from
		// NodeRand(seed, n+i).
		newCore: func(i int, id peer.ID) (protocols.Core, error) {
			index[id] = i
			me := pos[i]
			rank := func(nd clustering.Node) float64 {
				j, ok := index[nd.ID]
				if !ok {
					return math.Inf(1)
				}
				return math.Hypot(me[0]-pos[j][0], me[1]-pos[j][1])
			}
			c, err := clustering.NewXBOT(id, cfg, rank, sim.NodeRand(p.seed, p.n+i))
			x.xb[i] = c
			return c, err
		},
	}
	mp := membershipParams{n: p.n, seed: p.seed, joinGap: p.joinGap, latency: p.latency, notify: true}
	net, err := buildStack(mp, "hyparview", up, prog)
	if err != nil {
		return xbotRun{}, fmt.Errorf("xbot over hyparview: %w", err)
	}
	x.net = net
	s := net.s
	cycle := cfg.WithDefaults().OptimizePeriod
	r := xbotRun{Unbiased: unbiased}
	start := x.measure(0)
	r.PerCycle = append(r.PerCycle, start)
	kinds0 := s.Stats().ByKind
	for c := 1; c <= p.cycles; c++ {
		s.RunFor(cycle)
		r.PerCycle = append(r.PerCycle, x.measure(c))
		prog.update("xbot U=%d: cycle %d of %d, link cost %.4f", unbiased, c, p.cycles, r.PerCycle[c].Cost)
	}
	kinds1 := s.Stats().ByKind
	r.MsgsByKind = map[string]float64{}
	for k, v := range kinds1 {
		if !xbotKind(k) {
			continue
		}
		r.MsgsByKind[k] = float64(v.Msgs-kinds0[k].Msgs) / float64(p.n) / float64(p.cycles)
	}
	last := r.PerCycle[len(r.PerCycle)-1]
	r.StartCost, r.FinalCost = start.Cost, last.Cost
	// The random overlay's cost: HyParView's links, averaged over the measured cycles.
	for _, c := range r.PerCycle {
		r.RandomCost += c.RandomCost
	}
	r.RandomCost /= float64(len(r.PerCycle))
	if r.RandomCost > 0 {
		r.Reduction = 1 - r.FinalCost/r.RandomCost
	}
	r.CyclesTo90 = -1
	for _, c := range r.PerCycle {
		if c.Cost <= r.FinalCost+0.1*(r.RandomCost-r.FinalCost) {
			r.CyclesTo90 = c.Cycle
			break
		}
	}
	r.Degree, r.Symmetric = x.degrees(cfg.WithDefaults().ActiveView)

	if p.fail > 0 {
		rng := rand.New(rand.NewPCG(p.seed, 0xfa11))
		kill := int(math.Round(p.fail * float64(p.n)))
		for _, i := range rng.Perm(p.n)[:kill] {
			x.dead[i] = true
			s.Crash(net.ids[i])
		}
		f := &xbotFail{Fraction: p.fail, Survivors: p.n - kill}
		f.PerCycle = append(f.PerCycle, x.measure(0))
		for c := 1; c <= p.failCycles; c++ {
			s.RunFor(cycle)
			f.PerCycle = append(f.PerCycle, x.measure(c))
			prog.update("xbot U=%d: cycle %d of %d after the crash", unbiased, c, p.failCycles)
		}
		r.Fail = f
	}
	st := s.Stats()
	r.Sim = simSummary{Events: st.Events, Messages: st.Sent.Msgs, Bytes: st.Sent.Bytes, PeerDowns: st.PeerDowns}
	return r, nil
}

func xbotKind(k string) bool {
	return strings.HasPrefix(k, "XBOT_") || strings.HasPrefix(k, "OPTIMIZATION") || strings.HasPrefix(k, "REPLACE") ||
		strings.HasPrefix(k, "SWITCH")
}

// degrees returns the in-degree distribution of the live nodes and the fraction of
// active links whose other end holds them too.
func (x *xbotNet) degrees(activeView int) (xbotDegree, float64) {
	in := make([]int, len(x.xb))
	links, sym, full := 0, 0, 0
	for i, core := range x.xb {
		a := core.Active()
		if len(a) == activeView {
			full++
		}
		for _, q := range a {
			j := x.net.index[q]
			in[j]++
			links++
			if slices.Contains(x.xb[j].Active(), x.net.ids[i]) {
				sym++
			}
		}
	}
	d := xbotDegree{Min: math.MaxInt, Hist: map[int]int{}, Links: links / 2}
	for _, v := range in {
		d.Min, d.Max = min(d.Min, v), max(d.Max, v)
		d.Mean += float64(v)
		d.Hist[v]++
	}
	d.Mean /= float64(len(in))
	d.Full = float64(full) / float64(len(x.xb))
	if links == 0 {
		return d, 0
	}
	return d, float64(sym) / float64(links)
}

func xbotPlots(res xbotResult) []plotSpec {
	var specs []plotSpec
	cost := newPlot(fmt.Sprintf("X-BOT: mean link cost (N=%d, unit square)", res.N), "optimisation periods after the joins", "mean link cost (distance)")
	cost.Y.Min = 0
	for i, r := range res.Runs {
		pts := make(plotter.XYs, len(r.PerCycle))
		rnd := make(plotter.XYs, len(r.PerCycle))
		for k, c := range r.PerCycle {
			pts[k] = plotter.XY{X: float64(c.Cycle), Y: c.Cost}
			rnd[k] = plotter.XY{X: float64(c.Cycle), Y: c.RandomCost}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			continue
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		cost.Add(l)
		cost.Legend.Add(fmt.Sprintf("X-BOT, %d unbiased", r.Unbiased), l)
		if i == 0 {
			h, err := plotter.NewLine(rnd)
			if err == nil {
				h.Color = plotutil.Color(len(res.Runs))
				h.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
				cost.Add(h)
				cost.Legend.Add("HyParView below (random)", h)
			}
		}
	}
	specs = append(specs, plotSpec{"clustering-xbot-cost.svg", saver(cost)})

	if slices.ContainsFunc(res.Runs, func(r xbotRun) bool { return r.Fail != nil }) {
		for _, fig := range []struct {
			file, title, y string
			at             func(c xbotCycle) float64
		}{
			{"clustering-xbot-crash-component.svg", "X-BOT: survivors' largest component, %.0f%% crashed (N=%d)", "fraction of live nodes", func(c xbotCycle) float64 { return c.LargestComponent }},
			{"clustering-xbot-crash-cost.svg", "X-BOT: mean link cost, %.0f%% crashed (N=%d)", "mean link cost (distance)", func(c xbotCycle) float64 { return c.Cost }},
		} {
			var frac float64
			for _, r := range res.Runs {
				if r.Fail != nil {
					frac = r.Fail.Fraction
				}
			}
			fp := newPlot(fmt.Sprintf(fig.title, frac*100, res.N), "optimisation periods after the crash (0: at the crash)", fig.y)
			fp.Y.Min = 0
			fp.Legend.Top = fig.file == "clustering-xbot-crash-cost.svg"
			fp.Legend.Left = false
			for i, r := range res.Runs {
				if r.Fail == nil {
					continue
				}
				pts := make(plotter.XYs, len(r.Fail.PerCycle))
				for k, c := range r.Fail.PerCycle {
					pts[k] = plotter.XY{X: float64(c.Cycle), Y: fig.at(c)}
				}
				l, sc, err := plotter.NewLinePoints(pts)
				if err != nil {
					continue
				}
				l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
				l.Width = vg.Points(1.5)
				fp.Add(l, sc)
				fp.Legend.Add(fmt.Sprintf("%d unbiased", r.Unbiased), l, sc)
			}
			specs = append(specs, plotSpec{fig.file, saver(fp)})
		}
	}

	deg := newPlot(fmt.Sprintf("X-BOT: in-degree at the end (N=%d)", res.N), "in-degree", "nodes")
	w := vg.Points(6)
	for i, r := range res.Runs {
		var keys []int
		for k := range r.Degree.Hist {
			keys = append(keys, k)
		}
		sort.Ints(keys)
		vals := make(plotter.Values, 0, len(keys))
		lo := 0
		if len(keys) > 0 {
			lo = keys[0]
			for k := keys[0]; k <= keys[len(keys)-1]; k++ {
				vals = append(vals, float64(r.Degree.Hist[k]))
			}
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			continue
		}
		b.Color = plotutil.Color(i)
		b.Offset = vg.Length(i-len(res.Runs)/2) * w
		b.XMin = float64(lo)
		deg.Add(b)
		deg.Legend.Add(fmt.Sprintf("%d unbiased", r.Unbiased), b)
	}
	deg.X.Min, deg.X.Max = deg.X.Min-1, deg.X.Max+1
	specs = append(specs, plotSpec{"clustering-xbot-degree.svg", saver(deg)})
	return specs
}
