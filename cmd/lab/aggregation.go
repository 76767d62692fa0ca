package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
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
	"github.com/unsserv/go-unsserv/protocols/aggregation"
	"github.com/unsserv/go-unsserv/protocols/membership"
	"github.com/unsserv/go-unsserv/sim"
)

func init() {
	experiments["aggregation"] = experiment{
		summary: "push-pull aggregation (mean, min, max, sum, count) over HyParView, Newscast or ideal random peer sampling: variance reduction per cycle, errors, loss, churn",
		run:     runAggregation,
	}
}

// paperFactor is the paper's convergence factor of push-pull averaging with random peer
// selection: the variance shrinks by 1/(2*sqrt(e)) per cycle.
var paperFactor = 1 / (2 * math.Sqrt(math.E))

// aggParams are the flags of the aggregation experiment.
type aggParams struct {
	n           int
	fns         []aggregation.Function
	memberships []string
	losses      []float64
	churn       float64
	seed        uint64
	latency     time.Duration
	cycle       time.Duration
	epoch       int
	epochs      int
	retries     int
	values      string
	joinGap     time.Duration
	warmup      int
	view        int
	replot      string
}

func parseAggregation(args []string) (aggParams, error) {
	fs := flag.NewFlagSet("lab aggregation", flag.ContinueOnError)
	n := fs.Int("n", 10000, "number of nodes")
	fns := fs.String("fn", "mean", "aggregate: mean, min, max, sum, count; a comma-separated list sweeps")
	memb := fs.String("membership", "hyparview", "neighbour set: hyparview, newscast, or random (ideal peer sampling: -view uniformly random live nodes, new every cycle, as the paper assumes); a comma-separated list sweeps")
	loss := fs.String("loss", "0", "probability that a message (of any layer) is lost, once the overlay is built; a comma-separated list sweeps")
	churn := fs.Float64("churn", 0, "fraction of the nodes replaced per cycle while measuring (a random live node crashes, a new one joins)")
	seed := fs.Uint64("seed", 1, "seed of the whole run")
	latency := fs.Duration("latency", 10*time.Millisecond, "one-way link latency")
	cycle := fs.Duration("cycle", time.Second, "aggregation cycle length (the paper's Delta)")
	epoch := fs.Int("epoch", 30, "epoch length in cycles (the paper's gamma)")
	epochs := fs.Int("epochs", 2, "epochs measured")
	retries := fs.Int("retries", 0, "repeats of an unanswered request; 0: the default (4); -1: none (the paper's single attempt)")
	values := fs.String("values", "uniform", "initial values: uniform (in [0, 1)) or peak (one node N, the others 0, as in the paper)")
	joinGap := fs.Duration("join-gap", 10*time.Millisecond, "virtual time between two joins (hyparview, newscast)")
	warmup := fs.Int("warmup", 5, "cycles after the joins before measuring")
	view := fs.Int("view", 20, "neighbours per node per cycle with -membership random")
	replot := fs.String("replot", "", "read the figures from this aggregation.json (of an earlier run) instead of running, and draw its plots")
	if err := fs.Parse(args); err != nil {
		return aggParams{}, err
	}
	p := aggParams{n: *n, churn: *churn, seed: *seed, latency: *latency, cycle: *cycle, epoch: *epoch, epochs: *epochs,
		retries: *retries, values: strings.TrimSpace(*values), joinGap: *joinGap, warmup: *warmup, view: *view, replot: *replot}
	for _, s := range strings.Split(*fns, ",") {
		f, err := aggregation.ParseFunction(s)
		if err != nil {
			return p, fmt.Errorf("-fn: %w", err)
		}
		p.fns = append(p.fns, f)
	}
	for _, s := range strings.Split(*memb, ",") {
		switch s = strings.TrimSpace(s); s {
		case "hyparview", "newscast", "random":
			p.memberships = append(p.memberships, s)
		default:
			return p, fmt.Errorf("-membership %q: use hyparview, newscast or random", s)
		}
	}
	for _, s := range strings.Split(*loss, ",") {
		l, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || l < 0 || l >= 1 {
			return p, fmt.Errorf("-loss %q: probabilities in [0, 1)", s)
		}
		p.losses = append(p.losses, l)
	}
	switch {
	case p.n < 2:
		return p, fmt.Errorf("-n %d: at least 2 nodes", p.n)
	case p.churn < 0 || p.churn > 0.5:
		return p, fmt.Errorf("-churn %v: a fraction per cycle in [0, 0.5]", p.churn)
	case p.epoch < 5 || p.epochs < 1 || p.warmup < 0:
		return p, fmt.Errorf("-epoch must be at least 5, -epochs at least 1, -warmup not negative")
	case p.cycle <= 0 || p.latency < 0 || p.joinGap < 0:
		return p, fmt.Errorf("-cycle must be positive; -latency, -join-gap not negative")
	case p.values != "uniform" && p.values != "peak":
		return p, fmt.Errorf("-values %q: uniform or peak", p.values)
	case p.view < 1:
		return p, fmt.Errorf("-view %d: at least 1", p.view)
	case p.retries < -1:
		return p, fmt.Errorf("-retries %d: -1 (none) or more", p.retries)
	}
	return p, nil
}

