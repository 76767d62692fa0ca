package clustering

//go:generate protoc --go_out=. --go_opt=paths=source_relative xbot.proto

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// XBOT is the overlay optimisation protocol of João Leitão, João Pedro Marques, José
// Pereira and Luís Rodrigues, "X-BOT: A Protocol for Resilient Optimization of
// Unstructured Overlays", SRDS 2009 (https://doi.org/10.1109/SRDS.2009.20).
//
// X-BOT keeps HyParView's two views: a small symmetric active view (the clustered
// neighbours, 5 by default) and a larger passive view (30), refreshed by SHUFFLE random
// walks, from which a lost neighbour is replaced with NEIGHBOR requests (high priority,
// which must be accepted, when no neighbour is left). On top of that, every
// OptimizePeriod a node i with a full active view runs an optimisation round: the first
// Unbiased entries of its active view are never touched (they keep the overlay random,
// hence connected); among the others it picks the costliest, o, and among PassiveScan
// nodes of its passive view the cheapest, c. When i's cost of c is lower than its cost
// of o, a 4-node exchange swaps the links i-o and c-d for i-c and o-d:
//
//	i -> c  OPTIMIZATION(o, itoc, itoo)    c has a free slot: it takes i in and answers
//	                                       OPTIMIZATION_REPLY at once, and i drops o
//	                                       with DISCONNECT. Else c picks d, its
//	                                       costliest biased neighbour, and:
//	c -> d  REPLACE(i, o, itoc, itoo, ctod)
//	d       accepts only if itoc + dtoo < itoo + ctod (the swap lowers the summed cost)
//	d -> o  SWITCH(i, c, dtoo)
//	o       accepts if i is still its (biased) neighbour: drops i (DISCONNECT wait),
//	        takes d in
//	o -> d  SWITCH_REPLY;  d drops c, takes o in
//	d -> c  REPLACE_REPLY; c drops d, takes i in
//	c -> i  OPTIMIZATION_REPLY; i drops o (if still there), takes c in
//
// A refusal anywhere travels back along the same path and nothing changes. The cost of
// a link (a, b) as seen by a is a's rank of b (Rank, lower is better); each message
// carries the costs the next node needs. Node degrees are kept: each of o, c and d ends
// with as many neighbours as it started with.
//
// The core is stacked on a membership: protocols.Neighbours gives it random peers,
// which feed its passive view (and so its first neighbours, through NEIGHBOR requests).
// It emits protocols.Link for every active-view change and ViewChanged (the active
// view, best ranked first) whenever the active view changes. Every message carries the
// sender's own descriptor, which refreshes what the receiver knows of it.
//
// The core is deterministic: views are slices in arrival order, every random choice
// comes from the *rand.Rand it is given, time comes with inputs.
//
// Deviations from the paper (see docs/clustering-xbot.md):
//   - The join is the layer below's: X-BOT has no JOIN/FORWARD_JOIN of its own; the
//     membership's neighbours go into the passive view and NEIGHBOR requests fill the
//     active view from it. Any missing slot is refilled, not only after a failure, as
//     in this repository's HyParView, and an isolated node with empty views takes the
//     membership's neighbours into its passive view again.
//   - Unbiased links: a link that a node takes in through NEIGHBOR (join or repair, so
//     a random one) is marked unbiased while the node has fewer than Unbiased such
//     links; links made by optimisation are biased. Unbiased links are never chosen as
//     o (at i), d (at c), nor given up at o or d: a node refuses a REPLACE or SWITCH
//     that would cost it one of its unbiased links. A node short of unbiased links
//     keeps a free slot for one (as c it then takes the 4-node path rather than fill
//     the slot with i) and asks for one with an unbiased NEIGHBOR request, which the
//     receiver accepts by evicting a random biased neighbour if its view is full:
//     without it, a node whose unbiased neighbour failed could stay without one, as
//     every other view is full in a settled overlay.
//   - One optimisation at a time per initiator, to the cheapest of the PassiveScan
//     candidates sampled at random from the passive view against the costliest biased
//     neighbour; a node plays at most MaxPending parts (c or d) in others' exchanges
//     at once, and no node takes part twice in exchanges that involve the same peer.
//   - Timeouts: every half-done exchange is forgotten after ExchangeTimeout (the
//     initiator's reserved slot freed, c or d answering a refusal); an acceptance that
//     comes after its exchange was forgotten is kept when a slot is free and undone
//     with DISCONNECT otherwise, so views stay symmetric.
//   - The initiator also sends DISCONNECT to o if o is still its neighbour when the
//     OPTIMIZATION_REPLY comes (o's own DISCONNECT is then ignored), so a lying or
//     late o cannot leave a one-sided link.
//   - A SHUFFLE from a node that is not a neighbour (nor in an exchange or request
//     with this node) is answered with DISCONNECT, as a reset connection would.
type XBOT struct {
	cfg    XBOTConfig
	rng    *rand.Rand
	selfID peer.ID
	rank   Rank
	self   *XBotNode

	active  []xbEntry   // the neighbours, in the order they came
	passive []xbEntry   // known nodes that are not neighbours
	pending []xbRequest // NEIGHBOR requests not answered yet
	tried   []peer.ID   // not to be asked with low priority before the next shuffle
	lower   []peer.ID   // the membership's neighbours (at most PassiveView)

	opt   *xbOpt   // the optimisation this node started, if any
	roles []xbRole // parts this node plays in others' optimisations (at most MaxPending)

	shuffleNonce uint64
	shuffleSent  []peer.ID

	started, left bool
	out           []protocols.Output
	prev          []peer.ID // the active view when the current Handle began
}

