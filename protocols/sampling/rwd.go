package sampling

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// RWD is the Random Weight Distribution walk of Awan, Ferreira, Jagannathan and Grama,
// "Distributed Uniform Sampling in Unstructured Peer-to-Peer Networks", HICSS-39, 2006
// (the algorithm the Python library's RWD, with its quantum and more_than_maximum
// parameters, follows).
//
// A random walk whose transition matrix is symmetric has the uniform distribution as
// its stationary distribution, whatever the degrees. RWD builds such a matrix with
// local agreements. Every link starts with weight 1/dmax at both ends (dmax, MaxDegree,
// is more than any node's degree) and a node keeps the rest, 1 - d/dmax, on its
// self-loop. That alone is uniform but slow: the walk mostly stays put. So each node
// with at least a quantum of self-loop weight left asks a random neighbour to move a
// quantum from both their self-loops onto their shared link; the neighbour agrees if it
// has a quantum to spare, else the node marks it and stops asking it. This goes on
// until the node's self-loop is below a quantum or every neighbour refused. The weights
// stay symmetric, every row still sums to one, and the walk, which at each step follows
// a link with its weight or stays with the self-loop weight, mixes much faster. A sample
// is the node where a walk of WalkLength steps ends (steps that stay count).
//
// Deviations (see docs/sampling.md):
//   - Each link's extra weight (the quanta over 1/dmax) is set by one end, the owner
//     (the smaller peer ID): it proposes a new value with a version number, the other
//     end takes it if it has the spare weight and acknowledges; the non-owner end asks
//     the owner for a quantum instead of moving it itself. Proposals are retried until
//     acknowledged (MaxRetries, then the peer is taken as unreachable), and carry the
//     absolute value, so lost or repeated messages cannot leave the two ends with
//     different weights. When a link comes up, the owner sends its value and the other
//     end asks for it, which puts two ends that had lost track of each other back in step.
//   - The paper assumes a static graph. When a node gains a link and has less than 1/dmax
//     left, it takes quanta back from its heaviest links (decreases, which need no
//     agreement) until its weights fit again; a link that goes away returns its weight
//     to both self-loops. A refusal mark is cleared when the marked peer asks for weight
//     or offers some (it has weight to spare then), and all of them when the neighbours
//     change and every RefreshInterval, so weight freed later still gets distributed.
//   - A node whose degree reaches MaxDegree has weights over the total; its walk steps
//     then draw among the links in proportion to their weights (no self-loop) and are
//     counted (Stats.Overfull): the uniformity guarantee needs degree < MaxDegree.
//   - Links are those of the undirected view (see the package doc).
type RWD struct {
	*walker
	cfg     RWDConfig
	total   int // the weight of a row, in units
	base    int // 1/dmax, in units
	quantum int // in units
	maxQ    int // the most quanta a link can hold

	edges   map[peer.ID]*rwdEdge
	version uint64  // last proposal version used by this node
	busy    peer.ID // the peer of our outstanding distribution request ("" if none)
	armed   bool    // the refresh timer is set
}

// rwdEdge is one usable link's weight state.
type rwdEdge struct {
	owner    bool
	extra    int    // quanta over the base: committed (owner) or taken (non-owner)
	version  uint64 // owner: of the proposal in flight; non-owner: of the last one taken
	proposed int    // owner: the value in flight, -1 if none
	retries  int
	lastOK   bool // non-owner: the answer given to version
	asked    bool // non-owner: an Ask is outstanding
	refused  bool // the peer had no spare weight: not asked again for now
}