// Figures of the experiment (JSON). No wall-clock value goes in here.
type aggResult struct {
	Experiment  string   `json:"experiment"`
	N           int      `json:"n"`
	Seed        uint64   `json:"seed"`
	CycleMs     float64  `json:"cycle_ms"`
	EpochCycles int      `json:"epoch_cycles"`
	Retries     int      `json:"retries"`
	Values      string   `json:"values"`
	Churn       float64  `json:"churn_per_cycle"`
	LatencyMs   float64  `json:"latency_ms"`
	PaperFactor float64  `json:"paper_factor"`
	Runs        []aggRun `json:"runs"`
}

type aggRun struct {
	Function   string  `json:"function"`
	Membership string  `json:"membership"`
	Loss       float64 `json:"loss"`
	// Factor is the variance reduction per cycle, the geometric mean over the measured
	// epochs (see aggEpoch.Factor); FactorVsPaper is Factor / 0.303 - 1.
	Factor        float64 `json:"factor"`
	FactorVsPaper float64 `json:"factor_vs_paper"`
	// FinalMaxRelErr is the largest relative error of a node's final estimate of an
	// epoch (the estimate it ended the epoch with), against the epoch's true aggregate
	// (over its participants' start values); FinalMeanRelErr the mean over live nodes
	// and epochs.
	FinalMaxRelErr  float64 `json:"final_max_rel_err"`
	FinalMeanRelErr float64 `json:"final_mean_rel_err"`
	// FinalMaxRelErrLive is the same against the aggregate over all live nodes at the
	// epoch's end (with churn, nodes that joined during the epoch are not in it).
	FinalMaxRelErrLive float64            `json:"final_max_rel_err_live"`
	Epochs             []aggEpoch         `json:"epochs"`
	MsgsPerNodeCycle   map[string]float64 `json:"msgs_per_node_per_cycle"` // aggregation layer, while measuring
	Core               aggregation.Stats  `json:"core_stats"`              // summed over every node
	Sim                simSummary         `json:"sim"`
}

type aggEpoch struct {
	Epoch uint64 `json:"epoch"`
	// Participants: nodes that took part in the epoch (some may have crashed since).
	Participants int     `json:"participants"`
	Truth        float64 `json:"truth"`      // the aggregate of the participants' start values
	LiveTruth    float64 `json:"live_truth"` // the aggregate over the nodes live at the epoch's end
	// Factor: (var[to] / var[from])^(1/(to-from)), var the variance of the estimates of
	// the nodes in the epoch at cycle k after its first node started it.
	Factor     float64    `json:"factor"`
	FactorFrom int        `json:"factor_from"`
	FactorTo   int        `json:"factor_to"`
	Finals     int        `json:"finals"` // nodes whose final estimate of the epoch was seen
	MaxRelErr  float64    `json:"final_max_rel_err"`
	MeanRelErr float64    `json:"final_mean_rel_err"`
	MaxRelLive float64    `json:"final_max_rel_err_live"`
	Cycles     []aggCycle `json:"cycles"`
}