// XBOTConfig holds X-BOT's parameters; a zero field means its default.
type XBOTConfig struct {
	// ActiveView is the capacity of the active view, the clustered neighbours; 0 means
	// 5 (log10(N)+1 for N = 10,000, as HyParView).
	ActiveView int
	// PassiveView is the capacity of the passive view; 0 means 30.
	PassiveView int
	// Unbiased is how many active-view links a node keeps out of optimisation (the
	// paper's unbiased neighbours), so that the overlay stays random enough to remain
	// connected; 0 means 1, a negative value means none. It must be below ActiveView.
	Unbiased int
	// PassiveScan is how many passive-view nodes an optimisation round considers as
	// candidates (the paper's passive scan length, PSL); 0 means 10.
	PassiveScan int
	// OptimizePeriod is the period of optimisation rounds; 0 means 10 s.
	OptimizePeriod time.Duration
	// ShufflePeriod is the period of passive-view shuffles and of the view upkeep;
	// 0 means 10 s.
	ShufflePeriod time.Duration
	// ShuffleActive (ka) and ShufflePassive (kp) are how many active and passive nodes
	// a SHUFFLE carries besides its origin; 0 means 3 and 4.
	ShuffleActive, ShufflePassive int
	// ShuffleTTL is the number of hops of a SHUFFLE walk; 0 means 6.
	ShuffleTTL int
	// ExchangeTimeout is how long a NEIGHBOR request or a part in an optimisation may
	// wait for its answer before it is given up (and its reserved slot freed); 0 means
	// 5 s.
	ExchangeTimeout time.Duration
	// MaxPending bounds the parts (candidate or disconnected node) this node plays at
	// once in optimisations other nodes started; 0 means 4.
	MaxPending int
}

// maxXBotShuffle bounds the nodes one SHUFFLE carries.
const maxXBotShuffle = 256

// WithDefaults returns the config with every zero field set to its default.
func (c XBOTConfig) WithDefaults() XBOTConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.ActiveView, 5)
	def(&c.PassiveView, 30)
	def(&c.Unbiased, 1)
	def(&c.PassiveScan, 10)
	def(&c.ShuffleActive, 3)
	def(&c.ShufflePassive, 4)
	def(&c.ShuffleTTL, 6)
	def(&c.MaxPending, 4)
	defD(&c.OptimizePeriod, 10*time.Second)
	defD(&c.ShufflePeriod, 10*time.Second)
	defD(&c.ExchangeTimeout, 5*time.Second)
	return c
}

// Validate says which field is wrong, if any, as a *protocols.ConfigError.
func (c XBOTConfig) Validate() error {
	bad := func(field, reason string) error {
		return &protocols.ConfigError{Field: "XBOTConfig." + field, Reason: reason}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"ActiveView", c.ActiveView}, {"PassiveView", c.PassiveView}, {"PassiveScan", c.PassiveScan},
		{"ShuffleActive", c.ShuffleActive}, {"ShufflePassive", c.ShufflePassive},
		{"ShuffleTTL", c.ShuffleTTL}, {"MaxPending", c.MaxPending},
	} {
		if f.v < 0 {
			return bad(f.name, "must not be negative")
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"OptimizePeriod", c.OptimizePeriod}, {"ShufflePeriod", c.ShufflePeriod}, {"ExchangeTimeout", c.ExchangeTimeout},
	} {
		if f.v < 0 {
			return bad(f.name, "must not be negative")
		}
	}
	d := c.WithDefaults()
	switch {
	case d.ActiveView > 1024:
		return bad("ActiveView", "must not exceed 1024")
	case d.PassiveView > 65536:
		return bad("PassiveView", "must not exceed 65536")
	case d.Unbiased >= d.ActiveView:
		return bad("Unbiased", "must be below ActiveView (else nothing is left to optimise)")
	case d.PassiveScan > d.PassiveView:
		return bad("PassiveScan", "must not exceed PassiveView")
	case d.ShuffleActive+d.ShufflePassive+1 > maxXBotShuffle:
		return bad("ShufflePassive", "with ShuffleActive and the origin, a shuffle may carry at most 256 nodes")
	case d.MaxPending > 1024:
		return bad("MaxPending", "must not exceed 1024")
	}
	return nil
}

// Timer kinds.
const (
	xbTimerOptimize uint8 = iota + 1 // the periodic optimisation round
	xbTimerShuffle                   // the periodic shuffle and upkeep
	xbTimerNeighbor                  // a NEIGHBOR request's deadline, per peer asked
	xbTimerOpt                       // this node's own optimisation's deadline
	xbTimerRole                      // a part in another's optimisation: Peer i, Key round
)

// Role kinds of a node in another node's optimisation.
const (
	roleCandidate  uint8 = iota + 1 // c: asked by i, waiting for d
	roleDisconnect                  // d: asked by c, waiting for o
)

type xbEntry struct {
	id       peer.ID
	n        *XBotNode
	unbiased bool
}

type xbRequest struct {
	id   peer.ID
	high bool
}

// xbOpt is the optimisation this node started, as i.
type xbOpt struct {
	round   uint64
	cand    peer.ID
	old     peer.ID
	oldGone bool // o dropped the link already: its slot is reserved for c
}

// xbRole is a part this node plays in the optimisation i started (round).
type xbRole struct {
	kind  uint8
	init  peer.ID
	round uint64
	iNode *XBotNode // i's descriptor
	oNode *XBotNode // o's descriptor
	other peer.ID   // candidate role: d; disconnect role: c
}

func (r *xbRole) involves(p peer.ID) bool {
	return r.init == p || r.other == p || peer.ID(r.oNode.GetId()) == p
}

// NewXBOT returns an X-BOT core for node self, biased by rank (lower is better); rng is
// its only source of randomness.
func NewXBOT(self peer.ID, cfg XBOTConfig, rank Rank, rng *rand.Rand) (*XBOT, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rank == nil {
		return nil, &protocols.ConfigError{Field: "rank", Reason: "must not be nil"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "must not be nil"}
	}
	return &XBOT{cfg: cfg.WithDefaults(), rng: rng, selfID: self, rank: rank, self: &XBotNode{Id: []byte(self)}}, nil
}

// Self returns the node's own ID.
func (x *XBOT) Self() peer.ID { return x.selfID }

// Active returns the active view (the clustered neighbours) in view order.
func (x *XBOT) Active() []peer.ID { return xbIDs(x.active) }

// Passive returns the passive view in view order.
func (x *XBOT) Passive() []peer.ID { return xbIDs(x.passive) }

// Unbiased returns the neighbours this node keeps out of optimisation.
func (x *XBOT) Unbiased() []peer.ID {
	var out []peer.ID
	for _, e := range x.active {
		if e.unbiased {
			out = append(out, e.id)
		}
	}
	return out
}

