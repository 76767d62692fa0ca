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
	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/protocols/membership"
	"github.com/unsserv/go-unsserv/sim"
)

// broadcastProtocol is one dissemination algorithm as the lab builds it: a core per node
// and the wire message of its layer.
type broadcastProtocol struct {
	newCore    func(self peer.ID, rng *rand.Rand) (protocols.Core, error)
	newMessage func() proto.Message
	oneToMany  bool // built for one origin (or a few): -origins defaults to 1
}

// broadcastProtocols are the algorithms `lab broadcast -protocol` knows, with their
// default configs. A core plugs in with one entry.
var broadcastProtocols = map[string]broadcastProtocol{
	"plumtree": {
		newCore: func(self peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewPlumtree(self, dissemination.PlumtreeConfig{}, rng)
		},
		newMessage: func() proto.Message { return new(dissemination.Message) },
	},
	"brisa": {
		newCore: func(self peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewBrisa(self, dissemination.BrisaConfig{}, rng)
		},
		newMessage: func() proto.Message { return new(dissemination.BrisaMessage) },
		oneToMany:  true,
	},
	"lpbcast": {
		newCore: func(self peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewLPBCast(self, dissemination.LPBCastConfig{}, rng)
		},
		newMessage: func() proto.Message { return new(dissemination.LPBCastMessage) },
	},
	"mon": {
		newCore: func(self peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewMon(self, dissemination.MonConfig{}, rng)
		},
		newMessage: func() proto.Message { return new(dissemination.MonMessage) },
		oneToMany:  true,
	},
}