type aggCycle struct {
	Cycle  int     `json:"cycle"`
	Nodes  int     `json:"nodes"`    // live nodes in the epoch
	Known  int     `json:"known"`    // of those, with an estimate
	VarRel float64 `json:"var_rel"`  // variance of the estimates / variance of the start values
	MaxRel float64 `json:"max_rel"`  // largest relative error against the truth
	MeanRe float64 `json:"mean_rel"` // mean relative error
}

func runAggregation(args []string, prog *progress) (any, []plotSpec, error) {
	p, err := parseAggregation(args)
	if err != nil {
		return nil, nil, err
	}
	if p.replot != "" {
		b, err := os.ReadFile(p.replot)
		if err != nil {
			return nil, nil, err
		}
		var res aggResult
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, nil, fmt.Errorf("-replot %s: %w", p.replot, err)
		}
		return res, aggregationPlots(res), nil
	}
	res := aggResult{Experiment: "aggregation", N: p.n, Seed: p.seed, CycleMs: virtualMs(p.cycle), EpochCycles: p.epoch,
		Retries: p.retries, Values: p.values, Churn: p.churn, LatencyMs: virtualMs(p.latency), PaperFactor: round4(paperFactor)}
	for _, fn := range p.fns {
		for _, m := range p.memberships {
			for _, l := range p.losses {
				r, err := aggregationOnce(p, fn, m, l, prog)
				if err != nil {
					return nil, nil, err
				}
				res.Runs = append(res.Runs, r)
			}
		}
	}
	return res, aggregationPlots(res), nil
}

// aggNet is one run's network: the aggregation core of every node, at layer 1 over a
// membership or at layer 0 under ideal peer sampling.
type aggNet struct {
	p      aggParams
	fn     aggregation.Function
	s      *sim.Sim
	ids    []peer.ID // every identity, joiners' too
	added  int       // nodes added so far (ids[:added])
	cores  []*aggregation.PushPull
	layer  int
	net    *overlayNet // nil under ideal peer sampling
	rng    *rand.Rand
	values []float64
	// finals[i] is node i's final estimate of epoch finalOf (NaN if not seen).
	finals  []float64
	finalOf uint64
	memb    string
	idx     map[peer.ID]int
	took    []bool // took[i]: node i took part in the epoch measured
}

func (a *aggNet) coreConfig(i int) aggregation.PushPullConfig {
	return aggregation.PushPullConfig{Function: a.fn, Value: a.values[i], Cycle: a.p.cycle, EpochCycles: a.p.epoch, Retries: a.p.retries}
}

func (a *aggNet) newCore(i int, id peer.ID) (protocols.Core, error) {
	// Membership cores draw from NodeRand(seed, i); aggregation cores from
	// NodeRand(seed, 2N+i), so that joiners' streams never overlap.
	c, err := aggregation.NewPushPull(id, a.coreConfig(i), sim.NodeRand(a.p.seed, 2*len(a.ids)+i))
	if err != nil {
		return nil, err
	}
	a.cores[i] = c
	return c, nil
}

func (a *aggNet) event(node int, ev protocols.Output) {
	u, ok := ev.(aggregation.Updated)
	if !ok || a.finalOf == 0 || u.Estimate.FinalEpoch != a.finalOf || !math.IsNaN(a.finals[node]) {
		return
	}
	a.finals[node] = u.Estimate.Final
}

