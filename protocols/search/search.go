// Package search holds the search cores and their wire messages:
//
//   - KWalker, k random walkers with checking (Lv, Cao, Cohen, Li, Shenker, "Search and
//     replication in unstructured peer-to-peer networks", ICS 2002): extreme profile.
//   - ABloom, queries routed by attenuated Bloom filters (Rhea, Kubiatowicz,
//     "Probabilistic location and routing", INFOCOM 2002): stable profile.
//   - Flood, a TTL-limited flood with duplicate suppression (Gnutella's search), the
//     baseline the other two are measured against.
//
// Every core runs over the neighbours of a membership: the driver passes them in as
// protocols.Neighbours at start and at every change. The application hands a core the
// data it offers with protocols.Call{Req: Publish{...}} (and withdraws it with
// Unpublish), and asks for a key with protocols.Call{Req: Search{ID: n, Key: k}} (IDs
// chosen by the driver, unique among its searches in progress). A key held here is
// answered at once (Found with Hops 0). Otherwise the core sends queries that carry
// the origin's descriptor (with its signed record, see protocols.DescriptorCarrier); a
// node holding the key answers the origin directly (Hit), and the origin emits Found
// for the first answer. When the search gives up, when every walker or query has used
// its TTL, or after the search's timeout, the origin emits NotFound. Cancel forgets a
// search the application no longer waits for.
//
// Published data is bounded in count (Limits.MaxItems), in bytes per item
// (Limits.MaxData) and in total bytes (Limits.MaxBytes); a Publish over a bound is
// refused (Stats.Rejected) and leaves the node's data as it was.
package search

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// Publish is the Call that offers Data under Key from this node (replacing what was
// published under Key before).
type Publish struct {
	Key  string
	Data []byte
}

// Unpublish is the Call that withdraws Key from this node.
type Unpublish struct {
	Key string
}

// Search is the Call that looks for Key. ID is the driver's name for the search,
// unique among its searches in progress; the answer carries it. Timeout bounds the
// search (0: the config's Limits.Timeout).
type Search struct {
	ID      uint64
	Key     string
	Timeout time.Duration
}

// Cancel is the Call that forgets a search (its caller stopped waiting).
type Cancel struct {
	ID uint64
}

// Found answers a Search: Data as published under Key by the node From (this node when
// Hops is 0), Hops the query's hops from the origin to it. Node is From's descriptor as
// it sent it (its record checked by the runtime).
type Found struct {
	protocols.Event
	ID   uint64
	Key  string
	Data []byte
	From peer.ID
	Node *Peer
	Hops int
}

// NotFound answers a Search the core gave up on; Reason says why.
type NotFound struct {
	protocols.Event
	ID     uint64
	Key    string
	Reason string
}

// Limits are the bounds every search core shares; a zero field means its default.
type Limits struct {
	// MaxItems bounds the keys published at this node; 0 means 1,024.
	MaxItems int
	// MaxData bounds the bytes of one published item; 0 means 64 KiB.
	MaxData int
	// MaxBytes bounds the bytes of all items published at this node; 0 means 16 MiB.
	MaxBytes int
	// MaxPending bounds the searches in progress at this node; 0 means 1,024.
	MaxPending int
	// Timeout is how long a search runs when the Search call gives no timeout; 0 means
	// 10 s.
	Timeout time.Duration
}

// MaxKey bounds the length of a key, in bytes.
const MaxKey = 1024

// maxTTL bounds a TTL (the work one search can cause).
const maxTTL = 10000

// maxWalkers bounds the walkers of one search.
const maxWalkers = 256

func (l Limits) withDefaults() Limits {
	if l.MaxItems == 0 {
		l.MaxItems = 1024
	}
	if l.MaxData == 0 {
		l.MaxData = 64 << 10
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = 16 << 20
	}
	if l.MaxPending == 0 {
		l.MaxPending = 1024
	}
	if l.Timeout == 0 {
		l.Timeout = 10 * time.Second
	}
	return l
}

func (l Limits) validate(prefix string) error {
	switch {
	case l.MaxItems < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxItems", Reason: "must not be negative"}
	case l.MaxData < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxData", Reason: "must not be negative"}
	case l.MaxBytes < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxBytes", Reason: "must not be negative"}
	case l.MaxPending < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxPending", Reason: "must not be negative"}
	case l.Timeout < 0:
		return &protocols.ConfigError{Field: prefix + ".Timeout", Reason: "must not be negative"}
	}
	if d := l.withDefaults(); d.MaxData > d.MaxBytes {
		return &protocols.ConfigError{Field: prefix + ".MaxData", Reason: "must not exceed MaxBytes"}
	}
	return nil
}

