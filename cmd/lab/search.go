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
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
	"github.com/unsserv/go-unsserv/sim"
)

func init() {
	experiments["search"] = experiment{
		summary: "search cores (KWalker, ABloom, flooding) stacked on HyParView: success rate, messages per query and hops against replication",
		run:     runSearch,
	}
}

var searchNames = []string{"kwalker", "abloom", "flood"}

// searchParams are the flags of the search experiment.
type searchParams struct {
	protocols    []string
	n            int
	replicas     []float64 // fractions of the nodes (or counts, when >= 1)
	queries      int
	floodQueries int
	items        int
	seed         uint64
	latency      time.Duration
	joinGap      time.Duration
	warmup       int
	gap          time.Duration
	ttl          int
	floodTTL     int
	walkers      int
	membership   string
	loss         float64
	fail         float64
	failWait     time.Duration
	retry        time.Duration
	replace      time.Duration
	crashes      float64
}

func parseSearch(args []string) (searchParams, error) {
	fs := flag.NewFlagSet("lab search", flag.ContinueOnError)
	protos := fs.String("protocol", "kwalker,abloom,flood", "search algorithm: kwalker, abloom or flood; a comma-separated list runs each (each builds its network anew from the seed)")
	n := fs.Int("n", 10000, "number of nodes")
	replicas := fs.String("replicas", "0.01", "replicas of each item: a fraction of the nodes (0.01 = 1%) or a count (>= 1); a comma-separated list sweeps")
	queries := fs.Int("queries", 1000, "queries per replication level, each for a random item from a random node that does not hold it")
	floodQueries := fs.Int("flood-queries", 100, "queries per replication level for flood (each one reaches most of the network)")
	items := fs.Int("items", 100, "distinct items per replication level")
	seed := fs.Uint64("seed", 1, "seed of the whole run")
	latency := fs.Duration("latency", 10*time.Millisecond, "one-way link latency")
	joinGap := fs.Duration("join-gap", 10*time.Millisecond, "virtual time between two joins")
	warmup := fs.Int("warmup", 3, "membership cycles (shuffle periods) after the joins")
	gap := fs.Duration("gap", 20*time.Millisecond, "virtual time between two queries")
	ttl := fs.Int("ttl", 0, "TTL of kwalker and abloom queries; 0: their defaults (128 and 64)")
	floodTTL := fs.Int("flood-ttl", 0, "TTL of the flood; 0: the same as kwalker's")
	walkers := fs.Int("walkers", 0, "kwalker's walkers (k); 0: the default (16)")
	memb := fs.String("membership", "hyparview", "membership under the search: hyparview or newscast")
	loss := fs.Float64("loss", 0, "probability that a message (of any layer) is lost, once the overlay is built")
	fail := fs.Float64("fail", 0, "fraction of the nodes that crash at once after the first level's items are placed (its queries then ask only for items with a live holder, from live nodes; later levels place items on survivors)")
	retry := fs.Duration("retry", 0, "abloom's Retry: one more query after this long without an answer; 0: the default (2s), negative: never")
	replace := fs.Duration("replace", 0, "kwalker's Replace: a walker not heard from for this long is replaced; 0: the default (3s), negative: never")
	crashes := fs.Float64("crashes", 0, "nodes that crash per second (virtual) while each level's queries run, one at a time, none replaced (queries still come from live nodes for items with a live holder)")
	failWait := fs.Duration("fail-wait", 0, "virtual time between the crash and the first level's queries (0: at once, with views and filters still stale)")
	if err := fs.Parse(args); err != nil {
		return searchParams{}, err
	}
	p := searchParams{n: *n, queries: *queries, floodQueries: *floodQueries, items: *items, seed: *seed, latency: *latency,
		joinGap: *joinGap, warmup: *warmup, gap: *gap, ttl: *ttl, floodTTL: *floodTTL, walkers: *walkers, membership: strings.TrimSpace(*memb),
		loss: *loss, fail: *fail, failWait: *failWait, retry: *retry, replace: *replace, crashes: *crashes}
	for _, s := range strings.Split(*protos, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(searchNames, s) {
			return p, fmt.Errorf("-protocol %q: use %s", s, strings.Join(searchNames, ", "))
		}
		p.protocols = append(p.protocols, s)
	}
	for _, s := range strings.Split(*replicas, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || v <= 0 || (v >= 1 && (v != math.Trunc(v) || v > float64(*n))) {
			return p, fmt.Errorf("-replicas %q: a fraction in (0, 1) or a whole count between 1 and -n", s)
		}
		p.replicas = append(p.replicas, v)
	}
	switch {
	case p.membership != "hyparview" && p.membership != "newscast":
		return p, fmt.Errorf("-membership %q: use hyparview or newscast", p.membership)
	case p.n < 10:
		return p, fmt.Errorf("-n %d: at least 10 nodes", p.n)
	case p.queries < 1 || p.floodQueries < 1 || p.items < 1:
		return p, fmt.Errorf("-queries, -flood-queries and -items must be at least 1")
	case p.ttl < 0 || p.floodTTL < 0 || p.walkers < 0 || p.warmup < 0:
		return p, fmt.Errorf("-ttl, -flood-ttl, -walkers and -warmup must not be negative")
	case p.gap <= 0 || p.latency < 0 || p.joinGap < 0 || p.failWait < 0:
		return p, fmt.Errorf("-gap must be positive; -latency, -join-gap and -fail-wait not negative")
	case p.crashes < 0 || p.crashes*float64(p.queries)*p.gap.Seconds() > float64(p.n-p.crashed())/2:
		return p, fmt.Errorf("-crashes %v: not negative, and at most half the nodes crashed during a level's queries", p.crashes)
	case p.loss < 0 || p.loss >= 1:
		return p, fmt.Errorf("-loss %v: a probability in [0, 1)", p.loss)
	case p.fail < 0 || p.fail >= 1 || p.n-p.crashed() < 10:
		return p, fmt.Errorf("-fail %v: a fraction in [0, 1) that leaves at least 10 nodes", p.fail)
	}
	for _, r := range p.replicas {
		if p.count(r) > p.n-p.crashed()-1 {
			return p, fmt.Errorf("-replicas %v: %d replicas leave no survivor of -fail %v to ask", r, p.count(r), p.fail)
		}
	}
	return p, nil
}