func aggregationOnce(p aggParams, fn aggregation.Function, memb string, loss float64, prog *progress) (aggRun, error) {
	// Identities for the initial nodes and for joiners under churn.
	joiners := int(math.Ceil(p.churn*float64(p.n))) * (p.warmup + (p.epochs+2)*(p.epoch+4) + 2)
	ids, err := sim.PeerIDs(p.seed, p.n+joiners)
	if err != nil {
		return aggRun{}, err
	}
	a := &aggNet{p: p, fn: fn, ids: ids, added: p.n, cores: make([]*aggregation.PushPull, len(ids)),
		rng: rand.New(rand.NewPCG(p.seed, 0xa66)), finals: make([]float64, len(ids)), memb: memb, idx: make(map[peer.ID]int, len(ids))}
	for i, id := range ids {
		a.idx[id] = i
	}
	a.values = make([]float64, len(ids))
	vr := rand.New(rand.NewPCG(p.seed, 0x7a1))
	for i := range a.values {
		switch p.values {
		case "uniform":
			a.values[i] = vr.Float64()
		case "peak":
			if i == 0 {
				a.values[i] = float64(p.n)
			}
		}
	}
	for i := range a.finals {
		a.finals[i] = math.NaN()
	}
	kind := func(m proto.Message) string { return aggregation.Kind(m.(*aggregation.Message)) }
	name := fmt.Sprintf("%s over %s, loss %g", fn, memb, loss)

	if memb == "random" {
		s, err := sim.New(sim.Config{Seed: p.seed, Latency: sim.Fixed(p.latency), NewMessage: func() proto.Message { return new(aggregation.Message) }, Kind: kind,
			OnEvent: func(_ time.Time, node peer.ID, ev protocols.Output) { a.event(a.index(node), ev) }})
		if err != nil {
			return aggRun{}, err
		}
		a.s = s
		for i := 0; i < p.n; i++ {
			c, err := a.newCore(i, ids[i])
			if err != nil {
				return aggRun{}, err
			}
			if err := s.Add(ids[i], c); err != nil {
				return aggRun{}, err
			}
			_ = s.Input(ids[i], protocols.Start{})
		}
		a.refresh(s)
		// Let the first epoch start everywhere.
		s.RunFor(time.Duration(aggregation.PushPullConfig{}.WithDefaults().StartAfter+2) * p.cycle)
	} else {
		a.layer = 1
		up := &upperLayer{
			layer:   sim.Layer{NewMessage: func() proto.Message { return new(aggregation.Message) }, Kind: kind},
			newCore: a.newCore,
			onEvent: func(_ time.Time, node int, ev protocols.Output) { a.event(node, ev) },
		}
		mp := membershipParams{n: p.n, seed: p.seed, joinGap: p.joinGap, latency: p.latency}
		net, err := buildStack(mp, memb, up, prog)
		if err != nil {
			return aggRun{}, fmt.Errorf("%s: %w", name, err)
		}
		a.net, a.s = net, net.s
	}
	s := a.s
	if err := s.SetLoss(loss); err != nil {
		return aggRun{}, err
	}
	for c := 0; c < p.warmup; c++ {
		s.RunFor(p.cycle)
		prog.update("%s: warm-up cycle %d of %d", name, c+1, p.warmup)
	}
	if p.churn > 0 {
		period := time.Duration(float64(p.cycle) / (p.churn * float64(p.n)))
		s.Churn(period, s.Now().Add(time.Duration(p.epochs+2)*time.Duration(p.epoch+4)*p.cycle), func(s *sim.Sim) peer.ID { return a.join() })
	}

	r := aggRun{Function: fn.String(), Membership: memb, Loss: loss}
	before := s.Stats()
	start := s.Now()
	logSum, logN := 0.0, 0
	var meanSum float64
	var meanN int
	for k := 0; k < p.epochs; k++ {
		e := a.runToEpochStart()
		a.finalOf = e
		ep := aggEpoch{Epoch: e}
		var raw, startVar []float64
		var ests [][]float64
		a.took = make([]bool, len(a.ids))
		for c := 0; c <= p.epoch+1; c++ {
			cy, est, sv := a.snapshot(e, c)
			raw = append(raw, cy.VarRel)
			startVar = append(startVar, sv)
			ests = append(ests, est)
			ep.Cycles = append(ep.Cycles, cy)
			s.RunFor(p.cycle)
			prog.update("%s: epoch %d (%d of %d), cycle %d", name, e, k+1, p.epochs, c)
		}
		// Run on until every node of the epoch has ended it (its final estimate is
		// recorded), for at most an epoch.
		for c := 0; c < p.epoch && len(a.inEpoch(e)) > 0; c++ {
			s.RunFor(p.cycle)
		}
		for _, t := range a.took {
			if t {
				ep.Participants++
			}
		}
		ep.Truth = a.truth(true)
		ep.LiveTruth = a.truth(false)
		for c, est := range ests {
			cy := &ep.Cycles[c]
			for _, v := range est {
				re := relErr(v, ep.Truth)
				cy.MaxRel = max(cy.MaxRel, re)
				cy.MeanRe += re
			}
			if len(est) > 0 {
				cy.MeanRe = sig(cy.MeanRe / float64(len(est)))
			}
			cy.MaxRel = sig(cy.MaxRel)
		}
		// Normalise by the variance of the start values once every participant is in
		// (mean, min, max), or, for count and sum, whose start is a handful of leaders,
		// by the variance of the estimates once every node has one.
		base := 0.0
		for c, cy := range ep.Cycles {
			if c >= 2 && cy.Known == cy.Nodes && cy.Nodes > 0 {
				base = startVar[c]
				if a.fn == aggregation.Count || a.fn == aggregation.Sum {
					base = raw[c]
				}
				break
			}
		}
		for c := range ep.Cycles {
			if base > 0 {
				ep.Cycles[c].VarRel = sig(raw[c] / base)
			}
		}
		for i := 0; i < a.added; i++ {
			f := a.finals[i]
			if math.IsNaN(f) || !s.Alive(ids[i]) {
				continue
			}
			ep.Finals++
			re := relErr(f, ep.Truth)
			ep.MaxRelErr = max(ep.MaxRelErr, re)
			ep.MaxRelLive = max(ep.MaxRelLive, relErr(f, ep.LiveTruth))
			meanSum += re
			meanN++
			ep.MeanRelErr += re
		}
		if ep.Finals > 0 {
			ep.MeanRelErr = sig(ep.MeanRelErr / float64(ep.Finals))
		}
		ep.MaxRelErr, ep.MaxRelLive = sig(ep.MaxRelErr), sig(ep.MaxRelLive)
		ep.Factor, ep.FactorFrom, ep.FactorTo = convergenceFactor(ep.Cycles, p.epoch)
		if ep.Factor > 0 {
			logSum += math.Log(ep.Factor) * float64(ep.FactorTo-ep.FactorFrom)
			logN += ep.FactorTo - ep.FactorFrom
		}
		r.FinalMaxRelErr = max(r.FinalMaxRelErr, ep.MaxRelErr)
		r.FinalMaxRelErrLive = max(r.FinalMaxRelErrLive, ep.MaxRelLive)
		r.Epochs = append(r.Epochs, ep)
		a.finalOf = 0
		for i := range a.finals {
			a.finals[i] = math.NaN()
		}
	}
	if logN > 0 {
		r.Factor = round4(math.Exp(logSum / float64(logN)))
		r.FactorVsPaper = round4(r.Factor/paperFactor - 1)
	}
	if meanN > 0 {
		r.FinalMeanRelErr = sig(meanSum / float64(meanN))
	}
	after := s.Stats()
	cycles := float64(s.Now().Sub(start)) / float64(p.cycle)
	r.MsgsPerNodeCycle = map[string]float64{}
	for k, c := range after.ByKind {
		if !strings.HasPrefix(k, "AGG_") {
			continue
		}
		if d := c.Msgs - before.ByKind[k].Msgs; d > 0 {
			r.MsgsPerNodeCycle[k] = round3(float64(d) / float64(p.n) / cycles)
		}
	}
	for _, c := range a.cores[:a.added] {
		st := c.Stats()
		r.Core.Epochs += st.Epochs
		r.Core.Initiated += st.Initiated
		r.Core.Completed += st.Completed
		r.Core.Served += st.Served
		r.Core.Retransmits += st.Retransmits
		r.Core.Failed += st.Failed
		r.Core.Refused += st.Refused
		r.Core.Busy += st.Busy
		r.Core.OtherEpoch += st.OtherEpoch
		r.Core.Waiting += st.Waiting
		r.Core.Skipped += st.Skipped
		r.Core.Late += st.Late
		r.Core.Ignored += st.Ignored
	}
	r.Sim = simSummary{Events: after.Events, Messages: after.Sent.Msgs, Bytes: after.Sent.Bytes, PeerDowns: after.PeerDowns}
	return r, nil
}

