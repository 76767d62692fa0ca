package membership

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// HyParView is the membership protocol of João Leitão, José Pereira and Luís Rodrigues,
// "HyParView: a membership protocol for reliable gossip-based broadcast", DSN 2007
// (https://asc.di.fct.unl.pt/~jleitao/pdf/dsn07-leitao.pdf).
//
// Each node keeps two partial views. The small active view (log10(N)+1 nodes, 5 by
// default) holds the node's overlay neighbours: links are symmetric, kept open and
// watched by the transport, so a failed neighbour is noticed as soon as its link breaks.
// The larger passive view (30 by default) is a reserve of known nodes, refreshed by a
// periodic SHUFFLE random walk that swaps samples of both views with a random node, from
// which a node promotes replacements with NEIGHBOR requests: high priority when it has no
// neighbour left (the receiver must accept, evicting a neighbour if need be), low
// priority otherwise (accepted only into a free slot). A new node sends JOIN to a
// contact, which takes it as a neighbour and starts a FORWARD_JOIN random walk of ARWL
// hops from each of its other neighbours; a walk adds the joiner to the passive view of
// the node it visits at hop PRWL and to the active view of the node where it ends.
// Adding a node to a full active view evicts a random neighbour with DISCONNECT, which
// moves the two ends into each other's passive views.
//
// The core is deterministic: views are slices kept in arrival order, every random
// choice is drawn from the *rand.Rand it is given, and time only comes with inputs, so
// the same inputs and seed give the same outputs.
//
// Deviations from the paper:
//   - Links are messages, not TCP connections. A joiner takes its contact as a
//     neighbour as it sends JOIN (the paper's connection open), so the contact sends
//     nothing back; the node where a FORWARD_JOIN walk ends takes the joiner in and
//     tells it with a high-priority NEIGHBOR, which the joiner accepts. A SHUFFLE or
//     FORWARD_JOIN, which travel along active links only, from a node that is not in
//     the active view is answered with DISCONNECT: the sender holds a link the receiver
//     does not (a message was lost or overtaken), as a reset TCP connection would have
//     told it.
//   - Any missing slot of the active view is refilled from the passive view, not only
//     after a failure: after a failure, a DISCONNECT or a refused request, and at every
//     shuffle. Requests go to several passive nodes at once, one per missing slot. A
//     request unanswered within NeighborTimeout counts as a failure of that node. A
//     node that refused a low-priority request, or that one end of a link just dropped
//     with DISCONNECT, is not asked again with low priority before the next shuffle; a
//     node that refuses a high-priority request (which it must not) counts as failed.
//     An acceptance that comes after its request timed out is taken if a slot is still
//     free; any other acceptance nobody waits for is undone with DISCONNECT.
//   - A node whose active and passive views are both empty joins again through its
//     bootstrap peers at the next shuffle.
//   - Time is wall-clock time: the paper's cycle is ShuffleInterval, and a node's first
//     shuffle comes after a random part of it so that nodes started together do not
//     shuffle in lockstep.
//   - Bounds against bad peers: TTLs are clamped to the configured walk lengths, and a
//     SHUFFLE or SHUFFLE_REPLY is read up to ShuffleActive+ShufflePassive+1 nodes.
//   - Leave also sends DISCONNECT to the nodes it has a NEIGHBOR request outstanding with.
type HyParView struct {
	cfg    HyParViewConfig
	rng    *rand.Rand
	self   *Node
	selfID peer.ID

	active  []entry   // the neighbours, in the order they came
	passive []entry   // known nodes that are not neighbours
	pending []request // NEIGHBOR requests to passive nodes, not answered yet
	expired []peer.ID // requests that timed out, newest last (at most ActiveSize)
	tried   []peer.ID // not to be asked with low priority before the next shuffle (bounded)

	bootstrap []peer.ID
	joinNext  int     // index of the next bootstrap peer to JOIN through
	contact   peer.ID // bootstrap peer JOINed through that has not been heard from yet

	shuffleNonce uint64    // of the outstanding shuffle, 0 if none
	shuffleSent  []peer.ID // nodes sent in it

	started, left bool
	out           []protocols.Output
	prev          []peer.ID // the active view when the current Handle began
}

