package membership

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// HyParView is the membership protocol of Leitão, Pereira and Rodrigues, "HyParView: a
// membership protocol for reliable gossip-based broadcast", DSN 2007
// (https://asc.di.fct.unl.pt/~jleitao/pdf/dsn07-leitao.pdf).
//
// Each node keeps two partial views. The small active view (log10(N)+1 nodes, 5 by
// default) holds the node's overlay neighbours: links are symmetric, kept open, and
// watched by the transport, so a failed neighbour is noticed as soon as the link breaks.
// The larger passive view (30 by default) is a reserve of known nodes, refreshed by a
// periodic SHUFFLE random walk, from which a node promotes replacements with NEIGHBOR
// requests (high priority when it has no neighbour left, which the receiver must
// accept). A new node sends JOIN to a contact, which takes it into its active view and
// starts FORWARD_JOIN random walks of ARWL hops along its other neighbours; the walks add
// the joiner to passive views at hop PRWL and to an active view where they end. Adding a
// node to a full active view evicts a random member with DISCONNECT, which moves the
// two ends to each other's passive views.
//
// Deviations from the paper (see docs/membership.md):
//   - Links are messages, not TCP connections: the node that takes a joiner in at the end
//     of a FORWARD_JOIN walk tells it with a high-priority NEIGHBOR, and a contact
//     acknowledges a JOIN with a NEIGHBOR_REPLY that carries its own descriptor.
//   - Any free slot of the active view is refilled from the passive view (the paper
//     does it after failures), several requests may be outstanding at once, a request
//     not answered within NeighborTimeout counts as a failure, and a node that rejected
//     a request is not asked again before the next shuffle.
//   - A node whose views are both empty joins again through its bootstrap peers.
//   - Periods and timeouts are wall-clock durations; the paper counts cycles.
type HyParView struct {
	cfg    HyParViewConfig
	rng    *rand.Rand
	self   *Node
	selfID peer.ID

	active  []entry
	passive []entry
	pending []peer.ID // outstanding NEIGHBOR requests, to passive nodes
	tried   []peer.ID // rejected us since the last shuffle

	bootstrap []peer.ID
	joinNext  int     // next bootstrap peer to try
	contact   peer.ID // bootstrap peer joined through, until it proves alive or fails

	shuffleNonce uint64
	shuffleSent  []peer.ID

	started, left bool
	changed       bool
	out           []protocols.Output
}

// HyParViewConfig holds HyParView's parameters. The zero value of a field means the
// paper's default (section 5 of the paper, for N = 10,000).
type HyParViewConfig struct {
	// ActiveSize is the active view's capacity; 0 means 5 (log10(N)+1).
	ActiveSize int
	// PassiveSize is the passive view's capacity; 0 means 30 (k*(log10(N)+c)).
	PassiveSize int
	// ARWL is the active random walk length of FORWARD_JOIN; 0 means 6.
	ARWL int
	// PRWL is the hop at which FORWARD_JOIN adds the joiner to a passive view; 0 means 3.
	PRWL int
	// ShuffleActive (ka) and ShufflePassive (kp) are how many nodes of each view a
	// SHUFFLE carries, besides its origin; 0 means 3 and 4.
	ShuffleActive, ShufflePassive int
	// ShuffleTTL is the SHUFFLE random walk length; 0 means ARWL.
	ShuffleTTL int
	// ShuffleInterval is the period of shuffles and of the view upkeep (one "cycle");
	// 0 means 10 s.
	ShuffleInterval time.Duration
	// NeighborTimeout bounds the wait for a NEIGHBOR reply; 0 means 5 s.
	NeighborTimeout time.Duration
}

// WithDefaults returns the config with every zero field set to its default.
func (c HyParViewConfig) WithDefaults() HyParViewConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.ActiveSize, 5)
	def(&c.PassiveSize, 30)
	def(&c.ARWL, 6)
	def(&c.PRWL, 3)
	def(&c.ShuffleActive, 3)
	def(&c.ShufflePassive, 4)
	def(&c.ShuffleTTL, c.ARWL)
	if c.ShuffleInterval == 0 {
		c.ShuffleInterval = 10 * time.Second
	}
	if c.NeighborTimeout == 0 {
		c.NeighborTimeout = 5 * time.Second
	}
	return c
}