func (a *aggNet) index(id peer.ID) int { return a.idx[id] }

// refresh gives every live node view uniformly random live nodes, every cycle: the
// paper's peer sampling.
func (a *aggNet) refresh(s *sim.Sim) {
	var live []peer.ID
	for _, id := range a.ids[:a.added] {
		if s.Alive(id) {
			live = append(live, id)
		}
	}
	for _, id := range live {
		k := min(a.p.view, len(live)-1)
		ns := make([]peer.ID, 0, k)
		for len(ns) < k {
			q := live[a.rng.IntN(len(live))]
			if q != id && !slices.Contains(ns, q) {
				ns = append(ns, q)
			}
		}
		_ = s.Input(id, protocols.Neighbours{Peers: ns})
	}
	s.At(s.Now().Add(a.p.cycle), a.refresh)
}

// join adds a new node (churn): through a random live contact under a membership, or
// just started under ideal peer sampling (its neighbours come with the next refresh).
func (a *aggNet) join() peer.ID {
	if a.added >= len(a.ids) {
		return ""
	}
	i := a.added
	id := a.ids[i]
	var live []peer.ID
	for _, q := range a.ids[:a.added] {
		if a.s.Alive(q) {
			live = append(live, q)
		}
	}
	a.added++
	agg, err := a.newCore(i, id)
	if err != nil {
		return ""
	}
	if a.net == nil {
		if a.s.Add(id, agg) != nil {
			return ""
		}
		_ = a.s.Input(id, protocols.Start{})
		return id
	}
	self := membership.NewNode(id, nil, nil)
	rng := sim.NodeRand(a.p.seed, i)
	var mc protocols.Core
	if a.memb == "hyparview" {
		mc, err = membership.NewHyParView(self, membership.HyParViewConfig{}, rng)
	} else {
		mc, err = membership.NewNewscast(self, membership.NewscastConfig{}, rng)
	}
	if err != nil || a.s.AddStack(id, mc, agg) != nil {
		return ""
	}
	a.net.index[id] = i
	a.net.ids = append(a.net.ids, id)
	var boot []peer.ID
	if len(live) > 0 {
		boot = []peer.ID{live[a.rng.IntN(len(live))]}
	}
	_ = a.s.Input(id, protocols.Start{Bootstrap: boot})
	_ = a.s.InputLayer(id, 1, protocols.Start{})
	return id
}