// HyParViewConfig holds HyParView's parameters. A zero field means the paper's value
// (section 5 of the paper, for a network of N = 10,000 nodes).
type HyParViewConfig struct {
	// ActiveSize is the active view's capacity; 0 means 5 (log10(N)+1).
	ActiveSize int
	// PassiveSize is the passive view's capacity; 0 means 30 (k*(log10(N)+c), k=6, c=1).
	PassiveSize int
	// ARWL, the active random walk length, is the number of hops of a FORWARD_JOIN
	// walk; 0 means 6.
	ARWL int
	// PRWL, the passive random walk length, is the TTL at which a FORWARD_JOIN walk adds
	// the joiner to a passive view; 0 means 3. It must not exceed ARWL.
	PRWL int
	// ShuffleActive (ka) and ShufflePassive (kp) are how many nodes of the active and of
	// the passive view a SHUFFLE carries besides its origin; 0 means 3 and 4.
	ShuffleActive  int
	ShufflePassive int
	// ShuffleTTL is the number of hops of a SHUFFLE walk; 0 means ARWL.
	ShuffleTTL int
	// ShuffleInterval is the period of shuffles and of the view upkeep, the paper's
	// cycle; 0 means 10 s.
	ShuffleInterval time.Duration
	// NeighborTimeout is how long a NEIGHBOR request may go unanswered before the node
	// asked is taken for dead; 0 means 5 s.
	NeighborTimeout time.Duration
}

// maxShuffleNodes bounds ShuffleActive+ShufflePassive+1, the nodes one SHUFFLE carries,
// so that a shuffle of descriptors with signed records stays far below the runtime's
// message size limit.
const maxShuffleNodes = 256

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

// Validate says which field is wrong, if any, as a *protocols.ConfigError.
func (c HyParViewConfig) Validate() error {
	bad := func(field, reason string) error {
		return &protocols.ConfigError{Field: "HyParViewConfig." + field, Reason: reason}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"ActiveSize", c.ActiveSize}, {"PassiveSize", c.PassiveSize}, {"ARWL", c.ARWL},
		{"PRWL", c.PRWL}, {"ShuffleActive", c.ShuffleActive},
		{"ShufflePassive", c.ShufflePassive}, {"ShuffleTTL", c.ShuffleTTL},
	} {
		if f.v < 0 {
			return bad(f.name, "must not be negative")
		}
	}
	if c.ShuffleInterval < 0 {
		return bad("ShuffleInterval", "must not be negative")
	}
	if c.NeighborTimeout < 0 {
		return bad("NeighborTimeout", "must not be negative")
	}
	d := c.WithDefaults()
	if d.PRWL > d.ARWL {
		return bad("PRWL", "must not exceed ARWL (a walk would end before adding the joiner to passive views)")
	}
	if d.ShuffleActive > maxShuffleNodes {
		return bad("ShuffleActive", "must not exceed 256")
	}
	if d.ShuffleActive+d.ShufflePassive+1 > maxShuffleNodes {
		return bad("ShufflePassive", "with ShuffleActive and the origin, a shuffle may carry at most 256 nodes")
	}
	return nil
}

// Timer kinds.
const (
	hvTimerShuffle  uint8 = iota + 1 // the periodic shuffle
	hvTimerNeighbor                  // a NEIGHBOR request's deadline, one per peer asked
)

// NewHyParView returns a HyParView core for the node self; rng is its only source of
// randomness.
func NewHyParView(self *Node, cfg HyParViewConfig, rng *rand.Rand) (*HyParView, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id := self.PeerID()
	if id == "" {
		return nil, &protocols.ConfigError{Field: "self", Reason: "has no valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "must not be nil"}
	}
	return &HyParView{cfg: cfg.WithDefaults(), rng: rng, self: cloneNode(self), selfID: id}, nil
}

// request is an outstanding NEIGHBOR request.
type request struct {
	id   peer.ID
	high bool
}

// entry is a view member: its parsed ID and its descriptor, owned by the view.
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

// Handle implements protocols.Core.
func (h *HyParView) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if h.left {
		return nil
	}
	h.out = h.out[:0]
	h.prev = h.prev[:0]
	for _, e := range h.active {
		h.prev = append(h.prev, e.id)
	}
	switch v := in.(type) {
	case protocols.Start:
		h.start(v)
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && v.From != h.selfID && v.From != "" {
			h.receive(v.From, m)
		}
	case protocols.TimerFired:
		h.timer(v.Timer)
	case protocols.PeerDown:
		h.peerDown(v.Peer)
	case protocols.Leave:
		h.leave()
		return h.out
	case protocols.SelfUpdated:
		h.self = NewNode(h.selfID, slices.Clone(v.Record), slices.Clone(v.Meta))
	}
	if !slices.EqualFunc(h.prev, h.active, func(id peer.ID, e entry) bool { return id == e.id }) {
		h.emit(NeighboursChanged{Nodes: h.activeNodes()})
	}
	return h.out
}