// RWDConfig holds RWD's parameters; a zero field means its default.
type RWDConfig struct {
	WalkConfig // WalkLength 0 means 40
	// MaxDegree is dmax, more than any node's degree (the Python library's
	// more_than_maximum); 0 means 30. Every node of a network must use the same value.
	MaxDegree int
	// Quantum is the weight moved onto a link per agreement, as a fraction of a row's
	// total weight; 0 means 0.1 (the Python library's quantum). Every node of a network
	// must use the same value.
	Quantum float64
	// RequestTimeout is how long a weight proposal or request waits for its answer
	// before it is sent again (proposals) or dropped (requests); 0 means 2 s.
	RequestTimeout time.Duration
	// MaxRetries bounds the times a proposal is sent again; after that the peer is
	// taken as unreachable. 0 means 4.
	MaxRetries int
	// RefreshInterval is how often refusal marks are cleared (give or take a quarter,
	// at random), a safety net: weight freed by a change of links is distributed at
	// once, but two ends that refused each other when both were short would not ask
	// again otherwise. 0 means 2 min.
	RefreshInterval time.Duration
}

// WithDefaults returns the config with every zero field set to its default.
func (c RWDConfig) WithDefaults() RWDConfig {
	c.WalkConfig = c.WalkConfig.withDefaults(40)
	if c.MaxDegree == 0 {
		c.MaxDegree = 30
	}
	if c.Quantum == 0 {
		c.Quantum = 0.1
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 2 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 4
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = 2 * time.Minute
	}
	return c
}

// Validate says which field is wrong, if any.
func (c RWDConfig) Validate() error {
	if err := c.WalkConfig.validate("RWDConfig"); err != nil {
		return err
	}
	switch {
	case c.MaxDegree < 0 || c.MaxDegree > 100000:
		return &protocols.ConfigError{Field: "RWDConfig.MaxDegree", Reason: "must be between 2 and 100000 (0 for the default)"}
	case c.MaxDegree == 1:
		return &protocols.ConfigError{Field: "RWDConfig.MaxDegree", Reason: "must be more than the largest degree, at least 2"}
	case math.IsNaN(c.Quantum) || c.Quantum < 0 || c.Quantum >= 1:
		return &protocols.ConfigError{Field: "RWDConfig.Quantum", Reason: "must be a fraction in (0, 1)"}
	case c.Quantum > 0 && c.Quantum < 1e-6:
		return &protocols.ConfigError{Field: "RWDConfig.Quantum", Reason: "must be at least 1e-6"}
	case c.RequestTimeout < 0 || c.RefreshInterval < 0:
		return &protocols.ConfigError{Field: "RWDConfig.RequestTimeout/RefreshInterval", Reason: "must not be negative"}
	case c.MaxRetries < 0:
		return &protocols.ConfigError{Field: "RWDConfig.MaxRetries", Reason: "must not be negative"}
	}
	return nil
}

// unitsPerBase is the resolution of the weights: 1/dmax is this many units, a row
// MaxDegree times as many. Integer units keep both ends of a link exactly equal.
const unitsPerBase = 1000

// NewRWD returns an RWD core for node self.
func NewRWD(self peer.ID, cfg RWDConfig, rng *rand.Rand) (*RWD, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validSelf(self, rng); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	r := &RWD{cfg: cfg, edges: map[peer.ID]*rwdEdge{}}
	r.base = unitsPerBase
	r.total = cfg.MaxDegree * unitsPerBase
	r.quantum = max(1, int(math.Round(cfg.Quantum*float64(r.total))))
	r.maxQ = (r.total - r.base) / r.quantum
	r.walker = newWalker(self, cfg.WalkConfig, rng, rwdPolicy{r})
	return r, nil
}

// Handle implements protocols.Core.
func (r *RWD) Handle(now time.Time, in protocols.Input) []protocols.Output {
	return r.handle(now, in)
}

// Weights returns the transition probabilities of the walk at this node: to each
// usable neighbour, and of staying (the self-loop).
func (r *RWD) Weights() (links map[peer.ID]float64, self float64) {
	links = map[peer.ID]float64{}
	sum := 0
	for _, p := range r.usable {
		w := r.weight(p)
		links[p] = float64(w) / float64(r.total)
		sum += w
	}
	return links, float64(r.total-sum) / float64(r.total)
}