func broadcastNames() []string {
	names := make([]string, 0, len(broadcastProtocols))
	for n := range broadcastProtocols {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// broadcastParams are the flags of the broadcast experiment.
type broadcastParams struct {
	protocols  []string
	n          int
	fail       float64
	loss       float64
	msgs       int
	membership string
	seed       uint64
	latency    time.Duration
	warmup     int
	warmupMsgs int
	gap        time.Duration
	drain      time.Duration
	joinGap    time.Duration
	notify     bool
	origins    int
}

func parseBroadcast(args []string) (broadcastParams, error) {
	fs := flag.NewFlagSet("lab broadcast", flag.ContinueOnError)
	protos := fs.String("protocol", "plumtree", "dissemination algorithm: "+strings.Join(broadcastNames(), ", ")+"; a comma-separated list sweeps")
	n := fs.Int("n", 10000, "number of nodes")
	fail := fs.Float64("fail", 0, "fraction of nodes that crash at once after the warm-up")
	loss := fs.Float64("loss", 0, "probability that a message (of any layer) is lost, once the overlay is built")
	msgs := fs.Int("msgs", 50, "broadcasts measured")
	memb := fs.String("membership", "hyparview", "membership under the broadcast: hyparview or newscast")
	seed := fs.Uint64("seed", 1, "seed of the whole run")
	latency := fs.Duration("latency", 10*time.Millisecond, "one-way link latency")
	warmup := fs.Int("warmup", 5, "membership cycles (shuffle periods) after the joins, before the warm-up broadcasts")
	warmupMsgs := fs.Int("warmup-msgs", 10, "broadcasts before the measured ones (tree protocols settle), not measured")
	gap := fs.Duration("gap", time.Second, "virtual time between two broadcasts")
	drain := fs.Duration("drain", 10*time.Second, "virtual time run after the last broadcast for late deliveries")
	joinGap := fs.Duration("join-gap", 10*time.Millisecond, "virtual time between two joins")
	origins := fs.Int("origins", 0, "distinct origins taking turns (a crashed one is replaced by a live node); 0: 1 for the one-to-many protocols (brisa, mon), a random live node per broadcast for the others")
	notify := fs.Bool("notify-crash", true, "a crashed node's connections close, so the membership hears of it from the network as in the runtime; false: only by sending to it, as in the HyParView paper")
	if err := fs.Parse(args); err != nil {
		return broadcastParams{}, err
	}
	p := broadcastParams{n: *n, fail: *fail, loss: *loss, msgs: *msgs, membership: strings.TrimSpace(*memb), seed: *seed,
		latency: *latency, warmup: *warmup, warmupMsgs: *warmupMsgs, gap: *gap, drain: *drain, joinGap: *joinGap, notify: *notify, origins: *origins}
	for _, s := range strings.Split(*protos, ",") {
		s = strings.TrimSpace(s)
		if _, ok := broadcastProtocols[s]; !ok {
			return p, fmt.Errorf("-protocol %q: use %s", s, strings.Join(broadcastNames(), ", "))
		}
		p.protocols = append(p.protocols, s)
	}
	switch {
	case p.membership != "hyparview" && p.membership != "newscast":
		return p, fmt.Errorf("-membership %q: use hyparview or newscast", p.membership)
	case p.n < 2:
		return p, fmt.Errorf("-n %d: at least 2 nodes", p.n)
	case p.fail < 0 || p.fail >= 1 || math.Round(p.fail*float64(p.n)) > float64(p.n-2):
		return p, fmt.Errorf("-fail %v: a fraction in [0, 1) that leaves at least 2 nodes", p.fail)
	case p.loss < 0 || p.loss >= 1:
		return p, fmt.Errorf("-loss %v: a probability in [0, 1)", p.loss)
	case p.msgs < 1 || p.warmup < 0 || p.warmupMsgs < 0:
		return p, fmt.Errorf("-msgs must be at least 1, -warmup and -warmup-msgs not negative")
	case p.gap <= 0 || p.drain < 0 || p.latency < 0 || p.joinGap < 0:
		return p, fmt.Errorf("-gap must be positive; -drain, -latency, -join-gap not negative")
	}
	return p, nil
}

// Figures of the experiment (JSON). No wall-clock value goes in here.
type broadcastResult struct {
	Experiment   string         `json:"experiment"`
	N            int            `json:"n"`
	Seed         uint64         `json:"seed"`
	Membership   string         `json:"membership"`
	Fail         float64        `json:"fail"`
	Loss         float64        `json:"loss"`
	Msgs         int            `json:"msgs"`
	WarmupCycles int            `json:"warmup_cycles"`
	WarmupMsgs   int            `json:"warmup_msgs"`
	GapMs        float64        `json:"gap_ms"`
	DrainMs      float64        `json:"drain_ms"`
	LatencyMs    float64        `json:"latency_ms"`
	Notify       bool           `json:"notify_crash"`
	Runs         []broadcastRun `json:"runs"`
}

type broadcastRun struct {
	Protocol         string            `json:"protocol"`
	Origins          int               `json:"origins"` // distinct origins taking turns; 0: a random one per broadcast
	Survivors        int               `json:"survivors"`
	Aggregate        broadcastAgg      `json:"aggregate"`
	Broadcasts       []broadcastFig    `json:"broadcasts"`
	MsgsByKind       map[string]uint64 `json:"dissemination_msgs_by_kind"` // sent while measuring
	MembershipByKind map[string]uint64 `json:"membership_msgs_by_kind"`    // sent while measuring
	Sim              simSummary        `json:"sim"`
}

// broadcastAgg summarises the measured broadcasts.
type broadcastAgg struct {
	MeanReliability float64 `json:"mean_reliability"`
	MinReliability  float64 `json:"min_reliability"`
	// FullFrom is the index of the first broadcast from which every broadcast reached
	// every live node (nil if the last one did not).
	FullFrom    *int    `json:"full_reliability_from"`
	MeanRMR     float64 `json:"mean_rmr"`
	MeanLDH     float64 `json:"mean_ldh"`
	MaxLDH      int     `json:"max_ldh"`
	P50Latency  float64 `json:"p50_latency_ms"`
	P95Latency  float64 `json:"p95_latency_ms"`
	MeanPayload float64 `json:"mean_payload_msgs"`
	MeanControl float64 `json:"mean_control_msgs"`
	Duplicates  int     `json:"duplicates"`
	ExactlyOnce bool    `json:"every_live_node_exactly_once"`
}

// broadcastFig is one measured broadcast.
type broadcastFig struct {
	Index       int     `json:"i"`
	Reliability float64 `json:"reliability"`
	RMR         float64 `json:"rmr"`
	LDH         int     `json:"ldh"`
	LatencyMs   float64 `json:"latency_ms"`
	Delivered   int     `json:"delivered"`
	Payload     int     `json:"payload_msgs"`
	Control     int     `json:"control_msgs"`
	Duplicates  int     `json:"duplicates"`
}

func runBroadcast(args []string, prog *progress) (any, []plotSpec, error) {
	if isMocknet(args) {
		return runBroadcastMocknet(args, prog)
	}
	p, err := parseBroadcast(args)
	if err != nil {
		return nil, nil, err
	}
	res := broadcastResult{Experiment: "broadcast", N: p.n, Seed: p.seed, Membership: p.membership, Fail: p.fail, Loss: p.loss,
		Msgs: p.msgs, WarmupCycles: p.warmup, WarmupMsgs: p.warmupMsgs, GapMs: virtualMs(p.gap), DrainMs: virtualMs(p.drain),
		LatencyMs: virtualMs(p.latency), Notify: p.notify}
	for _, name := range p.protocols {
		r, err := broadcastOnce(p, name, prog)
		if err != nil {
			return nil, nil, err
		}
		res.Runs = append(res.Runs, r)
	}
	return res, broadcastPlots(res), nil
}

func virtualMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// upperLayer is a core stacked on the membership of every node, as layer 1: the
// membership's NeighboursChanged events reach it as protocols.Neighbours, as the runtime
// passes them (see buildStack).
type upperLayer struct {
	layer   sim.Layer
	newCore func(i int, id peer.ID) (protocols.Core, error)
	onEvent func(now time.Time, node int, ev protocols.Output) // events of layer 1
	onSend  func(layer int, msg proto.Message)                 // messages sent
}

func (u *upperLayer) configure(net *overlayNet, cfg *sim.Config) {
	cfg.Layers = []sim.Layer{{}, u.layer} // layer 0: the membership, from NewMessage and Kind
	cfg.OnLayerEvent = func(now time.Time, node peer.ID, layer int, ev protocols.Output) {
		if layer != 0 {
			if u.onEvent != nil {
				u.onEvent(now, net.index[node], ev)
			}
			return
		}
		if nc, ok := ev.(membership.NeighboursChanged); ok {
			peers := make([]peer.ID, 0, len(nc.Nodes))
			for _, d := range nc.Nodes {
				peers = append(peers, peer.ID(d.GetId()))
			}
			_ = net.s.InputLayer(node, 1, protocols.Neighbours{Peers: peers})
		}
	}
	if u.onSend != nil {
		cfg.OnSend = func(_ time.Time, layer int, _, _ peer.ID, msg proto.Message) { u.onSend(layer, msg) }
	}
}

func (u *upperLayer) add(s *sim.Sim, i int, id peer.ID, lower protocols.Core) error {
	c, err := u.newCore(i, id)
	if err != nil {
		return err
	}
	return s.AddStack(id, lower, c)
}

// start starts a node's layer-1 core, when its membership starts.
func (u *upperLayer) start(s *sim.Sim, id peer.ID) {
	if u != nil {
		_ = s.InputLayer(id, 1, protocols.Start{})
	}
}

// simBroadcast follows one measured broadcast.
type simBroadcast struct {
	origin    int
	at        time.Time
	got       []uint8 // Delivered events per node (saturating)
	delivered int     // nodes other than the origin that delivered it
	dups      int     // Delivered events beyond the first per node, or at the origin
	maxHop    int
	last      time.Duration
	payload   int // copies of it sent
	control   int // messages without payload sent in its window
}

// simBroadcastTracker attributes the dissemination layer's events and messages to the
// measured broadcasts: by sequence number for deliveries and payload copies, by time
// window (from its publication to the next) for control messages.
type simBroadcastTracker struct {
	firstSeq uint64 // sequence number of tracks[0]; 0 before measuring
	tracks   []*simBroadcast
	cur      int               // the broadcast whose window is open, or -1
	kinds    map[string]uint64 // dissemination messages sent while measuring
	mkinds   map[string]uint64 // membership messages sent while measuring
}

func (t *simBroadcastTracker) track(b *dissemination.Broadcast) *simBroadcast {
	if t.firstSeq == 0 || b == nil || b.GetSeq() < t.firstSeq {
		return nil
	}
	if k := b.GetSeq() - t.firstSeq; k < uint64(len(t.tracks)) {
		return t.tracks[k]
	}
	return nil
}

func (t *simBroadcastTracker) event(now time.Time, node int, ev protocols.Output) {
	d, ok := ev.(dissemination.Delivered)
	if !ok {
		return
	}
	tr := t.track(d.Broadcast)
	if tr == nil {
		return
	}
	if tr.got[node] < math.MaxUint8 {
		tr.got[node]++
	}
	if tr.got[node] > 1 || node == tr.origin {
		tr.dups++
		return
	}
	tr.delivered++
	tr.maxHop = max(tr.maxHop, int(d.Round)) // Round counts hops from the origin
	tr.last = max(tr.last, now.Sub(tr.at))
}

func (t *simBroadcastTracker) send(layer int, msg proto.Message) {
	if layer == 0 {
		if t.cur >= 0 {
			t.mkinds[membershipKind(msg)]++
		}
		return
	}
	c, ok := msg.(dissemination.Carrier)
	if !ok {
		return
	}
	bs := c.Broadcasts()
	if t.cur >= 0 {
		t.kinds[c.Kind()]++
		if len(bs) == 0 {
			t.tracks[t.cur].control++
		}
	}
	for _, b := range bs {
		if tr := t.track(b); tr != nil {
			tr.payload++
		}
	}
}

func broadcastOnce(p broadcastParams, name string, prog *progress) (broadcastRun, error) {
	bp := broadcastProtocols[name]
	t := &simBroadcastTracker{cur: -1, kinds: map[string]uint64{}, mkinds: map[string]uint64{}}
	up := &upperLayer{
		layer: sim.Layer{NewMessage: bp.newMessage, Kind: func(m proto.Message) string { return m.(dissemination.Carrier).Kind() }},
		// Node i's membership core draws from NodeRand(seed, i); its broadcast core from
		// NodeRand(seed, n+i).
		newCore: func(i int, id peer.ID) (protocols.Core, error) { return bp.newCore(id, sim.NodeRand(p.seed, p.n+i)) },
		onEvent: t.event,
		onSend:  t.send,
	}
	mp := membershipParams{n: p.n, seed: p.seed, joinGap: p.joinGap, latency: p.latency, notify: p.notify}
	net, err := buildStack(mp, p.membership, up, prog)
	if err != nil {
		return broadcastRun{}, fmt.Errorf("%s over %s: %w", name, p.membership, err)
	}
	s := net.s
	if err := s.SetLoss(p.loss); err != nil {
		return broadcastRun{}, err
	}
	for c := 0; c < p.warmup; c++ {
		s.RunFor(net.cycle)
		prog.update("%s: warm-up cycle %d of %d", name, c+1, p.warmup)
	}

	rng := rand.New(rand.NewPCG(p.seed, 0xb20adca5))
	alive := make([]bool, p.n)
	for i := range alive {
		alive[i] = true
	}
	liveNodes := func() []int {
		var live []int
		for i, a := range alive {
			if a {
				live = append(live, i)
			}
		}
		return live
	}
	live := liveNodes()
	var seq uint64
	publish := func(origin int) {
		seq++
		b := &dissemination.Broadcast{Origin: []byte(net.ids[origin]), Seq: seq, Payload: []byte(fmt.Sprintf("lab broadcast %d", seq))}
		_ = s.InputLayer(net.ids[origin], 1, protocols.Call{Req: dissemination.Publish{Broadcast: b}})
	}
	// Origins: a fixed few taking turns, or a random live node per broadcast.
	nOrigins := p.origins
	if nOrigins == 0 && broadcastProtocols[name].oneToMany {
		nOrigins = 1
	}
	var pool []int
	pick := func(k int) int {
		if nOrigins == 0 {
			return live[rng.IntN(len(live))]
		}
		pool = slices.DeleteFunc(pool, func(i int) bool { return !alive[i] })
		for len(pool) < min(nOrigins, len(live)) {
			if c := live[rng.IntN(len(live))]; !slices.Contains(pool, c) {
				pool = append(pool, c)
			}
		}
		return pool[k%len(pool)]
	}
	for k := 0; k < p.warmupMsgs; k++ {
		publish(pick(k))
		s.RunFor(p.gap)
	}

	// Crash a fraction of the nodes at once.
	for _, i := range rng.Perm(p.n)[:int(math.Round(p.fail*float64(p.n)))] {
		alive[i] = false
		s.Crash(net.ids[i])
	}
	live = liveNodes()
	r := broadcastRun{Protocol: name, Origins: nOrigins, Survivors: len(live)}

	// The measured broadcasts, one per gap.
	t.firstSeq = seq + 1
	t.tracks = make([]*simBroadcast, p.msgs)
	for k := 0; k < p.msgs; k++ {
		origin := pick(k)
		t.tracks[k] = &simBroadcast{origin: origin, at: s.Now(), got: make([]uint8, p.n)}
		t.cur = k
		publish(origin)
		s.RunFor(p.gap)
		prog.update("%s: broadcast %d of %d, reliability %.4f so far", name, k+1, p.msgs, float64(t.tracks[k].delivered)/float64(len(live)-1))
	}
	t.cur = -1
	s.RunFor(p.drain)

	for k, tr := range t.tracks {
		fig := broadcastFig{Index: k, Delivered: tr.delivered, LDH: tr.maxHop, LatencyMs: round3(virtualMs(tr.last)),
			Payload: tr.payload, Control: tr.control, Duplicates: tr.dups}
		fig.Reliability = round4(float64(tr.delivered) / float64(len(live)-1))
		if tr.delivered > 0 {
			fig.RMR = round4(float64(tr.payload)/float64(tr.delivered) - 1)
		}
		r.Broadcasts = append(r.Broadcasts, fig)
	}
	r.Aggregate = aggregateBroadcasts(r.Broadcasts, len(live)-1)
	r.MsgsByKind = t.kinds
	r.MembershipByKind = t.mkinds
	st := s.Stats()
	r.Sim = simSummary{Events: st.Events, Messages: st.Sent.Msgs, Bytes: st.Sent.Bytes, PeerDowns: st.PeerDowns}
	return r, nil
}

// aggregateBroadcasts summarises the broadcasts of a run; others is the number of live
// nodes but the origin.
func aggregateBroadcasts(figs []broadcastFig, others int) broadcastAgg {
	a := broadcastAgg{MinReliability: 1}
	var rel, rmr, ldh, pay, ctl float64
	lat := make([]float64, 0, len(figs))
	for _, f := range figs {
		rel += f.Reliability
		rmr += f.RMR
		ldh += float64(f.LDH)
		pay += float64(f.Payload)
		ctl += float64(f.Control)
		a.MinReliability = min(a.MinReliability, f.Reliability)
		a.MaxLDH = max(a.MaxLDH, f.LDH)
		a.Duplicates += f.Duplicates
		lat = append(lat, f.LatencyMs)
	}
	n := float64(len(figs))
	a.MeanReliability = round4(rel / n)
	a.MeanRMR = round4(rmr / n)
	a.MeanLDH = round3(ldh / n)
	a.MeanPayload = round3(pay / n)
	a.MeanControl = round3(ctl / n)
	slices.Sort(lat)
	a.P50Latency = rankPercentile(lat, 0.50)
	a.P95Latency = rankPercentile(lat, 0.95)
	all := true
	for k := len(figs) - 1; k >= 0 && figs[k].Delivered == others; k-- {
		k := k
		a.FullFrom = &k
	}
	for _, f := range figs {
		all = all && f.Delivered == others
	}
	a.ExactlyOnce = a.Duplicates == 0 && all
	return a
}

// rankPercentile is the nearest-rank percentile of sorted values.
func rankPercentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// broadcastPlots: reliability per measured broadcast, one line per protocol; mean RMR
// and mean last delivery hop per protocol.
func broadcastPlots(res broadcastResult) []plotSpec {
	title := fmt.Sprintf("N=%d, %s, fail %g, loss %g", res.N, res.Membership, res.Fail, res.Loss)
	rel := newPlot("Reliability per broadcast: "+title, "broadcast (after warm-up and crash)", "reliability")
	lo := 1.0
	for _, r := range res.Runs {
		lo = min(lo, r.Aggregate.MinReliability)
	}
	margin := max(0.0005, (1-lo)*0.1)
	rel.Y.Min, rel.Y.Max = max(-0.02, lo-margin), 1+margin
	rel.Y.Tick.Marker = fineTicks{}
	names := make([]string, len(res.Runs))
	rmr := make(plotter.Values, len(res.Runs))
	ldh := make(plotter.Values, len(res.Runs))
	for i, r := range res.Runs {
		names[i] = r.Protocol
		rmr[i] = r.Aggregate.MeanRMR
		ldh[i] = r.Aggregate.MeanLDH
		pts := make(plotter.XYs, len(r.Broadcasts))
		for k, f := range r.Broadcasts {
			pts[k] = plotter.XY{X: float64(f.Index), Y: f.Reliability}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			continue
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		rel.Add(l, sc)
		rel.Legend.Add(r.Protocol, l, sc)
	}
	specs := []plotSpec{{"broadcast-reliability.svg", saver(rel)}}
	for _, b := range []struct {
		file, title, y string
		vals           plotter.Values
	}{
		{"broadcast-rmr.svg", "Mean RMR", "RMR (payload copies / receivers - 1)", rmr},
		{"broadcast-ldh.svg", "Mean last delivery hop", "hops", ldh},
	} {
		p := newPlot(b.title+": "+title, "protocol", b.y)
		bars, err := plotter.NewBarChart(b.vals, vg.Points(40))
		if err != nil {
			continue
		}
		bars.Color = plotutil.Color(0)
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.NominalX(names...)
		specs = append(specs, plotSpec{b.file, saver(p)})
	}
	return specs
}

// fineTicks are gonum's default ticks labelled with as many digits as their value needs
// (reliability near 1 would otherwise read 1, 1, 1).
type fineTicks struct{}

func (fineTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
}