// crashed is the number of nodes -fail crashes.
func (p searchParams) crashed() int { return int(math.Round(p.fail * float64(p.n))) }

// count returns the replicas of an item for a -replicas value.
func (p searchParams) count(r float64) int {
	if r >= 1 {
		return int(r)
	}
	return max(1, int(math.Round(r*float64(p.n))))
}

// Figures of the experiment (JSON). No wall-clock value goes in here.
type searchResult struct {
	Experiment string      `json:"experiment"`
	N          int         `json:"n"`
	Seed       uint64      `json:"seed"`
	Membership string      `json:"membership"`
	Items      int         `json:"items_per_level"`
	LatencyMs  float64     `json:"latency_ms"`
	Loss       float64     `json:"loss,omitempty"`
	Fail       float64     `json:"fail,omitempty"`
	Crashes    float64     `json:"crashes_per_s,omitempty"`
	FailWaitMs float64     `json:"fail_wait_ms,omitempty"`
	Runs       []searchRun `json:"runs"`
}

type searchRun struct {
	Protocol string        `json:"protocol"`
	Config   string        `json:"config"`
	Levels   []searchLevel `json:"levels"`
	Sim      simSummary    `json:"sim"`
	label    string        // for the plots' legends
}

// searchLevel holds the figures of one replication level.
type searchLevel struct {
	Replication float64 `json:"replication"` // replicas / n
	Replicas    int     `json:"replicas"`
	Queries     int     `json:"queries"`
	// With -fail, on the level placed before the crash: items every holder of which
	// crashed (never asked for), and the live holders per asked item, mean.
	ItemsLost    int     `json:"items_lost,omitempty"`
	LiveReplicas float64 `json:"live_replicas,omitempty"`
	// With -crashes: the nodes that crashed while the level's queries ran, and the
	// queries left out of every other figure: their origin crashed before an answer.
	Crashed    int     `json:"crashed,omitempty"`
	OriginGone int     `json:"origin_gone,omitempty"`
	Success    float64 `json:"success"`
	NotFound   int     `json:"not_found"`   // NotFound events
	Unanswered int     `json:"unanswered"`  // neither answer by the end of the level
	MsgsMean   float64 `json:"msgs_mean"`   // search messages per query, all kinds
	MsgsP50    float64 `json:"msgs_p50"`    //
	MsgsP99    float64 `json:"msgs_p99"`    //
	QueryMsgs  float64 `json:"query_msgs"`  // QUERY messages per query (walker steps, flood copies)
	HopsMean   float64 `json:"hops_mean"`   // hops to the answering node, found queries
	HopsP50    float64 `json:"hops_p50"`    //
	HopsP99    float64 `json:"hops_p99"`    //
	TimeP50    float64 `json:"time_p50_ms"` // virtual time to the answer
	TimeP99    float64 `json:"time_p99_ms"` //
	// Maintenance: messages not tied to a query (ABloom's filters) per node per second
	// from the placement of the level's items to the end of its queries, and their bytes.
	UpkeepMsgs  float64           `json:"upkeep_msgs_per_node_s"`
	UpkeepBytes float64           `json:"upkeep_bytes_per_node_s"`
	ByKind      map[string]uint64 `json:"search_msgs_by_kind"` // from placement to the end of the queries
}