// Extra returns the quanta over 1/dmax this node holds for the link to p.
func (r *RWD) Extra(p peer.ID) int {
	if e, ok := r.edges[p]; ok {
		return e.extra
	}
	return 0
}

func (r *RWD) weight(p peer.ID) int {
	w := r.base
	if e, ok := r.edges[p]; ok {
		w += e.extra * r.quantum
	}
	return w
}

// spare is the self-loop weight left, counting quanta in flight in proposals.
func (r *RWD) spare() int {
	s := r.total - len(r.usable)*r.base
	for _, p := range r.usable {
		if e, ok := r.edges[p]; ok {
			used := e.extra
			if e.owner && e.proposed > used {
				used = e.proposed
			}
			s -= used * r.quantum
		}
	}
	return s
}

type rwdPolicy struct{ r *RWD }

func (rwdPolicy) accept(peer.ID, *Walk) bool { return true }

// advance takes steps: follow a link with its weight, or stay with the self-loop's.
func (p rwdPolicy) advance(w *Walk) {
	r := p.r
	for w.Ttl > 0 {
		w.Ttl--
		if to := r.choose(); to != "" {
			r.forward(to, w)
			return
		}
	}
	r.finish(w)
}

// choose draws one step: a usable neighbour, or "" to stay.
func (r *RWD) choose() peer.ID {
	sum := 0
	for _, p := range r.usable {
		sum += r.weight(p)
	}
	n := r.total
	if sum > r.total {
		r.stats.Overfull++
		n = sum
	}
	x := r.rng.IntN(n)
	for _, p := range r.usable {
		if x -= r.weight(p); x < 0 {
			return p
		}
	}
	return ""
}

// usableChanged brings the edge states in line with the usable set.
func (p rwdPolicy) usableChanged() {
	r := p.r
	for _, q := range r.sortedEdges() {
		if !slices.Contains(r.usable, q) {
			r.dropEdge(q)
		}
	}
	for _, q := range r.usable {
		if _, ok := r.edges[q]; ok {
			continue
		}
		e := &rwdEdge{owner: bytes.Compare([]byte(r.self), []byte(q)) < 0, proposed: -1}
		r.edges[q] = e
		if e.owner {
			r.propose(q, e, 0) // the other end may hold an old value
		} else {
			r.send(q, &Message{Body: &Message_Ask{Ask: &Ask{Delta: 0}}}) // we may have lost ours
		}
	}
	for _, e := range r.edges {
		e.refused = false // a new round: the neighbourhood changed
	}
	if !r.armed {
		r.armed = true
		r.setTimer(protocols.Timer{Kind: timerRefresh}, r.refreshDelay())
	}
	r.distribute()
}

// refreshDelay is RefreshInterval, give or take a quarter at random, so that nodes that
// started together do not all refresh at once.
func (r *RWD) refreshDelay() time.Duration {
	d := r.cfg.RefreshInterval
	return d - d/4 + time.Duration(r.rng.Int64N(int64(d/2)+1))
}

func (r *RWD) sortedEdges() []peer.ID {
	ps := make([]peer.ID, 0, len(r.edges))
	for q := range r.edges {
		ps = append(ps, q)
	}
	slices.Sort(ps)
	return ps
}

func (r *RWD) dropEdge(q peer.ID) {
	delete(r.edges, q)
	r.cancel(protocols.Timer{Kind: timerRetry, Peer: q})
	if r.busy == q {
		r.busy = ""
	}
}

func (p rwdPolicy) peerDown(q peer.ID) {
	// The walker already took q out of the usable set (and so its edge) if it was a
	// neighbour.
	if _, ok := p.r.edges[q]; ok && !slices.Contains(p.r.usable, q) {
		p.r.dropEdge(q)
	}
}