// Stats are a core's counters since it started.
type Stats struct {
	Searches  uint64 // Search calls taken
	Found     uint64 // Found events (local answers included)
	Local     uint64 // searches answered from this node's own data
	NotFound  uint64 // NotFound events
	Hits      uint64 // Hit messages this node sent (it held a key searched for)
	LateHits  uint64 // Hits received for a search already answered or forgotten
	Forwarded uint64 // queries this node sent (walker steps, flood copies)
	Exhausted uint64 // queries that ran out of TTL here
	Checks    uint64 // KWalker: checks sent to an origin
	Stopped   uint64 // KWalker: walkers stopped by their origin's answer
	Unchecked uint64 // KWalker: walkers that went on after a check got no answer in time
	Dups      uint64 // Flood: copies of a query seen before
	Filters   uint64 // ABloom: filters sent
	Matched   uint64 // ABloom: queries routed by a filter match
	Fallback  uint64 // ABloom: queries routed at random (no filter matched)
	Rejected  uint64 // Publish calls refused (bounds, empty or long key)
	Rerouted  uint64 // queries sent again on another route after their send failed
	Retried   uint64 // queries added to a search: ABloom's retries, KWalker's walkers sent in place of lost ones
	Resent    uint64 // hits and exhausted reports sent again after their send failed
}

// Kind names a message's kind for counters, e.g. "QUERY" or "FILTER".
func (m *Message) Kind() string {
	switch m.GetBody().(type) {
	case *Message_Query:
		return "QUERY"
	case *Message_Hit:
		return "HIT"
	case *Message_Check:
		return "CHECK"
	case *Message_CheckReply:
		return "CHECK_REPLY"
	case *Message_Exhausted:
		return "EXHAUSTED"
	case *Message_Filter:
		return "FILTER"
	}
	return "UNKNOWN"
}

// SearchID returns the id of the search a message belongs to (false for filters).
func (m *Message) SearchID() (uint64, bool) {
	switch b := m.GetBody().(type) {
	case *Message_Query:
		return b.Query.GetId(), true
	case *Message_Hit:
		return b.Hit.GetId(), true
	case *Message_Check:
		return b.Check.GetId(), true
	case *Message_CheckReply:
		return b.CheckReply.GetId(), true
	case *Message_Exhausted:
		return b.Exhausted.GetId(), true
	}
	return 0, false
}

// Descriptors lists the node descriptors the message carries (see
// protocols.DescriptorCarrier): a query's origin, a hit's answering node.
func (m *Message) Descriptors() []protocols.Descriptor {
	switch b := m.GetBody().(type) {
	case *Message_Query:
		if o := b.Query.GetOrigin(); o != nil {
			return []protocols.Descriptor{o}
		}
	case *Message_Hit:
		if n := b.Hit.GetNode(); n != nil {
			return []protocols.Descriptor{n}
		}
	}
	return nil
}

var _ protocols.DescriptorCarrier = (*Message)(nil)

// PeerID returns the peer's ID, or "" if its bytes do not parse.
func (p *Peer) PeerID() peer.ID {
	id, err := peer.IDFromBytes(p.GetId())
	if err != nil {
		return ""
	}
	return id
}

const (
	timerSearch uint8 = iota + 60 // a search's timeout (Key: search ID)
	timerCheck                    // KWalker: a check got no answer (Key: origin + id)
	timerFilter                   // ABloom: send the filters
	timerRetry                    // ABloom: send one more query; KWalker: replace lost walkers (Key: search ID)
)

// pending is a search this node started.
type pending struct {
	id      uint64
	key     string
	walkers []bool      // walkers accounted for (exhausted, or replaced); nil for a flood
	left    int         // walkers not accounted for
	heard   []time.Time // KWalker: when each walker was last heard of (start, check)
	// enough, when not 0, ends the search once that many walkers reported running out
	// of TTL, whatever is still out (ABloom: its retries only stand in for lost
	// queries, and need not delay the verdict).
	enough  int
	reports int
}