// searchQuery follows one query.
type searchQuery struct {
	at     time.Time
	msgs   int
	qmsgs  int
	done   bool
	found  bool
	hops   int
	took   time.Duration
	origin int
	gone   bool // its origin crashed before it had an answer (-crashes)
}

type searchTracker struct {
	first   uint64 // id of qs[0]
	qs      []*searchQuery
	kinds   map[string]uint64
	upkeep  uint64
	upbytes uint64
	net     *overlayNet
}

func (t *searchTracker) get(id uint64) *searchQuery {
	if id < t.first || id-t.first >= uint64(len(t.qs)) {
		return nil
	}
	return t.qs[id-t.first]
}

func (t *searchTracker) send(layer int, msg proto.Message) {
	if layer != 1 {
		return
	}
	m := msg.(*search.Message)
	t.kinds[m.Kind()]++
	id, ok := m.SearchID()
	if !ok {
		t.upkeep++
		t.upbytes += uint64(proto.Size(m))
		return
	}
	if q := t.get(id); q != nil {
		q.msgs++
		if m.GetQuery() != nil {
			q.qmsgs++
		}
	}
}

func (t *searchTracker) event(now time.Time, _ int, ev protocols.Output) {
	var id uint64
	found, hops := false, 0
	switch e := ev.(type) {
	case search.Found:
		id, found, hops = e.ID, true, e.Hops
	case search.NotFound:
		id = e.ID
	default:
		return
	}
	if q := t.get(id); q != nil && !q.done {
		q.done, q.found, q.hops, q.took = true, found, hops, now.Sub(q.at)
	}
}

func runSearch(args []string, prog *progress) (any, []plotSpec, error) {
	p, err := parseSearch(args)
	if err != nil {
		return nil, nil, err
	}
	res := searchResult{Experiment: "search", N: p.n, Seed: p.seed, Membership: p.membership, Items: p.items, LatencyMs: virtualMs(p.latency),
		Loss: p.loss, Fail: p.fail, FailWaitMs: virtualMs(p.failWait), Crashes: p.crashes}
	for _, name := range p.protocols {
		r, err := searchOnce(p, name, prog)
		if err != nil {
			return nil, nil, err
		}
		res.Runs = append(res.Runs, r)
	}
	return res, searchPlots(res), nil
}