// View returns the active view as nodes, best ranked first (as ViewChanged gives it).
func (x *XBOT) View() []Node { return x.view() }

func xbIDs(es []xbEntry) []peer.ID {
	out := make([]peer.ID, len(es))
	for i, e := range es {
		out[i] = e.id
	}
	return out
}

// Handle implements protocols.Core.
func (x *XBOT) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if x.left {
		return nil
	}
	x.out = x.out[:0]
	x.prev = x.prev[:0]
	for _, e := range x.active {
		x.prev = append(x.prev, e.id)
	}
	switch v := in.(type) {
	case protocols.Start:
		x.start()
	case protocols.Neighbours:
		x.neighbours(v.Peers)
	case protocols.Receive:
		if m, ok := v.Msg.(*XBotMessage); ok && m != nil && v.From != "" && v.From != x.selfID {
			x.receive(v.From, m)
		}
	case protocols.TimerFired:
		x.timer(v.Timer)
	case protocols.PeerDown:
		x.peerDown(v.Peer)
	case protocols.Leave:
		x.leave()
		return x.out
	case protocols.SelfUpdated:
		x.self = &XBotNode{Id: []byte(x.selfID), Record: slices.Clone(v.Record), Meta: slices.Clone(v.Meta)}
	}
	if !slices.EqualFunc(x.prev, x.active, func(id peer.ID, e xbEntry) bool { return id == e.id }) {
		x.emit(ViewChanged{Nodes: x.view()})
	}
	return x.out
}

// cost is this node's rank of n; NaN counts as +Inf.
func (x *XBOT) cost(n *XBotNode) float64 {
	c := x.rank(Node{ID: peer.ID(n.GetId()), Record: slices.Clone(n.GetRecord()), Meta: slices.Clone(n.GetMeta())})
	if math.IsNaN(c) {
		return math.Inf(1)
	}
	return c
}

// wireCost reads a cost from a message; NaN counts as +Inf.
func wireCost(c float64) float64 {
	if math.IsNaN(c) {
		return math.Inf(1)
	}
	return c
}

// view returns the active view as nodes, best ranked first (ties by ID).
func (x *XBOT) view() []Node {
	type ranked struct {
		n Node
		c float64
	}
	rs := make([]ranked, len(x.active))
	for i, e := range x.active {
		rs[i] = ranked{Node{ID: e.id, Record: slices.Clone(e.n.GetRecord()), Meta: slices.Clone(e.n.GetMeta())}, x.cost(e.n)}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(a.c, b.c); c != 0 {
			return c
		}
		return cmp.Compare(a.n.ID, b.n.ID)
	})
	out := make([]Node, len(rs))
	for i, r := range rs {
		out[i] = r.n
	}
	return out
}

func (x *XBOT) emit(o protocols.Output) { x.out = append(x.out, o) }

func (x *XBOT) send(to peer.ID, m *XBotMessage) {
	m.Sender = proto.Clone(x.self).(*XBotNode)
	x.emit(protocols.Send{To: to, Msg: m})
}

func cloneXNode(n *XBotNode) *XBotNode {
	if n == nil {
		return nil
	}
	return proto.Clone(n).(*XBotNode)
}

// xbID returns the peer ID a descriptor names, or "" if it does not parse.
func xbID(n *XBotNode) peer.ID {
	if n == nil {
		return ""
	}
	id, err := peer.IDFromBytes(n.GetId())
	if err != nil {
		return ""
	}
	return id
}

func (x *XBOT) start() {
	if x.started {
		return
	}
	x.started = true
	for _, t := range []struct {
		kind   uint8
		period time.Duration
	}{{xbTimerShuffle, x.cfg.ShufflePeriod}, {xbTimerOptimize, x.cfg.OptimizePeriod}} {
		half := t.period / 2
		first := half + time.Duration(x.rng.Int64N(int64(t.period-half)+1))
		x.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: t.kind}, After: first})
	}
	x.refill()
}

// neighbours takes the membership's neighbours: random peers for the passive view.
func (x *XBOT) neighbours(ps []peer.ID) {
	x.lower = x.lower[:0]
	for _, p := range ps {
		if len(x.lower) >= x.cfg.PassiveView {
			break
		}
		if p == "" || p == x.selfID || p.Validate() != nil || slices.Contains(x.lower, p) {
			continue
		}
		x.lower = append(x.lower, p)
		x.addPassive(&XBotNode{Id: []byte(p)}, p, nil)
	}
	if x.started {
		x.refill()
	}
}

// receive is the one place that dispatches wire messages.
func (x *XBOT) receive(from peer.ID, m *XBotMessage) {
	s := m.GetSender()
	if s == nil || peer.ID(s.GetId()) != from {
		return // every message carries its sender's own descriptor
	}
	x.refresh(s, from)
	switch b := m.GetBody().(type) {
	case *XBotMessage_Neighbor:
		x.onNeighbor(from, s, b.Neighbor)
	case *XBotMessage_NeighborReply:
		x.onNeighborReply(from, s, b.NeighborReply)
	case *XBotMessage_Disconnect:
		x.onDisconnect(from, b.Disconnect)
	case *XBotMessage_Shuffle:
		x.onShuffle(from, b.Shuffle)
	case *XBotMessage_ShuffleReply:
		x.onShuffleReply(b.ShuffleReply)
	case *XBotMessage_Optimization:
		x.onOptimization(from, s, b.Optimization)
	case *XBotMessage_OptimizationReply:
		x.onOptimizationReply(from, s, b.OptimizationReply)
	case *XBotMessage_Replace:
		x.onReplace(from, b.Replace)
	case *XBotMessage_ReplaceReply:
		x.onReplaceReply(from, b.ReplaceReply)
	case *XBotMessage_Switch:
		x.onSwitch(from, s, b.Switch)
	case *XBotMessage_SwitchReply:
		x.onSwitchReply(from, s, b.SwitchReply)
	}
}

// ---- HyParView part: NEIGHBOR, DISCONNECT, SHUFFLE ----