// Validate says which field is wrong, if any.
func (c HyParViewConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"ActiveSize", c.ActiveSize}, {"PassiveSize", c.PassiveSize}, {"ARWL", c.ARWL}, {"PRWL", c.PRWL},
		{"ShuffleActive", c.ShuffleActive}, {"ShufflePassive", c.ShufflePassive}, {"ShuffleTTL", c.ShuffleTTL}} {
		if f.v < 0 {
			return &protocols.ConfigError{Field: "HyParViewConfig." + f.name, Reason: "must not be negative"}
		}
	}
	if c.ShuffleInterval < 0 || c.NeighborTimeout < 0 {
		return &protocols.ConfigError{Field: "HyParViewConfig.ShuffleInterval/NeighborTimeout", Reason: "must not be negative"}
	}
	d := c.WithDefaults()
	if d.PRWL > d.ARWL {
		return &protocols.ConfigError{Field: "HyParViewConfig.PRWL", Reason: "must not exceed ARWL (the walk would end before reaching it)"}
	}
	if d.ShuffleActive+d.ShufflePassive+1 > 64 {
		return &protocols.ConfigError{Field: "HyParViewConfig.ShuffleActive/ShufflePassive", Reason: "carry at most 63 nodes per shuffle"}
	}
	return nil
}

const (
	timerShuffle uint8 = iota + 1
	timerNeighbor
)

// NewHyParView returns a HyParView core for the node self.
func NewHyParView(self *Node, cfg HyParViewConfig, rng *rand.Rand) (*HyParView, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id := self.PeerID()
	if id == "" {
		return nil, &protocols.ConfigError{Field: "self", Reason: "has no valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return &HyParView{cfg: cfg.WithDefaults(), rng: rng, self: cloneNode(self), selfID: id}, nil
}

// entry is a view member: its descriptor and its parsed ID.
type entry struct {
	id peer.ID
	n  *Node
}

// Self returns the node's own ID.
func (h *HyParView) Self() peer.ID { return h.selfID }

// Active returns the active view (the neighbours), in view order.
func (h *HyParView) Active() []peer.ID { return entryIDs(h.active) }

// Passive returns the passive view, in view order.
func (h *HyParView) Passive() []peer.ID { return entryIDs(h.passive) }

func entryIDs(es []entry) []peer.ID {
	out := make([]peer.ID, len(es))
	for i, e := range es {
		out[i] = e.id
	}
	return out
}

func nodeIDs(ns []*Node) []peer.ID {
	out := make([]peer.ID, len(ns))
	for i, n := range ns {
		out[i] = n.PeerID()
	}
	return out
}

// Handle implements protocols.Core.
func (h *HyParView) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if h.left {
		return nil
	}
	h.out = h.out[:0]
	h.changed = false
	switch v := in.(type) {
	case protocols.Start:
		h.start(v)
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && v.From != h.selfID {
			h.receive(v.From, m)
		}
	case protocols.TimerFired:
		h.timer(v.Timer)
	case protocols.PeerDown:
		h.peerDown(v.Peer)
	case protocols.Leave:
		h.leave()
	case protocols.SelfUpdated:
		h.self = NewNode(h.selfID, v.Record, v.Meta)
	}
	if h.changed {
		nodes := make([]*Node, len(h.active))
		for i, e := range h.active {
			nodes[i] = cloneNode(e.n)
		}
		h.emit(NeighboursChanged{Nodes: nodes})
	}
	return h.out
}

func (h *HyParView) emit(o protocols.Output) { h.out = append(h.out, o) }

func (h *HyParView) send(to peer.ID, m *Message) { h.emit(protocols.Send{To: to, Msg: m}) }

func (h *HyParView) selfNode() *Node { return cloneNode(h.self) }

func (h *HyParView) start(v protocols.Start) {
	if h.started {
		return
	}
	h.started = true
	for _, b := range v.Bootstrap {
		if b != h.selfID && b != "" && !slices.Contains(h.bootstrap, b) {
			h.bootstrap = append(h.bootstrap, b)
		}
	}
	// The first shuffle comes after a random part of the period, so that nodes started
	// together do not shuffle in lockstep.
	first := h.cfg.ShuffleInterval/2 + time.Duration(h.rng.Int64N(int64(h.cfg.ShuffleInterval/2)+1))
	h.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: timerShuffle}, After: first})
	h.join()
}