// base is what every search core shares: the neighbours, the published data, the
// searches this node started and its counters.
type base struct {
	lim  Limits
	rng  randSource
	self peer.ID
	rec  []byte

	neigh []peer.ID         // the membership's neighbours, in its order
	down  map[peer.ID]bool  // a send failed since the neighbours were last given
	items map[string][]byte // published data
	bytes int               // bytes of items

	pend  map[uint64]*pending
	order []uint64 // pend's IDs in arrival order

	// recent holds the queries and reports this node sent last (the last maxResend/2 to maxResend),
	// oldest first: a PeerDown for a destination means what was on its way there may
	// have been lost (the runtime drops what a failed stream held), so resend sends it
	// again: a query on another route (reroute, the core's), a report once more.
	recent  []sentRecord
	reroute func(q *Query)
	// retryTimers: searches have a retry timer (retryTimer) besides their timeout.
	retryTimers bool

	stats Stats
	now   time.Time
	left  bool
	out   []protocols.Output
}

// randSource is the part of *rand.Rand the cores use.
type randSource interface {
	IntN(n int) int
	Perm(n int) []int
}

func newBase(self peer.ID, lim Limits, rng randSource) base {
	return base{lim: lim.withDefaults(), rng: rng, self: self, down: map[peer.ID]bool{},
		items: map[string][]byte{}, pend: map[uint64]*pending{}}
}