func (h *HyParView) activeNodes() []*Node {
	nodes := make([]*Node, len(h.active))
	for i, e := range h.active {
		nodes[i] = cloneNode(e.n)
	}
	return nodes
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
		if b != "" && b != h.selfID && !slices.Contains(h.bootstrap, b) {
			h.bootstrap = append(h.bootstrap, b)
		}
	}
	half := h.cfg.ShuffleInterval / 2
	first := half + time.Duration(h.rng.Int64N(int64(h.cfg.ShuffleInterval-half)+1))
	h.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: hvTimerShuffle}, After: first})
	h.join()
}

// join sends JOIN to the next bootstrap peer not tried yet, and takes it as a neighbour
// at once (the paper's TCP connection to the contact). With none left it does nothing;
// the next shuffle of an isolated node starts over.
func (h *HyParView) join() {
	h.contact = ""
	if h.joinNext >= len(h.bootstrap) {
		return
	}
	c := h.bootstrap[h.joinNext]
	h.joinNext++
	h.contact = c
	h.addActive(NewNode(c, nil, nil), c)
	h.send(c, &Message{Body: &Message_Join{Join: &Join{Sender: h.selfNode()}}})
}

// receive is the one place that dispatches wire messages.
func (h *HyParView) receive(from peer.ID, m *Message) {
	if from == h.contact {
		h.contact = "" // the contact is alive
	}
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

// onJoin: the contact takes the joiner in and starts a FORWARD_JOIN walk from each of
// its other neighbours.
func (h *HyParView) onJoin(from peer.ID, j *Join) {
	n := own(from, j.GetSender())
	if n == nil {
		return
	}
	h.addActive(n, from)
	// Acknowledge with this node's own descriptor, so that the joiner holds the
	// contact's signed record (it only had the contact's ID), to hand out in shuffles.
	h.send(from, &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: h.selfNode(), Accepted: true}}})
	for _, e := range h.active {
		if e.id != from {
			h.send(e.id, forwardJoinMsg(n, uint32(h.cfg.ARWL)))
		}
	}
}

func forwardJoinMsg(joiner *Node, ttl uint32) *Message {
	return &Message{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: cloneNode(joiner), Ttl: ttl}}}
}

// onForwardJoin: one hop of a joiner's random walk.
func (h *HyParView) onForwardJoin(from peer.ID, fj *ForwardJoin) {
	n := fj.GetJoiner()
	id := n.PeerID()
	if id == "" || id == h.selfID || h.isActive(id) {
		return
	}
	h.checkLink(from)
	ttl := min(fj.GetTtl(), uint32(h.cfg.ARWL))
	if ttl > 0 && len(h.active) > 1 {
		if next := h.randomActive(from, id); next != "" {
			if ttl == uint32(h.cfg.PRWL) {
				h.addPassive(n, id, nil)
			}
			h.send(next, forwardJoinMsg(n, ttl-1))
			return
		}
	}
	// The walk ends here: take the joiner in, and tell it so.
	h.addActive(n, id)
	h.send(id, &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: h.selfNode(), HighPriority: true}}})
}

// checkLink is called for the messages that travel along active links only (SHUFFLE,
// FORWARD_JOIN): if their sender is not a neighbour, nor asked to become one, the
// sender holds a link this node does not, left by a lost or reordered message, and is
// told to drop it.
func (h *HyParView) checkLink(from peer.ID) {
	if !h.isActive(from) && !h.isPending(from) {
		h.send(from, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: true}}})
	}
}