// join sends JOIN to the next bootstrap peer not yet tried, and takes it as a
// neighbour at once (the paper's TCP connection to the contact).
func (h *HyParView) join() {
	for h.joinNext < len(h.bootstrap) {
		c := h.bootstrap[h.joinNext]
		h.joinNext++
		h.contact = c
		h.addActive(NewNode(c, nil, nil), c)
		h.send(c, &Message{Body: &Message_Join{Join: &Join{Sender: h.selfNode()}}})
		return
	}
	h.contact = ""
}

func (h *HyParView) receive(from peer.ID, m *Message) {
	switch b := m.GetBody().(type) {
	case *Message_Join:
		h.onJoin(from, b.Join)
	case *Message_ForwardJoin:
		h.onForwardJoin(from, b.ForwardJoin)
	case *Message_Neighbor:
		h.onNeighbor(from, b.Neighbor)
	case *Message_NeighborReply:
		h.onNeighborReply(from, b.NeighborReply)
	case *Message_Disconnect:
		h.onDisconnect(from, b.Disconnect)
	case *Message_Shuffle:
		h.onShuffle(from, b.Shuffle)
	case *Message_ShuffleReply:
		h.onShuffleReply(b.ShuffleReply)
	}
}

// own returns the sender's descriptor of itself, or nil if it is missing or names
// another peer.
func own(from peer.ID, n *Node) *Node {
	if n == nil || n.PeerID() != from {
		return nil
	}
	return n
}

func (h *HyParView) onJoin(from peer.ID, j *Join) {
	n := own(from, j.GetSender())
	if n == nil {
		return
	}
	h.addActive(n, from)
	h.send(from, &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: h.selfNode(), Accepted: true}}})
	for _, q := range h.active {
		if id := q.id; id != from {
			h.send(id, &Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: cloneNode(n), Ttl: uint32(h.cfg.ARWL)}}})
		}
	}
}

func (h *HyParView) onForwardJoin(from peer.ID, fj *ForwardJoin) {
	n := fj.GetJoiner()
	id := n.PeerID()
	if id == "" || id == h.selfID || h.isActive(id) {
		return
	}
	ttl := min(int(fj.GetTtl()), h.cfg.ARWL)
	if ttl > 0 && len(h.active) > 1 {
		if ttl == h.cfg.PRWL {
			h.addPassive(n, id, nil)
		}
		if next := h.randomActive(from, id); next != "" {
			h.send(next, &Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: cloneNode(n), Ttl: uint32(ttl - 1)}}})
			return
		}
	}
	// The walk ends here: take the joiner in, and tell it so.
	h.addActive(n, id)
	h.send(id, &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: h.selfNode(), HighPriority: true}}})
}

func (h *HyParView) onNeighbor(from peer.ID, nb *Neighbor) {
	n := own(from, nb.GetSender())
	if n == nil {
		return
	}
	accept := h.isActive(from) || nb.GetHighPriority() || len(h.active) < h.cfg.ActiveSize
	if accept {
		h.addActive(n, from)
	} else {
		h.addPassive(n, from, nil)
	}
	h.send(from, &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: h.selfNode(), Accepted: accept}}})
}

func (h *HyParView) onNeighborReply(from peer.ID, r *NeighborReply) {
	n := own(from, r.GetSender())
	if n == nil {
		return
	}
	wasPending := h.dropPending(from)
	if from == h.contact {
		h.contact = "" // the contact answered: it is alive
	}
	switch {
	case !r.GetAccepted():
		if wasPending {
			h.tried = append(h.tried, from)
		}
	case h.isActive(from):
		h.refresh(n, from)
	case len(h.active) < h.cfg.ActiveSize:
		h.addActive(n, from)
	default:
		// Accepted, but the view filled up meanwhile: undo the other end's link.
		h.send(from, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: true}}})
		h.emit(protocols.Close{Peer: from})
		h.addPassive(n, from, nil)
	}
	h.refill()
}

func (h *HyParView) onDisconnect(from peer.ID, d *Disconnect) {
	if i := h.activeIndex(from); i >= 0 {
		e := h.active[i]
		h.removeActive(from)
		h.emit(protocols.Close{Peer: from})
		if d.GetAlive() {
			h.addPassive(e.n, e.id, nil)
		}
	}
	if !d.GetAlive() {
		h.removePassive(from)
	}
	h.refill()
}