func validSelf(self peer.ID, rng *rand.Rand) error {
	if err := self.Validate(); err != nil {
		return &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return nil
}

// Stats returns the core's counters.
func (b *base) Stats() Stats { return b.stats }

// Published returns the keys published at this node, sorted.
func (b *base) Published() []string {
	ks := make([]string, 0, len(b.items))
	for k := range b.items {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Pending returns the number of searches in progress.
func (b *base) Pending() int { return len(b.pend) }

func (b *base) send(to peer.ID, m *Message) {
	b.out = append(b.out, protocols.Send{To: to, Msg: m})
	switch m.GetBody().(type) {
	case *Message_Query:
		if b.reroute != nil { // the flood has none: its copies need no resend
			b.record(sentRecord{to: to, msg: m})
		}
	case *Message_Hit, *Message_Exhausted:
		b.record(sentRecord{to: to, msg: m})
	}
}

// maxResend bounds the messages a core remembers for resend: the last maxResend/2 to
// maxResend of them (the older half is dropped at once, so a send costs O(1)).
const maxResend = 128

// sentRecord is a message sent to a peer, kept in case the send fails.
type sentRecord struct {
	to    peer.ID
	msg   *Message
	again bool // already sent a second time
}

func (b *base) record(r sentRecord) {
	if len(b.recent) >= maxResend {
		n := copy(b.recent, b.recent[maxResend/2:])
		clear(b.recent[n:])
		b.recent = b.recent[:n]
	}
	b.recent = append(b.recent, r)
}

// resend sends again what was sent to p, which the driver reports unreachable: a
// query goes on from this node by another route (p is down, so the core's routing
// avoids it), as if it had just arrived; a hit or an exhausted report goes to p once
// more (its stream may have failed while p itself is fine: the driver dials again).
func (b *base) resend(p peer.ID) {
	var lost []sentRecord
	keep := b.recent[:0]
	for _, r := range b.recent {
		if r.to == p {
			lost = append(lost, r)
		} else {
			keep = append(keep, r)
		}
	}
	clear(b.recent[len(keep):])
	b.recent = keep
	for _, r := range lost {
		switch body := r.msg.GetBody().(type) {
		case *Message_Query:
			if b.reroute == nil {
				continue
			}
			q := proto.Clone(body.Query).(*Query)
			q.Ttl++
			q.Hops--
			if n := len(q.Path); n > 0 {
				q.Path = q.Path[:n-1]
			}
			b.stats.Rerouted++
			b.reroute(q)
		default:
			if r.again {
				continue
			}
			b.stats.Resent++
			b.out = append(b.out, protocols.Send{To: p, Msg: r.msg})
			b.record(sentRecord{to: p, msg: r.msg, again: true})
		}
	}
}
func (b *base) emit(ev protocols.Output) { b.out = append(b.out, ev) }

func (b *base) selfPeer() *Peer { return &Peer{Id: []byte(b.self), Record: b.rec} }

// usable returns the neighbours no send has failed to since they were last given.
func (b *base) usable() []peer.ID {
	if len(b.down) == 0 {
		return b.neigh
	}
	u := make([]peer.ID, 0, len(b.neigh))
	for _, p := range b.neigh {
		if !b.down[p] {
			u = append(u, p)
		}
	}
	return u
}

// setNeighbours applies the membership's neighbours; it returns those that are new.
func (b *base) setNeighbours(peers []peer.ID) (added, removed []peer.ID) {
	var next []peer.ID
	for _, p := range peers {
		if p != b.self && p != "" && !slices.Contains(next, p) {
			next = append(next, p)
		}
	}
	for _, p := range next {
		if !slices.Contains(b.neigh, p) {
			added = append(added, p)
		}
	}
	for _, p := range b.neigh {
		if !slices.Contains(next, p) {
			removed = append(removed, p)
		}
	}
	b.neigh = next
	clear(b.down)
	return added, removed
}

// common handles the inputs every core treats alike (a search's timeout among them); it
// returns false for the others.
func (b *base) common(in protocols.Input) bool {
	switch v := in.(type) {
	case protocols.SelfUpdated:
		b.rec = slices.Clone(v.Record)
		return true
	case protocols.PeerDown:
		if slices.Contains(b.neigh, v.Peer) {
			b.down[v.Peer] = true
		}
		b.resend(v.Peer)
		return false // the core may want to know too
	case protocols.TimerFired:
		if v.Timer.Kind == timerSearch {
			b.searchTimeout(v.Timer.Key)
			return true
		}
	}
	return false
}

// call handles the application's publish, unpublish and cancel calls, and the part of
// a search every core shares: a local answer, the bounds, the timeout. It returns the
// search to start in the network, or nil.
func (b *base) call(req any) *pending {
	switch r := req.(type) {
	case Publish:
		b.publish(r.Key, r.Data)
	case Unpublish:
		if d, ok := b.items[r.Key]; ok {
			b.bytes -= len(d)
			delete(b.items, r.Key)
		}
	case Cancel:
		b.forget(r.ID)
	case Search:
		b.stats.Searches++
		if d, ok := b.items[r.Key]; ok {
			b.stats.Local++
			b.stats.Found++
			b.emit(Found{ID: r.ID, Key: r.Key, Data: slices.Clone(d), From: b.self, Node: b.selfPeer()})
			return nil
		}
		if _, dup := b.pend[r.ID]; dup {
			return nil
		}
		if r.Key == "" || len(r.Key) > MaxKey {
			b.notFound(r.ID, r.Key, "the key must be 1 to "+strconv.Itoa(MaxKey)+" bytes")
			return nil
		}
		if len(b.pend) >= b.lim.MaxPending {
			b.notFound(r.ID, r.Key, "too many searches in progress at this node ("+strconv.Itoa(b.lim.MaxPending)+")")
			return nil
		}
		if len(b.usable()) == 0 {
			b.notFound(r.ID, r.Key, "this node has no neighbours")
			return nil
		}
		p := &pending{id: r.ID, key: r.Key}
		b.pend[r.ID] = p
		b.order = append(b.order, r.ID)
		t := r.Timeout
		if t <= 0 {
			t = b.lim.Timeout
		}
		b.out = append(b.out, protocols.SetTimer{Timer: searchTimer(r.ID), After: t})
		return p
	}
	return nil
}

func searchTimer(id uint64) protocols.Timer {
	return protocols.Timer{Kind: timerSearch, Key: strconv.FormatUint(id, 10)}
}

func retryTimer(id uint64) protocols.Timer {
	return protocols.Timer{Kind: timerRetry, Key: strconv.FormatUint(id, 10)}
}

// cancelTimers cancels the timers of a search.
func (b *base) cancelTimers(id uint64) {
	b.out = append(b.out, protocols.CancelTimer{Timer: searchTimer(id)})
	if b.retryTimers {
		b.out = append(b.out, protocols.CancelTimer{Timer: retryTimer(id)})
	}
}

func (b *base) publish(key string, data []byte) {
	if key == "" || len(key) > MaxKey || len(data) > b.lim.MaxData {
		b.stats.Rejected++
		return
	}
	old, had := b.items[key]
	if (!had && len(b.items) >= b.lim.MaxItems) || b.bytes-len(old)+len(data) > b.lim.MaxBytes {
		b.stats.Rejected++
		return
	}
	b.bytes += len(data) - len(old)
	b.items[key] = slices.Clone(data)
}

// forget drops a search in progress and its timer.
func (b *base) forget(id uint64) {
	if _, ok := b.pend[id]; !ok {
		return
	}
	delete(b.pend, id)
	b.order = slices.DeleteFunc(b.order, func(x uint64) bool { return x == id })
	b.cancelTimers(id)
}

func (b *base) notFound(id uint64, key, reason string) {
	b.forget(id)
	b.stats.NotFound++
	b.emit(NotFound{ID: id, Key: key, Reason: reason})
}

// searchTimeout gives up a search whose timeout fired.
func (b *base) searchTimeout(key string) {
	id, err := strconv.ParseUint(key, 10, 64)
	if err != nil {
		return
	}
	if p, ok := b.pend[id]; ok {
		b.notFound(id, p.key, "no answer within the search's timeout")
	}
}

// onHit takes an answer to a search of this node.
func (b *base) onHit(from peer.ID, h *Hit) {
	p, ok := b.pend[h.GetId()]
	if !ok || p.key != h.GetKey() {
		b.stats.LateHits++
		return
	}
	b.forget(p.id)
	b.stats.Found++
	node := h.GetNode()
	if node.PeerID() != from {
		node = &Peer{Id: []byte(from)}
	}
	b.emit(Found{ID: p.id, Key: p.key, Data: h.GetData(), From: from, Node: node, Hops: int(h.GetHops())})
}

// answer is what a node does with a query for a key it holds: it answers the origin
// directly (or emits Found, if it is the origin).
func (b *base) answer(origin peer.ID, q *Query) bool {
	d, ok := b.items[q.GetKey()]
	if !ok {
		return false
	}
	if origin == b.self {
		b.onHit(b.self, &Hit{Id: q.GetId(), Key: q.GetKey(), Data: slices.Clone(d), Hops: q.GetHops(), Node: b.selfPeer()})
		return true
	}
	b.stats.Hits++
	b.send(origin, &Message{Body: &Message_Hit{Hit: &Hit{Id: q.GetId(), Key: q.GetKey(), Data: slices.Clone(d), Hops: q.GetHops(), Node: b.selfPeer()}}})
	return true
}

// exhausted reports a walker or query that ran out of hops to its origin.
func (b *base) exhausted(origin peer.ID, q *Query) {
	b.stats.Exhausted++
	if origin == b.self {
		b.onExhausted(b.self, &Exhausted{Id: q.GetId(), Walker: q.GetWalker()})
		return
	}
	b.send(origin, &Message{Body: &Message_Exhausted{Exhausted: &Exhausted{Id: q.GetId(), Walker: q.GetWalker()}}})
}

// onExhausted accounts for one walker of a search of this node; when every walker is
// accounted for and none found the key, the search is over.
func (b *base) onExhausted(_ peer.ID, e *Exhausted) {
	p, ok := b.pend[e.GetId()]
	if !ok || p.walkers == nil || int(e.GetWalker()) >= len(p.walkers) || p.walkers[e.GetWalker()] {
		return
	}
	p.walkers[e.GetWalker()] = true
	p.left--
	p.reports++
	if p.left == 0 || (p.enough > 0 && p.reports >= p.enough) {
		what := strconv.Itoa(p.reports) + " walkers used their TTL of hops without finding it"
		if p.reports == 1 {
			what = "the query used its TTL of hops without finding it"
		}
		b.notFound(p.id, p.key, what)
	}
}

// validQuery checks a query's fields and returns its origin.
func validQuery(q *Query, maxHops uint32) (peer.ID, bool) {
	if q == nil || q.GetKey() == "" || len(q.GetKey()) > MaxKey || q.GetTtl() > maxTTL || q.GetHops() > maxHops || q.GetWalker() >= 2*maxWalkers {
		return "", false
	}
	o := q.GetOrigin().PeerID()
	return o, o != ""
}

// leave cancels every timer of the searches in progress.
func (b *base) leave() {
	for _, id := range b.order {
		b.cancelTimers(id)
	}
	b.left = true
}

// pick returns a random element of ps, or "" if it is empty.
func (b *base) pick(ps []peer.ID) peer.ID {
	if len(ps) == 0 {
		return ""
	}
	return ps[b.rng.IntN(len(ps))]
}
