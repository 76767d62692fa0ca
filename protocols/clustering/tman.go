package clustering

//go:generate protoc --go_out=. --go_opt=paths=source_relative tman.proto

import (
	"bytes"
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// TMan is the topology management protocol of Jelasity and Babaoglu, "T-Man:
// Gossip-based overlay topology management", Engineering Self-Organising Systems (ESOA
// 2005), LNCS 3910, Springer 2006 (extended as Jelasity, Montresor and Babaoglu, "T-Man:
// Gossip-based fast overlay topology construction", Computer Networks 53(13), 2009).
//
// Each node keeps a view of at most ViewSize (the paper's c) node descriptors, ranked by
// the application's rank (lower is better). Once per cycle (Interval, the paper's Δ) it
// picks a peer at random among the Psi (ψ) best of its view and sends it a buffer: its
// view merged with its own descriptor and with fresh random peers, the neighbours of the
// membership below (protocols.Neighbours). The peer answers with a buffer of its own,
// built the same way before it merges, and both keep the ViewSize best descriptors of
// their view merged with what they received, each by its own rank. Descriptors of nodes
// close to a node travel towards it, so every view converges to the best-ranked nodes
// in O(log N) cycles. The overlay's neighbours are the Neighbours best of the view
// (all of it by default): Link up and down follow them, and ViewChanged reports them,
// best first, whenever they or their descriptors change.
//
// Every message carries the sender's own descriptor (peer ID, signed peer record,
// metadata), so a peer known by ID alone (a membership neighbour) is learnt in full
// once it speaks; the runtime checks the records and files them in the peerstore.
//
// Deviations (see docs/clustering.md):
//   - The paper's sender sends the m entries of its buffer best ranked from the
//     receiver's point of view. The rank here is opaque and seen only from the local
//     node, so the sender cannot compute that. It sends instead the ⌈m/2⌉ entries best
//     by its own rank (in a metric space the receiver, chosen among the sender's best,
//     is close to the sender, so these are close to the receiver too), then entries
//     drawn at random from the rest of the buffer up to m (MessageSize), which keeps
//     exploration going. The sender's own descriptor travels beside them, always.
//   - Descriptors age: each carries how long ago someone last heard from the node
//     itself, and a descriptor older than MaxAge leaves the view. The paper's T-Man
//     keeps a crashed node's descriptor for as long as other views pass it on; ageing
//     (as in Newscast) purges it. A node the transport reports unreachable leaves the
//     view at once and is remembered as down (at most Suspects nodes, for MaxAge): its
//     descriptors are refused until one younger than the failure comes. A node that
//     leaves says goodbye (LEAVE) to its neighbours, who treat it the same way.
//   - Every Probe-th cycle (every other one by default) the exchange goes to the
//     view's entry heard of longest ago instead of one of the Psi best. A crashed node
//     is found at once (the send fails) rather than after MaxAge, a live one is
//     refreshed, and the exchanges reach beyond the few best; in the simulator this
//     also speeds convergence (see docs/results/clustering.md). Probe -1 restores the
//     paper's selection.
//   - The membership's neighbours also compete for the view at every change, not only
//     at initialisation as in the paper, so a view emptied by failures refills at once.
//   - Ranks are computed afresh at every merge and every cycle (a rank may change).
//     Ties are broken by peer ID, so the same seed gives the same views.
//   - A buffer received with more than 2*MessageSize entries is read up to that bound;
//     descriptors with an unparsable ID or an oversized record or metadata are skipped.
//   - Exchanges are asynchronous: a REQUEST is answered by a REPLY without the active
//     side waiting for it; a lost message costs one exchange, nothing else.
type TMan struct {
	cfg      TManConfig
	rank     Rank
	rng      *rand.Rand
	self     peer.ID
	selfRec  []byte
	selfMeta []byte

	view   []tmanEntry // at most ViewSize, best first as of the last ranking
	random []peer.ID   // the membership's neighbours, at most Random
	neigh  []Node      // the neighbours last reported, best first
	// down holds the nodes found unreachable or gone (at most Suspects, oldest
	// forgotten first), with when: their descriptors are taken again only if heard of
	// since.
	down     map[peer.ID]time.Time
	downFIFO []peer.ID

	started, left bool
	stats         TManStats
	out           []protocols.Output
}

// tmanEntry is a descriptor in the view, with the time someone last heard from the
// node itself.
type tmanEntry struct {
	node Node
	ts   time.Time
}

// TManConfig holds T-Man's parameters; a zero field means its default.
type TManConfig struct {
	// ViewSize is c, the number of descriptors a view holds; 0 means 20.
	ViewSize int
	// MessageSize is m, the number of descriptors a buffer sent holds; 0 means
	// ViewSize.
	MessageSize int
	// Psi is ψ: each cycle's peer is drawn among the Psi best of the view; 0 means 2.
	Psi int
	// Neighbours is how many of the view's best are the overlay's neighbours; 0 means
	// ViewSize (the whole view).
	Neighbours int
	// Random bounds the membership neighbours kept as random peers; 0 means 32.
	Random int
	// Interval is the cycle length Δ; 0 means 5 s. The first cycle comes after a random
	// part of it, so that nodes do not gossip in lockstep.
	Interval time.Duration
	// MaxAge is how long a descriptor stays without news of its node; 0 means 40
	// cycles (40*Interval).
	MaxAge time.Duration
	// Suspects bounds the nodes remembered as unreachable or gone, whose older
	// descriptors are refused; 0 means 4*ViewSize.
	Suspects int
	// Probe: every Probe-th cycle the exchange goes to the view's entry heard of
	// longest ago instead of one of the Psi best, which finds crashed nodes (the send
	// fails) and refreshes live ones; 0 means 2 (every other cycle), a negative value
	// never (the paper's peer selection only).
	Probe int
}

// WithDefaults returns the config with every zero field set to its default.
func (c TManConfig) WithDefaults() TManConfig {
	if c.ViewSize == 0 {
		c.ViewSize = 20
	}
	if c.MessageSize == 0 {
		c.MessageSize = c.ViewSize
	}
	if c.Psi == 0 {
		c.Psi = 2
	}
	if c.Neighbours == 0 {
		c.Neighbours = c.ViewSize
	}
	if c.Random == 0 {
		c.Random = 32
	}
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.MaxAge == 0 {
		c.MaxAge = 40 * c.Interval
	}
	if c.Suspects == 0 {
		c.Suspects = 4 * c.ViewSize
	}
	if c.Probe == 0 {
		c.Probe = 2
	}
	return c
}

// Validate says which field is wrong, if any.
func (c TManConfig) Validate() error {
	bad := func(f, r string) error { return &protocols.ConfigError{Field: "TManConfig." + f, Reason: r} }
	switch {
	case c.ViewSize < 0 || c.ViewSize > 1000:
		return bad("ViewSize", "must be in [0, 1000]")
	case c.MessageSize < 0 || c.MessageSize > 1000:
		return bad("MessageSize", "must be in [0, 1000]")
	case c.Psi < 0:
		return bad("Psi", "must not be negative")
	case c.Neighbours < 0:
		return bad("Neighbours", "must not be negative")
	case c.Random < 0 || c.Random > 1000:
		return bad("Random", "must be in [0, 1000]")
	case c.Interval < 0:
		return bad("Interval", "must not be negative")
	case c.MaxAge < 0:
		return bad("MaxAge", "must not be negative")
	case c.Suspects < 0 || c.Suspects > 100000:
		return bad("Suspects", "must be in [0, 100000]")
	}
	d := c.WithDefaults()
	switch {
	case d.Neighbours > d.ViewSize:
		return bad("Neighbours", "must not exceed ViewSize")
	case d.Psi > d.ViewSize:
		return bad("Psi", "must not exceed ViewSize")
	case d.MaxAge <= d.Interval:
		return bad("MaxAge", "must be longer than Interval")
	}
	return nil
}

// TManStats are a T-Man core's counters.
type TManStats struct {
	Cycles   uint64 // cycles run
	Requests uint64 // exchanges started (REQUEST sent)
	Replies  uint64 // exchanges answered (REPLY sent)
	Received uint64 // buffers received (REQUEST or REPLY)
	Ignored  uint64 // messages ignored (malformed, from itself) and descriptors skipped
	Expired  uint64 // descriptors dropped for age
}

const (
	tmanTimerCycle uint8 = 71

	tmanMaxRecord = 16 << 10
	tmanMaxMeta   = 4096
)

// NewTMan returns a T-Man core for node self, ranking nodes with rank.
func NewTMan(self peer.ID, cfg TManConfig, rank Rank, rng *rand.Rand) (*TMan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rank == nil {
		return nil, &protocols.ConfigError{Field: "rank", Reason: "is nil"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return &TMan{cfg: cfg.WithDefaults(), rank: rank, rng: rng, self: self, down: map[peer.ID]time.Time{}}, nil
}

// View returns the view, best ranked first (as of the last merge or cycle).
func (t *TMan) View() []Node {
	ns := make([]Node, len(t.view))
	for i, e := range t.view {
		ns[i] = e.node
	}
	return ns
}

// Neighbours returns the overlay's neighbours: the Neighbours best of the view.
func (t *TMan) Neighbours() []peer.ID {
	ids := make([]peer.ID, len(t.neigh))
	for i, n := range t.neigh {
		ids[i] = n.ID
	}
	return ids
}

// Stats returns the core's counters.
func (t *TMan) Stats() TManStats {
	return t.stats
}

// Handle implements protocols.Core.
func (t *TMan) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if t.left {
		return nil
	}
	t.out = t.out[:0]
	switch v := in.(type) {
	case protocols.Start:
		if !t.started {
			t.started = true
			t.setRandom(now, append(slices.Clone(t.random), v.Bootstrap...))
			after := time.Duration(1 + t.rng.Int64N(int64(t.cfg.Interval)))
			t.out = append(t.out, protocols.SetTimer{Timer: protocols.Timer{Kind: tmanTimerCycle}, After: after})
		}
	case protocols.Neighbours:
		t.setRandom(now, v.Peers)
	case protocols.Receive:
		if m, ok := v.Msg.(*TManMessage); ok && m != nil && v.From != t.self && v.From != "" {
			t.receive(now, v.From, m)
		} else {
			t.stats.Ignored++
		}
	case protocols.TimerFired:
		if v.Timer.Kind == tmanTimerCycle {
			t.cycle(now)
			t.out = append(t.out, protocols.SetTimer{Timer: protocols.Timer{Kind: tmanTimerCycle}, After: t.cfg.Interval})
		}
	case protocols.PeerDown:
		t.forget(now, v.Peer)
		t.merge(now, nil)
	case protocols.SelfUpdated:
		t.selfRec, t.selfMeta = v.Record, v.Meta
	case protocols.Leave:
		t.leave()
		return t.out
	}
	t.report()
	return t.out
}

// setRandom takes the membership's neighbours as the random peers (at most Random)
// and lets them compete for the view.
func (t *TMan) setRandom(now time.Time, peers []peer.ID) {
	t.random = t.random[:0]
	for _, p := range peers {
		if len(t.random) >= t.cfg.Random {
			break
		}
		if p != "" && p != t.self && !slices.Contains(t.random, p) {
			t.random = append(t.random, p)
		}
	}
	t.merge(now, t.randomEntries(now))
}

// randomEntries returns the random peers as fresh entries, with the descriptor the
// view holds for them if any (else by ID alone); not those found down lately (the
// membership may take a while to forget them).
func (t *TMan) randomEntries(now time.Time) []tmanEntry {
	es := make([]tmanEntry, 0, len(t.random))
	for _, p := range t.random {
		if t.isDown(now, p, time.Time{}) {
			continue
		}
		n := Node{ID: p}
		if i := t.indexOf(p); i >= 0 {
			n = t.view[i].node
		}
		es = append(es, tmanEntry{node: n, ts: now})
	}
	return es
}

func (t *TMan) indexOf(p peer.ID) int {
	return slices.IndexFunc(t.view, func(e tmanEntry) bool { return e.node.ID == p })
}

// isDown reports whether p was found down within MaxAge and not heard of since (ts).
func (t *TMan) isDown(now time.Time, p peer.ID, ts time.Time) bool {
	at, ok := t.down[p]
	return ok && now.Sub(at) <= t.cfg.MaxAge && !ts.After(at)
}

// forget removes p from the view and the random peers, and remembers it as down.
func (t *TMan) forget(now time.Time, p peer.ID) {
	if _, ok := t.down[p]; !ok {
		if len(t.downFIFO) >= t.cfg.Suspects {
			delete(t.down, t.downFIFO[0])
			t.downFIFO = slices.Delete(t.downFIFO, 0, 1)
		}
		t.downFIFO = append(t.downFIFO, p)
	}
	t.down[p] = now
	if i := t.indexOf(p); i >= 0 {
		t.view = slices.Delete(t.view, i, i+1)
	}
	if i := slices.Index(t.random, p); i >= 0 {
		t.random = slices.Delete(t.random, i, i+1)
	}
}

// score is the rank of n, NaN taken as +Inf.
func (t *TMan) score(n Node) float64 {
	r := t.rank(n)
	if math.IsNaN(r) {
		return math.Inf(1)
	}
	return r
}

// merge is the paper's selectView(merge(view, incoming)): the union, one descriptor
// per node (the freshest, completed by the other's record or metadata when it lacks
// them), without this node or expired descriptors, ranked afresh; the ViewSize best
// stay, best first.
func (t *TMan) merge(now time.Time, incoming []tmanEntry) {
	all := make([]tmanEntry, 0, len(t.view)+len(incoming))
	pos := make(map[peer.ID]int, len(t.view)+len(incoming))
	for _, e := range slices.Concat(t.view, incoming) {
		if e.node.ID == "" || e.node.ID == t.self {
			continue
		}
		i, ok := pos[e.node.ID]
		if !ok {
			pos[e.node.ID] = len(all)
			all = append(all, e)
			continue
		}
		all[i] = tmanFreshest(all[i], e)
	}
	type ranked struct {
		e tmanEntry
		r float64
	}
	rs := make([]ranked, 0, len(all))
	for _, e := range all {
		if now.Sub(e.ts) > t.cfg.MaxAge {
			t.stats.Expired++
			continue
		}
		rs = append(rs, ranked{e, t.score(e.node)})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(a.r, b.r); c != 0 {
			return c
		}
		return cmp.Compare(a.e.node.ID, b.e.node.ID)
	})
	t.view = t.view[:0]
	for _, r := range rs[:min(len(rs), t.cfg.ViewSize)] {
		t.view = append(t.view, r.e)
	}
}

// tmanFreshest returns the fresher of two descriptors of one node, completed with the
// other's record and metadata where it has none.
func tmanFreshest(a, b tmanEntry) tmanEntry {
	if b.ts.After(a.ts) {
		a, b = b, a
	}
	if len(a.node.Record) == 0 {
		a.node.Record = b.node.Record
	}
	if len(a.node.Meta) == 0 {
		a.node.Meta = b.node.Meta
	}
	return a
}

// cycle is the paper's active thread: rank afresh, pick a peer among the Psi best (or
// the oldest entry, every Probe-th cycle), send it a buffer.
func (t *TMan) cycle(now time.Time) {
	t.stats.Cycles++
	t.merge(now, t.randomEntries(now))
	var p peer.ID
	switch {
	case len(t.view) > 0 && t.cfg.Probe > 0 && t.stats.Cycles%uint64(t.cfg.Probe) == 0:
		oldest := 0
		for i, e := range t.view {
			if e.ts.Before(t.view[oldest].ts) {
				oldest = i
			}
		}
		p = t.view[oldest].node.ID
	case len(t.view) > 0:
		p = t.view[t.rng.IntN(min(t.cfg.Psi, len(t.view)))].node.ID
	case len(t.random) > 0:
		p = t.random[t.rng.IntN(len(t.random))]
	default:
		return
	}
	t.stats.Requests++
	t.send(p, TManMessage_REQUEST, t.buffer(now, p))
}

// buffer returns what this node sends to p: the ⌈MessageSize/2⌉ descriptors of its
// view and random peers best by its own rank, then descriptors drawn at random from
// the rest, up to MessageSize (see the deviations); never p's own.
func (t *TMan) buffer(now time.Time, p peer.ID) []*TManDescriptor {
	pool := make([]tmanEntry, 0, len(t.view)+len(t.random))
	for _, e := range t.view {
		if e.node.ID != p {
			pool = append(pool, e)
		}
	}
	for _, e := range t.randomEntries(now) {
		if e.node.ID != p && t.indexOf(e.node.ID) < 0 {
			pool = append(pool, e)
		}
	}
	// The view is ranked already; random peers outside it rank after it, so the best
	// half comes from the view first.
	m := t.cfg.MessageSize
	best := min(len(pool), (m+1)/2)
	out := make([]*TManDescriptor, 0, min(m, len(pool)))
	for _, e := range pool[:best] {
		out = append(out, t.descriptor(now, e))
	}
	rest := pool[best:]
	for len(out) < m && len(rest) > 0 {
		i := t.rng.IntN(len(rest))
		out = append(out, t.descriptor(now, rest[i]))
		rest[i] = rest[len(rest)-1]
		rest = rest[:len(rest)-1]
	}
	return out
}

func (t *TMan) descriptor(now time.Time, e tmanEntry) *TManDescriptor {
	age := now.Sub(e.ts)
	if age < 0 {
		age = 0
	}
	return &TManDescriptor{Id: []byte(e.node.ID), Record: e.node.Record, Meta: e.node.Meta, AgeMs: uint64(age / time.Millisecond)}
}

func (t *TMan) send(to peer.ID, kind TManMessage_Kind, entries []*TManDescriptor) {
	t.out = append(t.out, protocols.Send{To: to, Msg: &TManMessage{
		Kind:    kind,
		Sender:  &TManDescriptor{Id: []byte(t.self), Record: t.selfRec, Meta: t.selfMeta},
		Entries: entries,
	}})
}

// receive handles a message from a peer: the paper's passive thread for a REQUEST
// (answer with a buffer built before merging, then merge), a merge for a REPLY, and
// forgetting the sender for a LEAVE.
func (t *TMan) receive(now time.Time, from peer.ID, m *TManMessage) {
	sender := Node{ID: from}
	if s := m.GetSender(); s != nil && bytes.Equal(s.GetId(), []byte(from)) && tmanSane(s) {
		sender.Record, sender.Meta = s.GetRecord(), s.GetMeta()
	}
	switch m.GetKind() {
	case TManMessage_LEAVE:
		t.forget(now, from)
		t.merge(now, nil)
		return
	case TManMessage_REQUEST:
		t.stats.Replies++
		t.send(from, TManMessage_REPLY, t.buffer(now, from))
	case TManMessage_REPLY:
	default:
		t.stats.Ignored++
		return
	}
	t.stats.Received++
	t.heard(from)
	in := []tmanEntry{{node: sender, ts: now}}
	es := m.GetEntries()
	if len(es) > 2*t.cfg.MessageSize {
		t.stats.Ignored += uint64(len(es) - 2*t.cfg.MessageSize)
		es = es[:2*t.cfg.MessageSize]
	}
	for _, d := range es {
		id, err := peer.IDFromBytes(d.GetId())
		if err != nil || !tmanSane(d) {
			t.stats.Ignored++
			continue
		}
		age := time.Duration(min(d.GetAgeMs(), uint64(t.cfg.MaxAge/time.Millisecond)+1)) * time.Millisecond
		ts := now.Add(-age)
		if t.isDown(now, id, ts) {
			continue
		}
		in = append(in, tmanEntry{node: Node{ID: id, Record: d.GetRecord(), Meta: d.GetMeta()}, ts: ts})
	}
	t.merge(now, in)
}

// heard forgets that p was down: it spoke.
func (t *TMan) heard(p peer.ID) {
	if _, ok := t.down[p]; ok {
		delete(t.down, p)
		t.downFIFO = slices.DeleteFunc(t.downFIFO, func(q peer.ID) bool { return q == p })
	}
}

// tmanSane reports whether a descriptor's record and metadata are within bounds.
func tmanSane(d *TManDescriptor) bool {
	return len(d.GetRecord()) <= tmanMaxRecord && len(d.GetMeta()) <= tmanMaxMeta
}

// report emits Link up/down and ViewChanged when the neighbours (the Neighbours best
// of the view) or their descriptors changed.
func (t *TMan) report() {
	k := min(t.cfg.Neighbours, len(t.view))
	now := make([]Node, k)
	for i, e := range t.view[:k] {
		now[i] = e.node
	}
	changed := len(now) != len(t.neigh)
	for _, old := range t.neigh {
		if !slices.ContainsFunc(now, func(n Node) bool { return n.ID == old.ID }) {
			t.out = append(t.out, protocols.Link{Peer: old.ID, Up: false})
			changed = true
		}
	}
	for i, n := range now {
		if !slices.ContainsFunc(t.neigh, func(o Node) bool { return o.ID == n.ID }) {
			t.out = append(t.out, protocols.Link{Peer: n.ID, Up: true})
			changed = true
		}
		if !changed && (t.neigh[i].ID != n.ID || !bytes.Equal(t.neigh[i].Record, n.Record) || !bytes.Equal(t.neigh[i].Meta, n.Meta)) {
			changed = true
		}
	}
	if !changed {
		return
	}
	t.neigh = now
	t.out = append(t.out, ViewChanged{Nodes: slices.Clone(now)})
}

// leave says goodbye to the neighbours and stops.
func (t *TMan) leave() {
	for _, n := range t.neigh {
		t.send(n.ID, TManMessage_LEAVE, nil)
		t.out = append(t.out, protocols.Link{Peer: n.ID, Up: false})
	}
	t.out = append(t.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: tmanTimerCycle}})
	t.neigh = nil
	t.left = true
}

// Descriptors implements protocols.DescriptorCarrier: the sender and every entry.
func (m *TManMessage) Descriptors() []protocols.Descriptor {
	ds := make([]protocols.Descriptor, 0, 1+len(m.GetEntries()))
	if s := m.GetSender(); s != nil {
		ds = append(ds, s)
	}
	for _, d := range m.GetEntries() {
		if d != nil {
			ds = append(ds, d)
		}
	}
	return ds
}

// TManKind names a T-Man message's kind for counters: "TMAN_REQUEST", "TMAN_REPLY" or
// "TMAN_LEAVE".
func TManKind(m *TManMessage) string { return "TMAN_" + m.GetKind().String() }