func (h *HyParView) onShuffle(from peer.ID, s *Shuffle) {
	origin := s.GetOrigin()
	oid := origin.PeerID()
	if oid == "" || oid == h.selfID {
		return
	}
	ttl := min(int(s.GetTtl()), h.cfg.ShuffleTTL)
	nodes := s.GetNodes()
	if limit := h.cfg.ShuffleActive + h.cfg.ShufflePassive + 1; len(nodes) > limit {
		nodes = nodes[:limit]
	}
	if ttl > 1 && len(h.active) > 1 {
		if next := h.randomActive(from, oid); next != "" {
			s.Ttl = uint32(ttl - 1)
			s.Nodes = nodes
			h.send(next, &Message{Body: &Message_Shuffle{Shuffle: s}})
			return
		}
	}
	// Accept: answer the origin with as many passive nodes, then keep what came.
	reply := h.sample(h.passive, len(nodes)+1, oid)
	sent := nodeIDs(reply)
	h.send(oid, &Message{Body: &Message_ShuffleReply{ShuffleReply: &ShuffleReply{Nodes: reply, Nonce: s.GetNonce()}}})
	if !h.isActive(oid) {
		h.emit(protocols.Close{Peer: oid})
	}
	h.addPassive(origin, oid, sent)
	for _, n := range nodes {
		h.addPassive(n, n.PeerID(), sent)
	}
}

func (h *HyParView) onShuffleReply(r *ShuffleReply) {
	if h.shuffleNonce == 0 || r.GetNonce() != h.shuffleNonce {
		return
	}
	h.shuffleNonce = 0
	nodes := r.GetNodes()
	if limit := h.cfg.ShuffleActive + h.cfg.ShufflePassive + 1; len(nodes) > limit {
		nodes = nodes[:limit]
	}
	for _, n := range nodes {
		h.addPassive(n, n.PeerID(), h.shuffleSent)
	}
	h.shuffleSent = nil
}

func (h *HyParView) timer(t protocols.Timer) {
	switch t.Kind {
	case timerShuffle:
		h.emit(protocols.SetTimer{Timer: t, After: h.cfg.ShuffleInterval})
		h.tried = h.tried[:0]
		if len(h.active) == 0 && len(h.passive) == 0 && len(h.pending) == 0 && h.contact == "" && len(h.bootstrap) > 0 {
			h.joinNext = 0 // isolated: join again
			h.join()
			return
		}
		h.refill()
		h.shuffle()
	case timerNeighbor:
		if h.dropPending(t.Peer) {
			h.removePassive(t.Peer) // no answer: take it for dead
			h.refill()
		}
	}
}

// shuffle starts a SHUFFLE walk from a random neighbour.
func (h *HyParView) shuffle() {
	target := h.randomActive("", "")
	if target == "" {
		return
	}
	nodes := append(h.sample(h.active, h.cfg.ShuffleActive, target), h.sample(h.passive, h.cfg.ShufflePassive, target)...)
	h.shuffleNonce = h.rng.Uint64() | 1
	h.shuffleSent = nodeIDs(nodes)
	h.send(target, &Message{Body: &Message_Shuffle{Shuffle: &Shuffle{
		Origin: h.selfNode(), Nodes: nodes, Ttl: uint32(h.cfg.ShuffleTTL), Nonce: h.shuffleNonce,
	}}})
}

func (h *HyParView) peerDown(p peer.ID) {
	h.removeActive(p)
	h.removePassive(p)
	h.dropPending(p)
	if p == h.contact {
		h.contact = ""
		if len(h.active) == 0 {
			h.join()
		}
	}
	h.refill()
}

func (h *HyParView) leave() {
	for _, e := range h.active {
		id := e.id
		h.send(id, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: false}}})
		h.emit(protocols.Close{Peer: id})
		h.emit(protocols.Link{Peer: id, Up: false})
	}
	h.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: timerShuffle}})
	for _, p := range h.pending {
		h.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: timerNeighbor, Peer: p}})
	}
	h.active, h.passive, h.pending = nil, nil, nil
	h.emit(NeighboursChanged{})
	h.left = true
}

// refill asks random passive nodes to become neighbours while the active view,
// counting outstanding requests, has free slots.
func (h *HyParView) refill() {
	for len(h.active)+len(h.pending) < h.cfg.ActiveSize {
		var cands []peer.ID
		for _, e := range h.passive {
			id := e.id
			if !slices.Contains(h.pending, id) && !slices.Contains(h.tried, id) {
				cands = append(cands, id)
			}
		}
		if len(cands) == 0 {
			return
		}
		q := cands[h.rng.IntN(len(cands))]
		h.pending = append(h.pending, q)
		h.send(q, &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: h.selfNode(), HighPriority: len(h.active) == 0}}})
		h.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: timerNeighbor, Peer: q}, After: h.cfg.NeighborTimeout})
	}
}