func (a *aggNet) maxEpoch() uint64 {
	var e uint64
	for i, c := range a.cores[:a.added] {
		if a.s.Alive(a.ids[i]) {
			e = max(e, c.Estimate().Epoch)
		}
	}
	return e
}

// runToEpochStart runs until a node starts an epoch after the highest one running.
func (a *aggNet) runToEpochStart() uint64 {
	e := a.maxEpoch()
	for k := 0; k < 100*a.p.epoch && a.maxEpoch() == e; k++ {
		a.s.RunFor(a.p.cycle / 10)
	}
	return a.maxEpoch()
}

// inEpoch lists the live nodes in epoch e.
func (a *aggNet) inEpoch(e uint64) []int {
	var out []int
	for i, c := range a.cores[:a.added] {
		if a.s.Alive(a.ids[i]) && c.Estimate().Epoch == e {
			out = append(out, i)
		}
	}
	return out
}

// aggregate computes the function over values exactly.
func aggregate(fn aggregation.Function, vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	switch fn {
	case aggregation.Min:
		return slices.Min(vs)
	case aggregation.Max:
		return slices.Max(vs)
	case aggregation.Count:
		return float64(len(vs))
	}
	var s float64
	for _, v := range vs {
		s += v
	}
	if fn == aggregation.Sum {
		return s
	}
	return s / float64(len(vs))
}