func (h *HyParView) onNeighbor(from peer.ID, nb *Neighbor) {
	n := own(from, nb.GetSender())
	if n == nil {
		return
	}
	accept := true
	switch {
	case h.isActive(from):
		h.refresh(n, from)
	case nb.GetHighPriority() || len(h.active) < h.cfg.ActiveSize:
		h.addActive(n, from)
	default:
		accept = false
	}
	h.send(from, &Message{Body: &Message_NeighborReply{NeighborReply: &NeighborReply{Sender: h.selfNode(), Accepted: accept}}})
}

func (h *HyParView) onNeighborReply(from peer.ID, r *NeighborReply) {
	n := own(from, r.GetSender())
	if n == nil {
		return
	}
	req, asked := h.dropPending(from, true)
	late := h.dropExpired(from)
	switch {
	case h.isActive(from):
		h.refresh(n, from)
	case !r.GetAccepted() && asked && req.high:
		// A high-priority request must be accepted: count the peer as a failure.
		h.removePassive(from)
	case !r.GetAccepted():
		// It stays in the passive view, but is not asked again before the next shuffle.
		if asked {
			h.markTried(from)
		}
	case asked || late && len(h.active) < h.cfg.ActiveSize:
		h.addActive(n, from)
	default:
		// An acceptance nobody waits for (the request timed out and the view filled up,
		// or it answers a NEIGHBOR sent before this node evicted the peer): undo the
		// other end's link.
		h.sendDisconnect(from, true)
		h.addPassive(n, from, nil)
		h.markTried(from)
	}
	h.refill()
}

func (h *HyParView) onDisconnect(from peer.ID, d *Disconnect) {
	alive := d.GetAlive()
	if e, ok := h.removeActive(from); ok {
		h.emit(protocols.Close{Peer: from})
		if alive {
			h.addPassive(e.n, e.id, nil)
			h.markTried(from) // it just dropped this node: do not ask it straight back
		}
	}
	if !alive { // it left the network: forget it
		h.removePassive(from)
		h.dropPending(from, true)
		h.dropExpired(from)
	}
	h.refill()
}

func (h *HyParView) onShuffle(from peer.ID, s *Shuffle) {
	origin := s.GetOrigin()
	oid := origin.PeerID()
	if oid == "" || oid == h.selfID {
		return
	}
	if oid == from {
		h.refresh(origin, oid)
	}
	h.checkLink(from)
	ttl := min(s.GetTtl(), uint32(h.cfg.ShuffleTTL))
	nodes := s.GetNodes()
	if limit := h.shuffleLimit(); len(nodes) > limit {
		nodes = nodes[:limit]
	}
	if ttl > 1 && len(h.active) > 1 {
		if next := h.randomActive(from, oid); next != "" {
			// The message is this core's: pass it on as it is, one hop shorter.
			s.Ttl, s.Nodes = ttl-1, nodes
			h.send(next, &Message{Body: &Message_Shuffle{Shuffle: s}})
			return
		}
	}
	// The walk ends here: answer the origin with as many passive nodes as it sent plus
	// one, over a temporary link, then keep what came, evicting first what went.
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
	nodes := r.GetNodes()
	if limit := h.shuffleLimit(); len(nodes) > limit {
		nodes = nodes[:limit]
	}
	for _, n := range nodes {
		h.addPassive(n, n.PeerID(), h.shuffleSent)
	}
	h.shuffleNonce, h.shuffleSent = 0, nil
}

func (h *HyParView) shuffleLimit() int { return h.cfg.ShuffleActive + h.cfg.ShufflePassive + 1 }

func (h *HyParView) timer(t protocols.Timer) {
	switch t.Kind {
	case hvTimerShuffle:
		h.emit(protocols.SetTimer{Timer: t, After: h.cfg.ShuffleInterval})
		h.tried = h.tried[:0]
		if len(h.active) == 0 && len(h.passive) == 0 && len(h.pending) == 0 && len(h.bootstrap) > 0 {
			h.joinNext = 0 // isolated: join again
			h.join()
			return
		}
		h.refill()
		h.shuffle()
	case hvTimerNeighbor:
		if _, ok := h.dropPending(t.Peer, false); ok {
			// No answer: take it for dead, but accept a late acceptance if there is room.
			h.removePassive(t.Peer)
			h.expired = append(h.expired, t.Peer)
			if len(h.expired) > h.cfg.ActiveSize {
				h.expired = slices.Delete(h.expired, 0, 1)
			}
			h.refill()
		}
	}
}