// dropPending forgets an outstanding request to p, if any.
func (h *HyParView) dropPending(p peer.ID) bool {
	i := slices.Index(h.pending, p)
	if i < 0 {
		return false
	}
	h.pending = slices.Delete(h.pending, i, i+1)
	h.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: timerNeighbor, Peer: p}})
	return true
}

func (h *HyParView) activeIndex(p peer.ID) int {
	for i, e := range h.active {
		if e.id == p {
			return i
		}
	}
	return -1
}

func (h *HyParView) isActive(p peer.ID) bool { return h.activeIndex(p) >= 0 }

func (h *HyParView) passiveIndex(p peer.ID) int {
	for i, e := range h.passive {
		if e.id == p {
			return i
		}
	}
	return -1
}

// addActive makes n (whose ID is id) a neighbour, evicting a random neighbour if the
// view is full.
func (h *HyParView) addActive(n *Node, id peer.ID) {
	if id == "" || id == h.selfID {
		return
	}
	if h.isActive(id) {
		h.refresh(n, id)
		return
	}
	if len(h.active) >= h.cfg.ActiveSize {
		victim := h.active[h.rng.IntN(len(h.active))]
		h.send(victim.id, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: true}}})
		h.emit(protocols.Close{Peer: victim.id})
		h.removeActive(victim.id)
		h.addPassive(victim.n, victim.id, nil)
	}
	h.removePassive(id)
	h.dropPending(id)
	h.active = append(h.active, entry{id: id, n: cloneNode(n)})
	h.emit(protocols.Link{Peer: id, Up: true})
	h.changed = true
}

func (h *HyParView) removeActive(p peer.ID) {
	if i := h.activeIndex(p); i >= 0 {
		h.active = slices.Delete(h.active, i, i+1)
		h.emit(protocols.Link{Peer: p, Up: false})
		h.changed = true
	}
}

func (h *HyParView) removePassive(p peer.ID) {
	if i := h.passiveIndex(p); i >= 0 {
		h.passive = slices.Delete(h.passive, i, i+1)
	}
}

// addPassive keeps n (whose ID is id) in the passive view unless it is this node or a
// neighbour. A full view makes room by evicting, preferably, a node listed in prefer
// (the nodes just sent away in a shuffle), otherwise a random one.
func (h *HyParView) addPassive(n *Node, id peer.ID, prefer []peer.ID) {
	if id == "" || id == h.selfID || h.isActive(id) {
		return
	}
	if i := h.passiveIndex(id); i >= 0 {
		if len(n.GetRecord()) > 0 {
			h.passive[i].n = cloneNode(n)
		}
		return
	}
	if len(h.passive) >= h.cfg.PassiveSize {
		victim := -1
		for _, p := range prefer {
			if i := h.passiveIndex(p); i >= 0 && !slices.Contains(h.pending, p) {
				victim = i
				break
			}
		}
		if victim < 0 {
			victim = h.rng.IntN(len(h.passive))
		}
		h.passive = slices.Delete(h.passive, victim, victim+1)
	}
	h.passive = append(h.passive, entry{id: id, n: cloneNode(n)})
}

// refresh replaces the stored descriptor of neighbour id with a newer one from it.
func (h *HyParView) refresh(n *Node, id peer.ID) {
	if i := h.activeIndex(id); i >= 0 && len(n.GetRecord()) > 0 {
		h.active[i].n = cloneNode(n)
	}
}

// randomActive picks a random neighbour other than the ones given, or "".
func (h *HyParView) randomActive(not1, not2 peer.ID) peer.ID {
	var cands []peer.ID
	for _, e := range h.active {
		if e.id != not1 && e.id != not2 {
			cands = append(cands, e.id)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	return cands[h.rng.IntN(len(cands))]
}

// sample returns clones of up to k random nodes of view, leaving out skip.
func (h *HyParView) sample(view []entry, k int, skip peer.ID) []*Node {
	var cands []*Node
	for _, e := range view {
		if e.id != skip {
			cands = append(cands, e.n)
		}
	}
	h.rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	if len(cands) > k {
		cands = cands[:k]
	}
	out := make([]*Node, len(cands))
	for i, n := range cands {
		out[i] = cloneNode(n)
	}
	return out
}