func (x *XBOT) onNeighbor(from peer.ID, s *XBotNode, nb *XBotNeighbor) {
	accept := true
	switch {
	case x.isActive(from):
	case nb.GetHighPriority() || len(x.active) < x.cfg.ActiveView:
		x.addActive(s, from, true)
	case nb.GetUnbiased() && x.evictable() >= 0:
		x.addActive(s, from, true)
	default:
		accept = false
	}
	x.send(from, &XBotMessage{Body: &XBotMessage_NeighborReply{NeighborReply: &XBotNeighborReply{Accepted: accept}}})
	if !accept && !x.isActive(from) {
		x.emit(protocols.Close{Peer: from})
	}
}

func (x *XBOT) onNeighborReply(from peer.ID, s *XBotNode, r *XBotNeighborReply) {
	req, asked := x.dropPending(from)
	switch {
	case x.isActive(from):
	case !r.GetAccepted() && asked && req.high:
		x.removePassive(from) // a high-priority request must be accepted: count it failed
	case !r.GetAccepted():
		if asked {
			x.markTried(from)
		}
	case asked:
		x.addActive(s, from, true)
	default:
		x.lateAccept(from, s, true)
	}
	x.refill()
}

// lateAccept handles an acceptance nobody waits for any more: the other end holds a
// link to this node. It is kept if a slot is free, else undone with DISCONNECT.
func (x *XBOT) lateAccept(from peer.ID, s *XBotNode, viaNeighbor bool) {
	if x.isActive(from) {
		return
	}
	if len(x.active)+len(x.pending)+x.reserved() < x.cfg.ActiveView {
		x.addActive(s, from, viaNeighbor)
		return
	}
	x.sendDisconnect(from, false)
	x.addPassive(s, from, nil)
	x.markTried(from)
}

func (x *XBOT) onDisconnect(from peer.ID, d *XBotDisconnect) {
	alive := d.GetAlive()
	if e, ok := x.removeActive(from); ok {
		x.emit(protocols.Close{Peer: from})
		if alive {
			x.addPassive(e.n, e.id, nil)
			x.markTried(from)
		}
	}
	if d.GetWait() && x.opt != nil && x.opt.old == from {
		x.opt.oldGone = true // the slot stays reserved for the candidate
	}
	if !alive {
		x.removePassive(from)
		x.dropPending(from)
	}
	x.refill()
}

func (x *XBOT) shuffleLimit() int { return x.cfg.ShuffleActive + x.cfg.ShufflePassive + 1 }

func (x *XBOT) shuffle() {
	target := x.randomActive("", "")
	if target == "" {
		return
	}
	nodes := append(x.sample(x.active, x.cfg.ShuffleActive, ""), x.sample(x.passive, x.cfg.ShufflePassive, "")...)
	x.shuffleNonce = x.rng.Uint64() | 1
	x.shuffleSent = xnodeIDs(nodes)
	x.send(target, &XBotMessage{Body: &XBotMessage_Shuffle{Shuffle: &XBotShuffle{
		Origin: cloneXNode(x.self), Nodes: nodes, Ttl: uint32(x.cfg.ShuffleTTL), Nonce: x.shuffleNonce,
	}}})
}

func (x *XBOT) onShuffle(from peer.ID, s *XBotShuffle) {
	origin := s.GetOrigin()
	oid := xbID(origin)
	if oid == "" || oid == x.selfID {
		return
	}
	if !x.isActive(from) && !x.isPending(from) && !x.busy(from) {
		// The sender holds a link this node does not: tell it to drop it.
		x.sendDisconnect(from, true)
	}
	ttl := min(s.GetTtl(), uint32(x.cfg.ShuffleTTL))
	nodes := s.GetNodes()
	if limit := x.shuffleLimit(); len(nodes) > limit {
		nodes = nodes[:limit]
	}
	if ttl > 1 && len(x.active) > 1 {
		if next := x.randomActive(from, oid); next != "" {
			x.send(next, &XBotMessage{Body: &XBotMessage_Shuffle{Shuffle: &XBotShuffle{
				Origin: origin, Nodes: nodes, Ttl: ttl - 1, Nonce: s.GetNonce(),
			}}})
			return
		}
	}
	reply := x.sample(x.passive, len(nodes)+1, oid)
	sent := xnodeIDs(reply)
	x.send(oid, &XBotMessage{Body: &XBotMessage_ShuffleReply{ShuffleReply: &XBotShuffleReply{Nodes: reply, Nonce: s.GetNonce()}}})
	if !x.isActive(oid) {
		x.emit(protocols.Close{Peer: oid})
	}
	x.addPassive(origin, oid, sent)
	for _, n := range nodes {
		x.addPassive(n, xbID(n), sent)
	}
}

func (x *XBOT) onShuffleReply(r *XBotShuffleReply) {
	if x.shuffleNonce == 0 || r.GetNonce() != x.shuffleNonce {
		return
	}
	nodes := r.GetNodes()
	if limit := x.shuffleLimit(); len(nodes) > limit {
		nodes = nodes[:limit]
	}
	for _, n := range nodes {
		x.addPassive(n, xbID(n), x.shuffleSent)
	}
	x.shuffleNonce, x.shuffleSent = 0, nil
}

// ---- optimisation ----

// optimize starts an optimisation round, as i.
func (x *XBOT) optimize() {
	if x.opt != nil || len(x.active) < x.cfg.ActiveView {
		return
	}
	oi, oc := -1, math.Inf(-1)
	for i, e := range x.active {
		if e.unbiased || x.busy(e.id) {
			continue
		}
		if c := x.cost(e.n); oi < 0 || c > oc {
			oi, oc = i, c
		}
	}
	if oi < 0 {
		return
	}
	o := x.active[oi]
	var cands []xbEntry
	for _, e := range x.passive {
		if !x.isPending(e.id) && !x.busy(e.id) {
			cands = append(cands, e)
		}
	}
	ci, cc := -1, math.Inf(1)
	for k := range min(x.cfg.PassiveScan, len(cands)) { // a partial Fisher-Yates sample
		j := k + x.rng.IntN(len(cands)-k)
		cands[k], cands[j] = cands[j], cands[k]
		if c := x.cost(cands[k].n); ci < 0 || c < cc {
			ci, cc = k, c
		}
	}
	if ci < 0 || !(cc < oc) {
		return
	}
	c := cands[ci]
	x.opt = &xbOpt{round: x.rng.Uint64() | 1, cand: c.id, old: o.id}
	x.send(c.id, &XBotMessage{Body: &XBotMessage_Optimization{Optimization: &XBotOptimization{
		Old: cloneXNode(o.n), Itoc: cc, Itoo: oc, Round: x.opt.round,
	}}})
	x.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: xbTimerOpt}, After: x.cfg.ExchangeTimeout})
}