// propose sets the link's extra weight to x (owner end).
func (r *RWD) propose(q peer.ID, e *rwdEdge, x int) {
	r.version++
	e.version, e.proposed, e.retries = r.version, x, 0
	if x < e.extra {
		e.extra = x // a decrease needs no agreement: it takes effect here at once
	}
	r.send(q, &Message{Body: &Message_Weight{Weight: &Weight{Version: e.version, Extra: uint32(x)}}})
	r.setTimer(protocols.Timer{Kind: timerRetry, Peer: q}, r.cfg.RequestTimeout)
}

func (p rwdPolicy) receive(from peer.ID, m *Message) {
	r := p.r
	switch b := m.GetBody().(type) {
	case *Message_Weight:
		if b.Weight != nil {
			r.onWeight(from, b.Weight)
		}
	case *Message_WeightAck:
		if b.WeightAck != nil {
			r.onAck(from, b.WeightAck)
		}
	case *Message_Ask:
		if b.Ask != nil {
			r.onAsk(from, b.Ask)
		}
	case *Message_AskRefused:
		if e, ok := r.edges[from]; ok && !e.owner && e.asked {
			e.asked, e.refused = false, true
			r.cancel(protocols.Timer{Kind: timerRetry, Peer: from})
			r.settled(from)
		}
	}
}

// onWeight: the owner of the link sets its extra weight (non-owner end).
func (r *RWD) onWeight(from peer.ID, w *Weight) {
	e, ok := r.edges[from]
	if !ok || e.owner {
		// Not a link of ours (or a peer that claims our role): hold nothing for it.
		r.send(from, &Message{Body: &Message_WeightAck{WeightAck: &WeightAck{Version: w.GetVersion()}}})
		return
	}
	v, x := w.GetVersion(), int(w.GetExtra())
	if v > e.version && x > e.extra {
		// The owner offers weight: it has some to spare, so it is worth asking again.
		e.refused = false
	}
	switch {
	case v < e.version:
		return // stale
	case v == e.version:
		// A repeat: answer as before.
	default:
		ok := false
		switch {
		case x > r.maxQ:
		case x <= e.extra:
			ok = true
		case r.spare() >= (x-e.extra)*r.quantum:
			ok = true
		}
		if ok {
			e.extra = x
		}
		e.version, e.lastOK = v, ok
		if e.asked {
			e.asked = false
			r.cancel(protocols.Timer{Kind: timerRetry, Peer: from})
		}
		defer r.settled(from)
	}
	r.send(from, &Message{Body: &Message_WeightAck{WeightAck: &WeightAck{Version: v, Ok: e.lastOK, Extra: uint32(e.extra)}}})
}

// onAck: the other end answered our proposal (owner end).
func (r *RWD) onAck(from peer.ID, a *WeightAck) {
	e, ok := r.edges[from]
	if !ok || !e.owner || e.proposed < 0 || a.GetVersion() != e.version {
		return
	}
	if a.GetOk() {
		e.extra = e.proposed
	} else {
		if e.proposed > e.extra {
			e.refused = true
		}
		e.extra = min(e.extra, int(a.GetExtra()))
	}
	e.proposed = -1
	r.cancel(protocols.Timer{Kind: timerRetry, Peer: from})
	r.settled(from)
}

// onAsk: the other end asks for one quantum more or less, or for our value (owner end).
func (r *RWD) onAsk(from peer.ID, a *Ask) {
	e, ok := r.edges[from]
	if !ok {
		// No such link here: the asker must hold nothing for it. Not tracked.
		r.version++
		r.send(from, &Message{Body: &Message_Weight{Weight: &Weight{Version: r.version}}})
		return
	}
	if !e.owner || e.proposed >= 0 {
		return // a proposal in flight settles the link; the asker asks again if it must
	}
	switch d := a.GetDelta(); {
	case d > 0:
		e.refused = false // the asker has weight to spare: worth asking again later
		if e.extra < r.maxQ && r.spare() >= r.quantum {
			r.propose(from, e, e.extra+1)
		} else {
			r.send(from, &Message{Body: &Message_AskRefused{AskRefused: &AskRefused{}}})
		}
	case d < 0:
		r.propose(from, e, max(e.extra-1, 0))
		r.distribute()
	default:
		r.propose(from, e, e.extra)
	}
}