// searchCore returns the constructor of a protocol's core, its settle time after a
// change of the published items, and its config for the record.
func searchCore(p searchParams, name string) (newCore func(id peer.ID, rng *rand.Rand) (protocols.Core, error), settle time.Duration, desc, label string) {
	switch name {
	case "kwalker":
		cfg := search.KWalkerConfig{TTL: p.ttl, Walkers: p.walkers, Replace: p.replace}.WithDefaults()
		return func(id peer.ID, rng *rand.Rand) (protocols.Core, error) { return search.NewKWalker(id, cfg, rng) }, time.Second,
			fmt.Sprintf("walkers %d, ttl %d, check every %d, replace %v", cfg.Walkers, cfg.TTL, cfg.CheckEvery, cfg.Replace),
			fmt.Sprintf("kwalker (k=%d, ttl %d)", cfg.Walkers, cfg.TTL)
	case "abloom":
		cfg := search.ABloomConfig{TTL: p.ttl, Retry: p.retry}.WithDefaults()
		return func(id peer.ID, rng *rand.Rand) (protocols.Core, error) { return search.NewABloom(id, cfg, rng) },
			time.Duration(cfg.Depth+1) * cfg.Period,
			fmt.Sprintf("depth %d, %d bits x %d hashes, period %v, ttl %d, walkers %d, retry %v", cfg.Depth, cfg.Bits, cfg.Hashes, cfg.Period, cfg.TTL, cfg.Walkers, cfg.Retry),
			fmt.Sprintf("abloom (d=%d, ttl %d)", cfg.Depth, cfg.TTL)
	default:
		ttl := p.floodTTL
		if ttl == 0 {
			ttl = search.KWalkerConfig{TTL: p.ttl}.WithDefaults().TTL
		}
		cfg := search.FloodConfig{TTL: ttl}.WithDefaults()
		return func(id peer.ID, rng *rand.Rand) (protocols.Core, error) { return search.NewFlood(id, cfg, rng) }, time.Second,
			fmt.Sprintf("ttl %d", cfg.TTL), fmt.Sprintf("flood (ttl %d)", cfg.TTL)
	}
}