func (x *XBOT) roleTimer(init peer.ID, round uint64) protocols.Timer {
	return protocols.Timer{Kind: xbTimerRole, Peer: init, Key: strconv.FormatUint(round, 16)}
}

func (x *XBOT) findRole(kind uint8, init peer.ID, round uint64, other peer.ID) int {
	return slices.IndexFunc(x.roles, func(r xbRole) bool {
		return r.kind == kind && r.init == init && r.round == round && r.other == other
	})
}

func (x *XBOT) dropRole(i int) xbRole {
	r := x.roles[i]
	x.roles = slices.Delete(x.roles, i, i+1)
	x.emit(protocols.CancelTimer{Timer: x.roleTimer(r.init, r.round)})
	return r
}

func (x *XBOT) addRole(r xbRole) {
	x.roles = append(x.roles, r)
	x.emit(protocols.SetTimer{Timer: x.roleTimer(r.init, r.round), After: x.cfg.ExchangeTimeout})
}

// onOptimization: this node is c, asked by i (from) to replace i's link to o.
func (x *XBOT) onOptimization(from peer.ID, s *XBotNode, op *XBotOptimization) {
	o := xbID(op.GetOld())
	refuse := func() {
		x.send(from, &XBotMessage{Body: &XBotMessage_OptimizationReply{OptimizationReply: &XBotOptimizationReply{
			Accepted: false, Old: []byte(o), Round: op.GetRound(),
		}}})
		if !x.isActive(from) {
			x.emit(protocols.Close{Peer: from})
		}
	}
	if o == "" || o == x.selfID || o == from || x.isActive(from) || x.busy(from) || x.busy(o) ||
		len(x.roles) >= x.cfg.MaxPending {
		refuse()
		return
	}
	if len(x.active)+len(x.pending) < x.cfg.ActiveView && x.biased() < x.cfg.ActiveView-max(x.cfg.Unbiased, 0) {
		// A free slot, and not one kept for an unbiased link: take i in at once.
		x.addActive(s, from, false)
		x.send(from, &XBotMessage{Body: &XBotMessage_OptimizationReply{OptimizationReply: &XBotOptimizationReply{
			Accepted: true, Old: []byte(o), Round: op.GetRound(),
		}}})
		return
	}
	di, dc := -1, math.Inf(-1)
	for i, e := range x.active {
		if e.unbiased || e.id == o || x.busy(e.id) {
			continue
		}
		if c := x.cost(e.n); di < 0 || c > dc {
			di, dc = i, c
		}
	}
	if di < 0 {
		refuse()
		return
	}
	d := x.active[di].id
	x.addRole(xbRole{kind: roleCandidate, init: from, round: op.GetRound(), iNode: cloneXNode(s), oNode: cloneXNode(op.GetOld()), other: d})
	x.send(d, &XBotMessage{Body: &XBotMessage_Replace{Replace: &XBotReplace{
		Initiator: cloneXNode(s), Old: cloneXNode(op.GetOld()),
		Itoc: op.GetItoc(), Itoo: op.GetItoo(), Ctod: dc, Round: op.GetRound(),
	}}})
}

// onReplace: this node is d, asked by c (from) to take o in place of c.
func (x *XBOT) onReplace(from peer.ID, r *XBotReplace) {
	i, o := xbID(r.GetInitiator()), xbID(r.GetOld())
	refuse := func() {
		x.send(from, &XBotMessage{Body: &XBotMessage_ReplaceReply{ReplaceReply: &XBotReplaceReply{
			Accepted: false, Initiator: []byte(i), Round: r.GetRound(),
		}}})
	}
	ci := x.activeIndex(from)
	if i == "" || o == "" || i == o || i == x.selfID || o == x.selfID || i == from || o == from ||
		ci < 0 || x.active[ci].unbiased || x.isActive(o) || x.busy(from) || x.busy(o) || x.busy(i) ||
		len(x.roles) >= x.cfg.MaxPending {
		refuse()
		return
	}
	dtoo := x.cost(r.GetOld())
	// The paper's rule: swap only if the new links i-c and d-o cost less than the old
	// ones, i-o and c-d.
	if !(wireCost(r.GetItoc())+dtoo < wireCost(r.GetItoo())+wireCost(r.GetCtod())) {
		refuse()
		return
	}
	x.addRole(xbRole{kind: roleDisconnect, init: i, round: r.GetRound(), iNode: cloneXNode(r.GetInitiator()), oNode: cloneXNode(r.GetOld()), other: from})
	x.send(o, &XBotMessage{Body: &XBotMessage_Switch{Switch: &XBotSwitch{
		Initiator: cloneXNode(r.GetInitiator()), Candidate: cloneXNode(x.active[ci].n), Dtoo: dtoo, Round: r.GetRound(),
	}}})
}

// onSwitch: this node is o, asked by d (from) to drop its link to i and link to d.
func (x *XBOT) onSwitch(from peer.ID, sender *XBotNode, s *XBotSwitch) {
	i := xbID(s.GetInitiator())
	ii := x.activeIndex(i)
	accept := i != "" && i != from && i != x.selfID && ii >= 0 && !x.active[ii].unbiased &&
		!x.isActive(from) && !x.busy(i) && !x.busy(from)
	if accept {
		e, _ := x.removeActive(i)
		x.send(i, &XBotMessage{Body: &XBotMessage_Disconnect{Disconnect: &XBotDisconnect{Alive: true, Wait: true}}})
		x.emit(protocols.Close{Peer: i})
		x.addPassive(e.n, e.id, nil)
		x.addActive(sender, from, false)
	}
	x.send(from, &XBotMessage{Body: &XBotMessage_SwitchReply{SwitchReply: &XBotSwitchReply{
		Accepted: accept, Initiator: []byte(i), Round: s.GetRound(),
	}}})
	if !accept && !x.isActive(from) {
		x.emit(protocols.Close{Peer: from})
	}
}