// truth is the true aggregate of an epoch: over the start values of the nodes that
// took part in it (crashed ones too: what the epoch computes is the aggregate at its
// start), or, if !participants, over the values of the nodes live now.
func (a *aggNet) truth(participants bool) float64 {
	var vs []float64
	for i := range a.cores[:a.added] {
		if participants && !a.took[i] || !participants && !a.s.Alive(a.ids[i]) {
			continue
		}
		vs = append(vs, a.values[i])
	}
	return aggregate(a.fn, vs)
}

// snapshot measures epoch e at cycle c: the nodes in it and the variance of their
// estimates (VarRel holds it raw: the caller normalises it and fills in the errors
// against the epoch's truth). It also returns the estimates and the variance of the
// start values of the nodes in the epoch.
func (a *aggNet) snapshot(e uint64, c int) (aggCycle, []float64, float64) {
	cy := aggCycle{Cycle: c}
	var est, start []float64
	for _, i := range a.inEpoch(e) {
		a.took[i] = true
		cy.Nodes++
		v, _ := a.cores[i].EpochValue()
		start = append(start, v)
		if x := a.cores[i].Estimate(); x.Known {
			cy.Known++
			est = append(est, x.Value)
		}
	}
	cy.VarRel = variance(est)
	return cy, est, variance(start)
}

func variance(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	var m float64
	for _, v := range vs {
		m += v
	}
	m /= float64(len(vs))
	var s float64
	for _, v := range vs {
		s += (v - m) * (v - m)
	}
	return s / float64(len(vs))
}

func relErr(v, truth float64) float64 {
	if truth == 0 {
		return math.Abs(v)
	}
	return math.Abs(v-truth) / math.Abs(truth)
}

// sig rounds to 4 significant digits (errors span many orders of magnitude).
func sig(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 4, 64), 64)
	return v
}

// convergenceFactor fits the variance reduction per cycle over the cycles after the
// epoch has reached every node (from the cycle with the most nodes in it, at least 3) up
// to the last cycle before the end of
// the epoch whose variance is still above rounding noise (1e-24 of the start).
func convergenceFactor(cs []aggCycle, epoch int) (float64, int, int) {
	from, most := 3, 0
	for k, c := range cs {
		if c.Nodes > most && k < epoch/2 {
			most = c.Nodes
			from = max(3, k)
		}
	}
	to := from
	for k := from + 1; k < len(cs) && k <= epoch-2; k++ {
		if cs[k].VarRel < 1e-24 || cs[k].VarRel <= 0 {
			break
		}
		to = k
	}
	if to <= from || cs[from].VarRel <= 0 {
		return 0, from, to
	}
	return round4(math.Pow(cs[to].VarRel/cs[from].VarRel, 1/float64(to-from))), from, to
}