// shuffle starts a SHUFFLE walk at a random neighbour, replacing any outstanding one.
func (h *HyParView) shuffle() {
	target := h.randomActive("", "")
	if target == "" {
		return
	}
	nodes := append(h.sample(h.active, h.cfg.ShuffleActive, ""), h.sample(h.passive, h.cfg.ShufflePassive, "")...)
	h.shuffleNonce = h.rng.Uint64() | 1 // never 0, which means none
	h.shuffleSent = nodeIDs(nodes)
	h.send(target, &Message{Body: &Message_Shuffle{Shuffle: &Shuffle{
		Origin: h.selfNode(), Nodes: nodes, Ttl: uint32(h.cfg.ShuffleTTL), Nonce: h.shuffleNonce,
	}}})
}

func (h *HyParView) peerDown(p peer.ID) {
	if p == "" || p == h.selfID {
		return
	}
	h.removeActive(p)
	h.removePassive(p)
	h.dropPending(p, true)
	h.dropExpired(p)
	if p == h.contact && len(h.active) == 0 {
		h.join() // the contact never answered: try the next bootstrap peer
	}
	h.refill()
}

func (h *HyParView) leave() {
	for _, e := range h.active {
		h.send(e.id, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: false}}})
		h.emit(protocols.Close{Peer: e.id})
		h.emit(protocols.Link{Peer: e.id, Up: false})
	}
	for _, r := range h.pending {
		h.send(r.id, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: false}}})
		h.emit(protocols.Close{Peer: r.id})
		h.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: hvTimerNeighbor, Peer: r.id}})
	}
	h.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: hvTimerShuffle}})
	h.emit(NeighboursChanged{Nodes: []*Node{}})
	h.active, h.passive, h.pending, h.expired, h.tried = nil, nil, nil, nil, nil
	h.shuffleSent = nil
	h.left = true
}

// refill asks random passive nodes to become neighbours while the active view,
// counting outstanding requests, has free slots.
func (h *HyParView) refill() {
	for len(h.active)+len(h.pending) < h.cfg.ActiveSize {
		// A high-priority request (no neighbour left) cannot be refused: then even
		// the nodes that refused or dropped this one lately are worth asking.
		high := len(h.active) == 0
		var cands []peer.ID
		for _, e := range h.passive {
			if !h.isPending(e.id) && (high || !slices.Contains(h.tried, e.id)) {
				cands = append(cands, e.id)
			}
		}
		if len(cands) == 0 {
			return
		}
		q := cands[h.rng.IntN(len(cands))]
		h.pending = append(h.pending, request{id: q, high: high})
		h.send(q, &Message{Body: &Message_Neighbor{Neighbor: &Neighbor{Sender: h.selfNode(), HighPriority: high}}})
		h.emit(protocols.SetTimer{Timer: protocols.Timer{Kind: hvTimerNeighbor, Peer: q}, After: h.cfg.NeighborTimeout})
	}
}

func (h *HyParView) pendingIndex(p peer.ID) int {
	return slices.IndexFunc(h.pending, func(r request) bool { return r.id == p })
}

func (h *HyParView) isPending(p peer.ID) bool { return h.pendingIndex(p) >= 0 }

// dropPending forgets an outstanding request to p, cancelling its timer if asked to,
// and returns it.
func (h *HyParView) dropPending(p peer.ID, cancel bool) (request, bool) {
	i := h.pendingIndex(p)
	if i < 0 {
		return request{}, false
	}
	r := h.pending[i]
	h.pending = slices.Delete(h.pending, i, i+1)
	if cancel {
		h.emit(protocols.CancelTimer{Timer: protocols.Timer{Kind: hvTimerNeighbor, Peer: p}})
	}
	return r, true
}

// markTried keeps p from being asked with a low-priority NEIGHBOR before the next
// shuffle. The list is bounded: the oldest entry goes first.
func (h *HyParView) markTried(p peer.ID) {
	if slices.Contains(h.tried, p) {
		return
	}
	if len(h.tried) >= h.cfg.PassiveSize+h.cfg.ActiveSize {
		h.tried = slices.Delete(h.tried, 0, 1)
	}
	h.tried = append(h.tried, p)
}