// onSwitchReply: this node is d; o (from) answered.
func (x *XBOT) onSwitchReply(from peer.ID, s *XBotNode, r *XBotSwitchReply) {
	i := peer.ID(r.GetInitiator())
	k := slices.IndexFunc(x.roles, func(ro xbRole) bool {
		return ro.kind == roleDisconnect && ro.init == i && ro.round == r.GetRound() && peer.ID(ro.oNode.GetId()) == from
	})
	if k < 0 {
		if r.GetAccepted() {
			x.lateAccept(from, s, false)
		}
		return
	}
	ro := x.dropRole(k)
	c := ro.other
	if r.GetAccepted() {
		if e, ok := x.removeActive(c); ok {
			x.addPassive(e.n, e.id, nil) // REPLACE_REPLY tells c
		}
		x.addActive(s, from, false)
	} else if !x.isActive(from) {
		x.emit(protocols.Close{Peer: from})
	}
	x.send(c, &XBotMessage{Body: &XBotMessage_ReplaceReply{ReplaceReply: &XBotReplaceReply{
		Accepted: r.GetAccepted(), Initiator: []byte(i), Round: r.GetRound(),
	}}})
	x.refill()
}

// onReplaceReply: this node is c; d (from) answered.
func (x *XBOT) onReplaceReply(from peer.ID, r *XBotReplaceReply) {
	k := x.findRole(roleCandidate, peer.ID(r.GetInitiator()), r.GetRound(), from)
	if k < 0 {
		if r.GetAccepted() {
			// d dropped this node after the exchange was given up: drop d too.
			if e, ok := x.removeActive(from); ok {
				x.emit(protocols.Close{Peer: from})
				x.addPassive(e.n, e.id, nil)
			}
			x.refill()
		}
		return
	}
	ro := x.dropRole(k)
	reply := &XBotOptimizationReply{Accepted: r.GetAccepted(), Old: slices.Clone(ro.oNode.GetId()), Round: ro.round}
	if r.GetAccepted() {
		if e, ok := x.removeActive(from); ok {
			x.emit(protocols.Close{Peer: from})
			x.addPassive(e.n, e.id, nil)
		}
		x.addActive(ro.iNode, ro.init, false)
		reply.Disconnected = []byte(from)
	}
	x.send(ro.init, &XBotMessage{Body: &XBotMessage_OptimizationReply{OptimizationReply: reply}})
	if !r.GetAccepted() && !x.isActive(ro.init) {
		x.emit(protocols.Close{Peer: ro.init})
	}
	x.refill()
}

// onOptimizationReply: this node is i; c (from) answered.
func (x *XBOT) onOptimizationReply(from peer.ID, s *XBotNode, r *XBotOptimizationReply) {
	if x.opt == nil || x.opt.cand != from || x.opt.round != r.GetRound() {
		if r.GetAccepted() {
			x.lateAccept(from, s, false)
		}
		return
	}
	op := x.opt
	x.opt = nil
	x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerOpt}})
	if r.GetAccepted() {
		if e, ok := x.removeActive(op.old); ok {
			// c took this node in a free slot (or o's DISCONNECT is still on its way):
			// drop o. A DISCONNECT from o that crosses this one is ignored.
			x.send(op.old, &XBotMessage{Body: &XBotMessage_Disconnect{Disconnect: &XBotDisconnect{Alive: true}}})
			x.emit(protocols.Close{Peer: op.old})
			x.addPassive(e.n, e.id, nil)
		}
		x.addActive(s, from, false)
	} else if !x.isActive(from) {
		x.emit(protocols.Close{Peer: from})
	}
	x.refill()
}

// ---- timers, failures, leave ----

func (x *XBOT) timer(t protocols.Timer) {
	switch t.Kind {
	case xbTimerShuffle:
		x.emit(protocols.SetTimer{Timer: t, After: x.cfg.ShufflePeriod})
		x.tried = x.tried[:0]
		if len(x.active) == 0 && len(x.passive) == 0 {
			for _, p := range x.lower {
				x.addPassive(&XBotNode{Id: []byte(p)}, p, nil)
			}
		}
		x.refill()
		x.shuffle()
	case xbTimerOptimize:
		x.emit(protocols.SetTimer{Timer: t, After: x.cfg.OptimizePeriod})
		x.optimize()
	case xbTimerNeighbor:
		if _, ok := x.dropPending(t.Peer); ok {
			x.removePassive(t.Peer) // no answer: take it for dead
			x.emit(protocols.Close{Peer: t.Peer})
			x.refill()
		}
	case xbTimerOpt:
		if x.opt != nil {
			if !x.isActive(x.opt.cand) {
				x.emit(protocols.Close{Peer: x.opt.cand})
			}
			x.opt = nil
			x.refill()
		}
	case xbTimerRole:
		round, err := strconv.ParseUint(t.Key, 16, 64)
		if err != nil {
			return
		}
		k := slices.IndexFunc(x.roles, func(r xbRole) bool { return r.init == t.Peer && r.round == round })
		if k < 0 {
			return
		}
		x.failRole(k)
	}
}

// failRole gives up part k with a refusal to whoever waits for this node.
func (x *XBOT) failRole(k int) {
	r := x.dropRole(k)
	switch r.kind {
	case roleCandidate:
		x.send(r.init, &XBotMessage{Body: &XBotMessage_OptimizationReply{OptimizationReply: &XBotOptimizationReply{
			Accepted: false, Old: slices.Clone(r.oNode.GetId()), Round: r.round,
		}}})
		if !x.isActive(r.init) {
			x.emit(protocols.Close{Peer: r.init})
		}
	case roleDisconnect:
		x.send(r.other, &XBotMessage{Body: &XBotMessage_ReplaceReply{ReplaceReply: &XBotReplaceReply{
			Accepted: false, Initiator: []byte(r.init), Round: r.round,
		}}})
	}
}