// aggregationPlots: normalised variance per cycle of each run's first epoch, with the
// paper's factor for reference; the largest relative error per cycle; and, when several
// loss rates ran, the final errors against loss.
func aggregationPlots(res aggResult) []plotSpec {
	title := fmt.Sprintf("N=%d", res.N)
	label := func(r aggRun) string {
		return fmt.Sprintf("%s, %s, loss %g", r.Function, r.Membership, r.Loss)
	}
	floor := 1e-30
	vp := newPlot("Variance of the estimates, relative to the start ("+title+")", "cycle of the epoch", "variance / variance at the start")
	vp.Y.Scale = plot.LogScale{}
	vp.Y.Tick.Marker = decades{}
	ep := newPlot("Largest relative error of a node's estimate ("+title+")", "cycle of the epoch", "relative error")
	ep.Y.Scale = plot.LogScale{}
	ep.Y.Tick.Marker = decades{}
	for i, r := range res.Runs {
		if len(r.Epochs) == 0 {
			continue
		}
		cs := r.Epochs[0].Cycles
		var vpts, epts plotter.XYs
		for _, c := range cs {
			if 2*c.Known < r.Epochs[0].Participants {
				continue // the epoch's first and last cycles, when few nodes are in it
			}
			vpts = append(vpts, plotter.XY{X: float64(c.Cycle), Y: max(c.VarRel, floor)})
			epts = append(epts, plotter.XY{X: float64(c.Cycle), Y: max(c.MaxRel, floor)})
		}
		for _, d := range []struct {
			p   *plot.Plot
			pts plotter.XYs
		}{{vp, vpts}, {ep, epts}} {
			if len(d.pts) == 0 {
				continue
			}
			l, sc, err := plotter.NewLinePoints(d.pts)
			if err != nil {
				continue
			}
			l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			sc.Radius = vg.Points(2)
			d.p.Add(l, sc)
			d.p.Legend.Add(label(r), l, sc)
		}
	}
	// The paper's factor from the first run's value at cycle 3.
	if len(res.Runs) > 0 && len(res.Runs[0].Epochs) > 0 && len(res.Runs[0].Epochs[0].Cycles) > 3 {
		cs := res.Runs[0].Epochs[0].Cycles
		if v3 := cs[3].VarRel; v3 > 0 {
			var pts plotter.XYs
			for k := 3; k < len(cs); k++ {
				pts = append(pts, plotter.XY{X: float64(k), Y: max(v3*math.Pow(paperFactor, float64(k-3)), floor)})
			}
			if l, err := plotter.NewLine(pts); err == nil {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				l.Width = vg.Points(1)
				vp.Add(l)
				vp.Legend.Add("paper: x 1/(2 sqrt e) = 0.303 per cycle", l)
			}
		}
	}
	specs := []plotSpec{{"aggregation-variance.svg", saver(vp)}, {"aggregation-error.svg", saver(ep)}}

	// Final errors against loss, one line per (function, membership), when loss sweeps.
	type key struct{ fn, m string }
	byKey := map[key][]aggRun{}
	var keys []key
	for _, r := range res.Runs {
		k := key{r.Function, r.Membership}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	sweep := false
	for _, rs := range byKey {
		sweep = sweep || len(rs) > 1
	}
	if sweep {
		lp := newPlot("Error of the final estimates under message loss ("+title+")", "message loss (%)", "relative error")
		lp.Y.Scale = plot.LogScale{}
		lp.Y.Tick.Marker = decades{}
		lp.Legend.Top = true
		for i, k := range keys {
			for j, series := range []struct {
				name string
				at   func(aggRun) float64
			}{{"max", func(r aggRun) float64 { return r.FinalMaxRelErr }}, {"mean", func(r aggRun) float64 { return r.FinalMeanRelErr }}} {
				var pts plotter.XYs
				for _, r := range byKey[k] {
					pts = append(pts, plotter.XY{X: r.Loss * 100, Y: max(series.at(r), floor)})
				}
				l, sc, err := plotter.NewLinePoints(pts)
				if err != nil {
					continue
				}
				l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
				if j == 1 {
					l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
				}
				sc.Shape = plotutil.Shape(j)
				lp.Add(l, sc)
				lp.Legend.Add(fmt.Sprintf("%s over %s, %s", k.fn, k.m, series.name), l, sc)
			}
		}
		specs = append(specs, plotSpec{"aggregation-loss.svg", saver(lp)})
	}
	return specs
}

// decades ticks a log axis at the powers of ten, labelled 1e-6 and so on (every second
// or third one labelled on tall ranges).
type decades struct{}

func (decades) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= lo {
		return plot.LogTicks{}.Ticks(math.Max(lo, 1e-300), math.Max(hi, 1e-299))
	}
	a, b := int(math.Floor(math.Log10(lo))), int(math.Ceil(math.Log10(hi)))
	step := 1 + (b-a)/12
	var ts []plot.Tick
	for k := a; k <= b; k++ {
		v := math.Pow(10, float64(k))
		if v < lo || v > hi {
			continue
		}
		t := plot.Tick{Value: v}
		if k%step == 0 {
			t.Label = fmt.Sprintf("1e%d", k)
		}
		ts = append(ts, t)
	}
	return ts
}