func searchOnce(p searchParams, name string, prog *progress) (searchRun, error) {
	newCore, settle, desc, label := searchCore(p, name)
	t := &searchTracker{kinds: map[string]uint64{}}
	up := &upperLayer{
		layer: sim.Layer{NewMessage: func() proto.Message { return new(search.Message) }, Kind: func(m proto.Message) string { return m.(*search.Message).Kind() }},
		// Node i's membership core draws from NodeRand(seed, i); its search core from
		// NodeRand(seed, n+i).
		newCore: func(i int, id peer.ID) (protocols.Core, error) { return newCore(id, sim.NodeRand(p.seed, p.n+i)) },
		onEvent: t.event,
		onSend:  t.send,
	}
	mp := membershipParams{n: p.n, seed: p.seed, joinGap: p.joinGap, latency: p.latency, notify: true}
	net, err := buildStack(mp, p.membership, up, prog)
	if err != nil {
		return searchRun{}, fmt.Errorf("%s over %s: %w", name, p.membership, err)
	}
	t.net = net
	s := net.s
	if err := s.SetLoss(p.loss); err != nil {
		return searchRun{}, err
	}
	for c := 0; c < p.warmup; c++ {
		s.RunFor(net.cycle)
		prog.update("%s: warm-up cycle %d of %d", name, c+1, p.warmup)
	}
	run := searchRun{Protocol: name, Config: desc, label: label}
	rng := rand.New(rand.NewPCG(p.seed, 0x5ea4c))
	queries := p.queries
	if name == "flood" {
		queries = p.floodQueries
	}
	var nextID uint64
	live := make([]int, p.n) // the nodes that have not crashed
	for i := range live {
		live[i] = i
	}
	alive := func(i int) bool { return s.Alive(net.ids[i]) }
	for li, r := range p.replicas {
		k := p.count(r)
		// Place the items of this level.
		clear(t.kinds)
		t.upkeep, t.upbytes = 0, 0
		placed := s.Now()
		holders := make([][]int, p.items)
		held := make([]map[int]bool, p.items)
		for j := range holders {
			key := fmt.Sprintf("level%d-item%d", li, j)
			for _, x := range rng.Perm(len(live))[:k] {
				holders[j] = append(holders[j], live[x])
			}
			held[j] = map[int]bool{}
			for _, i := range holders[j] {
				held[j][i] = true
				_ = s.InputLayer(net.ids[i], 1, protocols.Call{Req: search.Publish{Key: key, Data: []byte("data of " + key)}})
			}
		}
		s.RunFor(settle)
		// The crash, once, on the first level: its items lose their crashed holders
		// and the queries ask only for items some live node still holds.
		asked := make([]int, 0, p.items) // the items the queries may ask for
		itemsLost, liveHolders := 0, 0
		if li == 0 && p.crashed() > 0 {
			for _, x := range rng.Perm(p.n)[:p.crashed()] {
				s.Crash(net.ids[x])
			}
			live = slices.DeleteFunc(live, func(i int) bool { return !alive(i) })
			s.RunFor(p.failWait)
		}
		for j := range holders {
			h := 0
			for _, i := range holders[j] {
				if alive(i) {
					h++
				}
			}
			if h == 0 {
				itemsLost++
				continue
			}
			liveHolders += h
			asked = append(asked, j)
		}
		if len(asked) == 0 {
			return searchRun{}, fmt.Errorf("%d replicas: the crash took every holder of every item; lower -fail or raise -replicas", k)
		}
		// The queries, one every gap, with -crashes while nodes crash one by one: then
		// each asks for an item some live node holds, from a live node.
		t.first = nextID + 1
		t.qs = make([]*searchQuery, queries)
		before := len(live)
		if p.crashes > 0 {
			s.Churn(time.Duration(float64(time.Second)/p.crashes), s.Now().Add(time.Duration(queries)*p.gap), nil)
		}
		heldLive := func(j int) bool { return slices.ContainsFunc(holders[j], alive) }
		for q := 0; q < queries; q++ {
			if p.crashes > 0 {
				asked = slices.DeleteFunc(asked, func(j int) bool { return !heldLive(j) })
				if len(asked) == 0 {
					return searchRun{}, fmt.Errorf("%d replicas: the crashes took every holder of every item; lower -crashes or raise -replicas", k)
				}
			}
			j := asked[rng.IntN(len(asked))]
			origin := live[rng.IntN(len(live))]
			for held[j][origin] || !alive(origin) {
				origin = live[rng.IntN(len(live))]
			}
			nextID++
			t.qs[q] = &searchQuery{at: s.Now(), origin: origin}
			key := fmt.Sprintf("level%d-item%d", li, j)
			_ = s.InputLayer(net.ids[origin], 1, protocols.Call{Req: search.Search{ID: nextID, Key: key}})
			s.RunFor(p.gap)
			prog.update("%s, %d replicas: query %d of %d", name, k, q+1, queries)
		}
		// Every search ends within its timeout (10 s); walkers still out stop at their
		// next check.
		s.RunFor(search.KWalkerConfig{}.WithDefaults().Timeout + 2*time.Second)
		elapsed := s.Now().Sub(placed).Seconds()
		for _, q := range t.qs {
			q.gone = !q.done && !alive(q.origin)
		}
		fig := levelFigures(t, r, k, p.n, elapsed)
		if p.crashed() > 0 && li == 0 {
			fig.ItemsLost, fig.LiveReplicas = itemsLost, round3(float64(liveHolders)/float64(len(asked)))
		}
		live = slices.DeleteFunc(live, func(i int) bool { return !alive(i) })
		fig.Crashed = before - len(live)
		run.Levels = append(run.Levels, fig)
		// Withdraw the level's items before the next one.
		for j := range holders {
			key := fmt.Sprintf("level%d-item%d", li, j)
			for _, i := range holders[j] {
				if alive(i) {
					_ = s.InputLayer(net.ids[i], 1, protocols.Call{Req: search.Unpublish{Key: key}})
				}
			}
		}
		s.RunFor(settle)
		lv := run.Levels[len(run.Levels)-1]
		prog.update("%s, %d replicas: success %.4f, %.1f msgs/query", name, k, lv.Success, lv.MsgsMean)
	}
	st := s.Stats()
	run.Sim = simSummary{Events: st.Events, Messages: st.Sent.Msgs, Bytes: st.Sent.Bytes, PeerDowns: st.PeerDowns}
	return run, nil
}

func levelFigures(t *searchTracker, r float64, k, n int, elapsed float64) searchLevel {
	lv := searchLevel{Replication: round4(float64(k) / float64(n)), Replicas: k, Queries: len(t.qs), ByKind: maps(t.kinds)}
	var msgs, hops, took []float64
	var qm float64
	found := 0
	asked := 0
	for _, q := range t.qs {
		if q.gone {
			lv.OriginGone++
			continue
		}
		asked++
		msgs = append(msgs, float64(q.msgs))
		qm += float64(q.qmsgs)
		switch {
		case !q.done:
			lv.Unanswered++
		case q.found:
			found++
			hops = append(hops, float64(q.hops))
			took = append(took, virtualMs(q.took))
		default:
			lv.NotFound++
		}
	}
	_ = r
	lv.Success = round4(float64(found) / float64(asked))
	lv.MsgsMean = round3(mean(msgs))
	lv.QueryMsgs = round3(qm / float64(asked))
	slices.Sort(msgs)
	slices.Sort(hops)
	slices.Sort(took)
	lv.MsgsP50, lv.MsgsP99 = rankPercentile(msgs, 0.5), rankPercentile(msgs, 0.99)
	lv.HopsMean = round3(mean(hops))
	lv.HopsP50, lv.HopsP99 = rankPercentile(hops, 0.5), rankPercentile(hops, 0.99)
	lv.TimeP50, lv.TimeP99 = round3(rankPercentile(took, 0.5)), round3(rankPercentile(took, 0.99))
	if elapsed > 0 {
		lv.UpkeepMsgs = round4(float64(t.upkeep) / float64(n) / elapsed)
		lv.UpkeepBytes = round3(float64(t.upbytes) / float64(n) / elapsed)
	}
	return lv
}