func (x *XBOT) peerDown(p peer.ID) {
	if p == "" || p == x.selfID {
		return
	}
	x.removeActive(p)
	x.removePassive(p)
	if _, ok := x.dropPending(p); ok {
		x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerNeighbor, Peer: p}})
	}
	if x.opt != nil {
		switch p {
		case x.opt.cand:
			x.opt = nil
			x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerOpt}})
		case x.opt.old:
			x.opt.oldGone = true
		}
	}
	for k := 0; k < len(x.roles); {
		r := x.roles[k]
		switch {
		case r.kind == roleCandidate && r.other == p, r.kind == roleDisconnect && peer.ID(r.oNode.GetId()) == p:
			x.failRole(k) // the node this part waits for is gone: refuse
		case r.init == p && r.kind == roleCandidate, r.other == p:
			x.dropRole(k) // the node waiting for this part is gone
		default:
			k++
		}
	}
	x.refill()
}

func (x *XBOT) leave() {
	for _, e := range x.active {
		x.send(e.id, &XBotMessage{Body: &XBotMessage_Disconnect{Disconnect: &XBotDisconnect{Alive: false}}})
		x.emit(protocols.Close{Peer: e.id})
		x.emit(protocols.Link{Peer: e.id, Up: false})
	}
	for _, r := range x.pending {
		x.send(r.id, &XBotMessage{Body: &XBotMessage_Disconnect{Disconnect: &XBotDisconnect{Alive: false}}})
		x.emit(protocols.Close{Peer: r.id})
		x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerNeighbor, Peer: r.id}})
	}
	for _, r := range x.roles {
		x.emit(protocols.CancelTimer{Timer: x.roleTimer(r.init, r.round)})
	}
	x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerShuffle}})
	x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerOptimize}})
	x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerOpt}})
	if len(x.active) > 0 {
		x.emit(ViewChanged{Nodes: []Node{}})
	}
	x.active, x.passive, x.pending, x.tried, x.lower, x.roles, x.opt = nil, nil, nil, nil, nil, nil, nil
	x.shuffleSent = nil
	x.left = true
}

// ---- views ----

// reserved counts the slot kept for the candidate of this node's optimisation once o
// dropped its link.
func (x *XBOT) reserved() int {
	if x.opt != nil && x.opt.oldGone {
		return 1
	}
	return 0
}

// refill asks random passive nodes to become neighbours while the active view, counting
// outstanding requests and a reserved slot, has free slots.
func (x *XBOT) refill() {
	if !x.started {
		return
	}
	for len(x.active)+len(x.pending)+x.reserved() < x.cfg.ActiveView {
		high := len(x.active) == 0 && x.reserved() == 0
		// A node short of unbiased links (counting requests out) asks for one.
		unb := !high && len(x.active)-x.biased()+len(x.pending) < x.cfg.Unbiased
		var cands []peer.ID
		for _, e := range x.passive {
			if !x.isPending(e.id) && !x.busy(e.id) && (high || !slices.Contains(x.tried, e.id)) {
				cands = append(cands, e.id)
			}
		}
		if len(cands) == 0 {
			return
		}
		q := cands[x.rng.IntN(len(cands))]
		x.pending = append(x.pending, xbRequest{id: q, high: high})
		x.send(q, &XBotMessage{Body: &XBotMessage_Neighbor{Neighbor: &XBotNeighbor{HighPriority: high, Unbiased: unb}}})
		x.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: xbTimerNeighbor, Peer: q}, After: x.cfg.ExchangeTimeout})
	}
}

// evictable picks a random biased neighbour not in an exchange, or -1 if none.
func (x *XBOT) evictable() int {
	var cands []int
	for i, e := range x.active {
		if !e.unbiased && !x.busy(e.id) {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return -1
	}
	return cands[x.rng.IntN(len(cands))]
}

// biased counts the neighbours that are not unbiased.
func (x *XBOT) biased() int {
	n := 0
	for _, e := range x.active {
		if !e.unbiased {
			n++
		}
	}
	return n
}

// busy says whether p takes part in an exchange this node is in.
func (x *XBOT) busy(p peer.ID) bool {
	if x.opt != nil && (x.opt.cand == p || x.opt.old == p) {
		return true
	}
	for i := range x.roles {
		if x.roles[i].involves(p) {
			return true
		}
	}
	return false
}

func (x *XBOT) isPending(p peer.ID) bool {
	return slices.IndexFunc(x.pending, func(r xbRequest) bool { return r.id == p }) >= 0
}

// dropPending forgets an outstanding request to p, cancelling its timer.
func (x *XBOT) dropPending(p peer.ID) (xbRequest, bool) {
	i := slices.IndexFunc(x.pending, func(r xbRequest) bool { return r.id == p })
	if i < 0 {
		return xbRequest{}, false
	}
	r := x.pending[i]
	x.pending = slices.Delete(x.pending, i, i+1)
	x.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: xbTimerNeighbor, Peer: p}})
	return r, true
}

func (x *XBOT) markTried(p peer.ID) {
	if slices.Contains(x.tried, p) {
		return
	}
	if len(x.tried) >= x.cfg.PassiveView+x.cfg.ActiveView {
		x.tried = slices.Delete(x.tried, 0, 1)
	}
	x.tried = append(x.tried, p)
}

func xbIndex(view []xbEntry, p peer.ID) int {
	return slices.IndexFunc(view, func(e xbEntry) bool { return e.id == p })
}

func (x *XBOT) activeIndex(p peer.ID) int { return xbIndex(x.active, p) }

func (x *XBOT) isActive(p peer.ID) bool { return xbIndex(x.active, p) >= 0 }

func (x *XBOT) sendDisconnect(p peer.ID, alive bool) {
	x.send(p, &XBotMessage{Body: &XBotMessage_Disconnect{Disconnect: &XBotDisconnect{Alive: alive}}})
	x.emit(protocols.Close{Peer: p})
}