// settled: an exchange with q ended; go on distributing.
func (r *RWD) settled(q peer.ID) {
	if r.busy == q {
		r.busy = ""
	}
	r.distribute()
}

func (p rwdPolicy) timer(t protocols.Timer) {
	r := p.r
	switch t.Kind {
	case timerRefresh:
		for _, e := range r.edges {
			e.refused = false
		}
		r.setTimer(protocols.Timer{Kind: timerRefresh}, r.refreshDelay())
		r.distribute()
	case timerRetry:
		e, ok := r.edges[t.Peer]
		if !ok {
			return
		}
		switch {
		case e.owner && e.proposed >= 0 && e.retries < r.cfg.MaxRetries:
			e.retries++
			r.send(t.Peer, &Message{Body: &Message_Weight{Weight: &Weight{Version: e.version, Extra: uint32(e.proposed)}}})
			r.setTimer(protocols.Timer{Kind: timerRetry, Peer: t.Peer}, r.cfg.RequestTimeout)
		case e.owner && e.proposed >= 0:
			// No answer after every retry: the peer is taken as unreachable. When it
			// speaks again the link comes back and the values are set again.
			r.peerDown(t.Peer)
		case e.asked:
			e.asked = false
			r.settled(t.Peer)
		}
	}
}

// distribute is the paper's iterative phase, one request at a time: give back weight if
// this node holds more than a row's worth, else move a quantum from the self-loop onto
// a random link whose other end has not refused.
func (r *RWD) distribute() {
	spare := r.spare()
	if spare < 0 {
		// Over the total (a link came): take quanta back from the heaviest links.
		byWeight := slices.Clone(r.usable)
		slices.SortStableFunc(byWeight, func(a, b peer.ID) int { return r.Extra(b) - r.Extra(a) })
		for _, q := range byWeight {
			if spare >= 0 {
				break
			}
			e := r.edges[q]
			if e == nil || e.extra == 0 {
				break
			}
			switch {
			case e.owner && e.proposed < 0:
				r.propose(q, e, e.extra-1)
				spare += r.quantum
			case !e.owner && !e.asked:
				e.asked = true
				r.send(q, &Message{Body: &Message_Ask{Ask: &Ask{Delta: -1}}})
				r.setTimer(protocols.Timer{Kind: timerRetry, Peer: q}, r.cfg.RequestTimeout)
				spare += r.quantum
			}
		}
		return
	}
	if r.busy != "" || spare < r.quantum {
		return
	}
	var cand []peer.ID
	for _, q := range r.usable {
		e := r.edges[q]
		if e != nil && !e.refused && e.extra < r.maxQ && !e.asked && !(e.owner && e.proposed >= 0) {
			cand = append(cand, q)
		}
	}
	if len(cand) == 0 {
		return
	}
	q := cand[r.rng.IntN(len(cand))]
	e := r.edges[q]
	r.busy = q
	if e.owner {
		r.propose(q, e, e.extra+1)
		return
	}
	e.asked = true
	r.send(q, &Message{Body: &Message_Ask{Ask: &Ask{Delta: 1}}})
	r.setTimer(protocols.Timer{Kind: timerRetry, Peer: q}, r.cfg.RequestTimeout)
}

func (p rwdPolicy) leave() []protocols.Timer {
	ts := []protocols.Timer{{Kind: timerRefresh}}
	for _, q := range p.r.sortedEdges() {
		ts = append(ts, protocols.Timer{Kind: timerRetry, Peer: q})
	}
	return ts
}