func maps(m map[string]uint64) map[string]uint64 {
	c := make(map[string]uint64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// searchPlots: success rate, messages per query and hops against the replication
// ratio, one line per protocol.
func searchPlots(res searchResult) []plotSpec {
	if !slices.ContainsFunc(res.Runs, func(r searchRun) bool { return len(r.Levels) > 1 }) {
		return nil // one replication level: a point per protocol, the JSON says it all
	}
	title := fmt.Sprintf("N=%d, %s", res.N, res.Membership)
	if res.Fail > 0 || res.Loss > 0 || res.Crashes > 0 {
		title += fmt.Sprintf(", fail %g, loss %g, crashes %g/s", res.Fail, res.Loss, res.Crashes)
	}
	var specs []plotSpec
	for _, f := range []struct {
		file, title, y string
		log            bool
		at             func(searchLevel) float64
	}{
		{"search-success.svg", "Success rate", "queries answered", false, func(l searchLevel) float64 { return l.Success }},
		{"search-messages.svg", "Messages per query (mean)", "messages per query (log scale)", true, func(l searchLevel) float64 { return max(l.MsgsMean, 0.1) }},
		{"search-hops.svg", "Hops to the answer (mean)", "hops", false, func(l searchLevel) float64 { return l.HopsMean }},
	} {
		pl := newPlot(f.title+": "+title, "replication (% of the nodes holding the item, log scale)", f.y)
		var xs []float64
		top, low := 0.0, 1.0
		for _, r := range res.Runs {
			for _, l := range r.Levels {
				if !slices.Contains(xs, l.Replication*100) {
					xs = append(xs, l.Replication*100)
				}
				top, low = max(top, f.at(l)), min(low, f.at(l))
			}
		}
		pl.X.Scale = plot.LogScale{}
		pl.X.Tick.Marker = valueTicks(xs)
		// Room on both sides of the levels on the log axis.
		pl.X.Min, pl.X.Max = slices.Min(xs)/1.5, slices.Max(xs)*1.5
		switch {
		case f.log:
			pl.Y.Scale = plot.LogScale{}
			pl.Y.Tick.Marker = decadeTicks{}
			pl.Y.Max = top * 30 // room for the legend above the highest line
			pl.Legend.Top = true
		case f.file == "search-hops.svg":
			pl.Legend.Top = true
			pl.Legend.XOffs = vg.Points(230) // top right, above the flat tails
			pl.Y.Min, pl.Y.Max = 0, top*1.4
		default: // success
			pl.Legend.XOffs = vg.Points(230) // bottom right, below the lines near 1
			pl.Y.Min, pl.Y.Max = max(0, low-(1-low)*0.3-0.002), 1+(1-low)*0.05+0.0005
			pl.Y.Tick.Marker = roundTicks{}
		}
		for i, r := range res.Runs {
			pts := make(plotter.XYs, len(r.Levels))
			for k, l := range r.Levels {
				pts[k] = plotter.XY{X: l.Replication * 100, Y: f.at(l)}
			}
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				continue
			}
			l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
			l.Width = vg.Points(1.5)
			sc.Shape = plotutil.Shape(i)
			pl.Add(l, sc)
			pl.Legend.Add(r.label, l, sc)
		}
		specs = append(specs, plotSpec{f.file, saver(pl)})
	}
	return specs
}

// valueTicks labels an axis at the given values only.
type valueTicks []float64

func (v valueTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, x := range v {
		if x >= lo && x <= hi {
			ts = append(ts, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', 4, 64)})
		}
	}
	return ts
}