// addActive makes id a neighbour, with descriptor n (nil: the one known, if any).
// Through NEIGHBOR (viaNeighbor) the link is unbiased while fewer than Unbiased are. A
// full view first evicts a random biased neighbour not in an exchange (any neighbour if
// there is none) with DISCONNECT into the passive view.
func (x *XBOT) addActive(n *XBotNode, id peer.ID, viaNeighbor bool) {
	if id == "" || id == x.selfID {
		return
	}
	if x.isActive(id) {
		return
	}
	if n == nil {
		if i := xbIndex(x.passive, id); i >= 0 {
			n = x.passive[i].n
		} else {
			n = &XBotNode{Id: []byte(id)}
		}
	}
	n = cloneXNode(n)
	x.removePassive(id)
	x.dropPending(id)
	if len(x.active) >= x.cfg.ActiveView {
		v := x.evictable()
		if v < 0 {
			v = x.rng.IntN(len(x.active))
		}
		victim := x.active[v]
		x.sendDisconnect(victim.id, true)
		x.removeActive(victim.id)
		x.addPassive(victim.n, victim.id, nil)
		x.markTried(victim.id)
	}
	unbiased := false
	if viaNeighbor {
		count := 0
		for _, e := range x.active {
			if e.unbiased {
				count++
			}
		}
		unbiased = count < x.cfg.Unbiased
	}
	x.active = append(x.active, xbEntry{id: id, n: n, unbiased: unbiased})
	x.emit(protocols.Link{Peer: id, Up: true})
}

func (x *XBOT) removeActive(p peer.ID) (xbEntry, bool) {
	i := xbIndex(x.active, p)
	if i < 0 {
		return xbEntry{}, false
	}
	e := x.active[i]
	x.active = slices.Delete(x.active, i, i+1)
	x.emit(protocols.Link{Peer: p, Up: false})
	return e, true
}

func (x *XBOT) removePassive(p peer.ID) {
	if i := xbIndex(x.passive, p); i >= 0 {
		x.passive = slices.Delete(x.passive, i, i+1)
	}
}

// addPassive keeps n (whose ID is id) in the passive view unless it is this node or a
// neighbour; a known node gets the new descriptor unless that would lose a record or
// metadata. A full view evicts the first node of prefer it holds, else a random one.
func (x *XBOT) addPassive(n *XBotNode, id peer.ID, prefer []peer.ID) {
	if id == "" || id == x.selfID || x.isActive(id) {
		return
	}
	if i := xbIndex(x.passive, id); i >= 0 {
		old := x.passive[i].n
		if len(n.GetRecord()) > 0 || len(old.GetRecord()) == 0 && len(n.GetMeta()) > 0 {
			x.passive[i].n = cloneXNode(n)
		}
		return
	}
	if x.cfg.PassiveView == 0 {
		return
	}
	if len(x.passive) >= x.cfg.PassiveView {
		victim := -1
		for _, p := range prefer {
			if victim = xbIndex(x.passive, p); victim >= 0 {
				break
			}
		}
		if victim < 0 {
			victim = x.rng.IntN(len(x.passive))
		}
		x.passive = slices.Delete(x.passive, victim, victim+1)
	}
	x.passive = append(x.passive, xbEntry{id: id, n: cloneXNode(n)})
}

// refresh gives a known node the descriptor s it sent of itself.
func (x *XBOT) refresh(s *XBotNode, id peer.ID) {
	if i := xbIndex(x.active, id); i >= 0 {
		x.active[i].n = cloneXNode(s)
	} else if i := xbIndex(x.passive, id); i >= 0 {
		x.passive[i].n = cloneXNode(s)
	}
}

func (x *XBOT) randomActive(not1, not2 peer.ID) peer.ID {
	var cands []peer.ID
	for _, e := range x.active {
		if e.id != not1 && e.id != not2 {
			cands = append(cands, e.id)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	return cands[x.rng.IntN(len(cands))]
}

// sample returns clones of up to k distinct random members of view other than skip.
func (x *XBOT) sample(view []xbEntry, k int, skip peer.ID) []*XBotNode {
	idx := make([]int, 0, len(view))
	for i, e := range view {
		if e.id != skip {
			idx = append(idx, i)
		}
	}
	k = min(k, len(idx))
	out := make([]*XBotNode, k)
	for i := range k {
		j := i + x.rng.IntN(len(idx)-i)
		idx[i], idx[j] = idx[j], idx[i]
		out[i] = cloneXNode(view[idx[i]].n)
	}
	return out
}

func xnodeIDs(ns []*XBotNode) []peer.ID {
	out := make([]peer.ID, len(ns))
	for i, n := range ns {
		out[i] = xbID(n)
	}
	return out
}

// Descriptors lists every node descriptor the message carries (see
// protocols.DescriptorCarrier).
func (m *XBotMessage) Descriptors() []protocols.Descriptor {
	var ds []protocols.Descriptor
	add := func(ns ...*XBotNode) {
		for _, n := range ns {
			if n != nil {
				ds = append(ds, n)
			}
		}
	}
	add(m.GetSender())
	switch b := m.GetBody().(type) {
	case *XBotMessage_Shuffle:
		add(b.Shuffle.GetOrigin())
		add(b.Shuffle.GetNodes()...)
	case *XBotMessage_ShuffleReply:
		add(b.ShuffleReply.GetNodes()...)
	case *XBotMessage_Optimization:
		add(b.Optimization.GetOld())
	case *XBotMessage_Replace:
		add(b.Replace.GetInitiator(), b.Replace.GetOld())
	case *XBotMessage_Switch:
		add(b.Switch.GetInitiator(), b.Switch.GetCandidate())
	}
	return ds
}

// Kind names the message's kind for counters, e.g. "OPTIMIZATION".
func (m *XBotMessage) Kind() string {
	switch m.GetBody().(type) {
	case *XBotMessage_Neighbor:
		return "XBOT_NEIGHBOR"
	case *XBotMessage_NeighborReply:
		return "XBOT_NEIGHBOR_REPLY"
	case *XBotMessage_Disconnect:
		return "XBOT_DISCONNECT"
	case *XBotMessage_Shuffle:
		return "XBOT_SHUFFLE"
	case *XBotMessage_ShuffleReply:
		return "XBOT_SHUFFLE_REPLY"
	case *XBotMessage_Optimization:
		return "OPTIMIZATION"
	case *XBotMessage_OptimizationReply:
		return "OPTIMIZATION_REPLY"
	case *XBotMessage_Replace:
		return "REPLACE"
	case *XBotMessage_ReplaceReply:
		return "REPLACE_REPLY"
	case *XBotMessage_Switch:
		return "SWITCH"
	case *XBotMessage_SwitchReply:
		return "SWITCH_REPLY"
	}
	return "XBOT_UNKNOWN"
}

var _ protocols.DescriptorCarrier = (*XBotMessage)(nil)