// dropExpired forgets a timed-out request to p and says whether there was one.
func (h *HyParView) dropExpired(p peer.ID) bool {
	i := slices.Index(h.expired, p)
	if i < 0 {
		return false
	}
	h.expired = slices.Delete(h.expired, i, i+1)
	return true
}

func viewIndex(view []entry, p peer.ID) int {
	return slices.IndexFunc(view, func(e entry) bool { return e.id == p })
}

func (h *HyParView) isActive(p peer.ID) bool { return viewIndex(h.active, p) >= 0 }

// sendDisconnect tells p it is no longer a neighbour of this node.
func (h *HyParView) sendDisconnect(p peer.ID, alive bool) {
	h.send(p, &Message{Body: &Message_Disconnect{Disconnect: &Disconnect{Alive: alive}}})
	h.emit(protocols.Close{Peer: p})
	h.dropExpired(p)
}

// addActive makes n (whose ID is id) a neighbour. A full view first evicts a random
// neighbour with DISCONNECT into the passive view.
func (h *HyParView) addActive(n *Node, id peer.ID) {
	if id == "" || id == h.selfID {
		return
	}
	if h.isActive(id) {
		h.refresh(n, id)
		return
	}
	h.removePassive(id)
	h.dropPending(id, true)
	h.dropExpired(id)
	if len(h.active) >= h.cfg.ActiveSize {
		victim := h.active[h.rng.IntN(len(h.active))]
		h.sendDisconnect(victim.id, true)
		h.removeActive(victim.id)
		h.addPassive(victim.n, victim.id, nil)
		h.markTried(victim.id) // do not ask it straight back
	}
	h.active = append(h.active, entry{id: id, n: cloneNode(n)})
	h.emit(protocols.Link{Peer: id, Up: true})
}

// removeActive drops p from the active view, if there, and returns its entry.
func (h *HyParView) removeActive(p peer.ID) (entry, bool) {
	i := viewIndex(h.active, p)
	if i < 0 {
		return entry{}, false
	}
	e := h.active[i]
	h.active = slices.Delete(h.active, i, i+1)
	h.emit(protocols.Link{Peer: p, Up: false})
	return e, true
}

func (h *HyParView) removePassive(p peer.ID) {
	if i := viewIndex(h.passive, p); i >= 0 {
		h.passive = slices.Delete(h.passive, i, i+1)
	}
}

// addPassive keeps n (whose ID is id) in the passive view unless it is this node or a
// neighbour; a known node gets the new descriptor unless that would lose a record. A
// full view makes room by evicting the first node of prefer it holds (the nodes just
// sent away in a shuffle), else a random one.
func (h *HyParView) addPassive(n *Node, id peer.ID, prefer []peer.ID) {
	if id == "" || id == h.selfID || h.isActive(id) {
		return
	}
	if i := viewIndex(h.passive, id); i >= 0 {
		if len(n.GetRecord()) > 0 || len(h.passive[i].n.GetRecord()) == 0 {
			h.passive[i].n = cloneNode(n)
		}
		return
	}
	if len(h.passive) >= h.cfg.PassiveSize {
		victim := -1
		for _, p := range prefer {
			if victim = viewIndex(h.passive, p); victim >= 0 {
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

// refresh gives neighbour id the descriptor n it sent of itself, unless that would
// lose a record.
func (h *HyParView) refresh(n *Node, id peer.ID) {
	if i := viewIndex(h.active, id); i >= 0 && (len(n.GetRecord()) > 0 || len(h.active[i].n.GetRecord()) == 0) {
		h.active[i].n = cloneNode(n)
	}
}

// randomActive picks a random neighbour other than not1 and not2, or "" if none.
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

// sample returns clones of up to k distinct random members of view other than skip.
func (h *HyParView) sample(view []entry, k int, skip peer.ID) []*Node {
	idx := make([]int, 0, len(view))
	for i, e := range view {
		if e.id != skip {
			idx = append(idx, i)
		}
	}
	k = min(k, len(idx))
	out := make([]*Node, k)
	for i := range k { // a partial Fisher-Yates shuffle
		j := i + h.rng.IntN(len(idx)-i)
		idx[i], idx[j] = idx[j], idx[i]
		out[i] = cloneNode(view[idx[i]].n)
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
