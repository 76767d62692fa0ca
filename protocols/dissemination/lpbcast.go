package dissemination

//go:generate protoc --go_out=. --go_opt=paths=source_relative lpbcast.proto

import (
	"crypto/sha256"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// LPBCast is the lightweight probabilistic broadcast of Eugster, Guerraoui, Handurukande,
// Kouznetsov and Kermarrec, "Lightweight Probabilistic Broadcast", ACM Transactions on
// Computer Systems 21(4), 2003.
//
// Every period T a node that has something to say sends one gossip message to F targets
// drawn at random from its view. The message carries the node's events buffer (the
// broadcasts it received or published since its previous gossip round; the buffer is
// emptied once sent) and a digest of the ids of broadcasts it delivered lately (the
// paper's eventIds). A node delivers every broadcast it sees for the first time and puts
// it in its events buffer, so each node forwards each broadcast once, to F random
// targets: redundancy is by design (about F payload copies per delivery). When a digest
// names an id the node has not delivered, the node notes it with the gossip's sender
// (the paper's retrieveBuf); if the broadcast has not come by gossip after k more rounds,
// it asks the sender for it, then, r rounds later, a random view member, then the
// broadcast's origin. Nodes answer such requests from a bounded retrieve buffer of
// recently delivered broadcasts. Every broadcast carries an age, the hops it made (1 for
// a node that got it from the origin; Delivered.Round reports it): an event that made
// MaxAge hops is no longer forwarded, and when the events buffer overflows the most
// propagated events are dropped first (the age-based purging of Kouznetsov et al.,
// "Reducing noise in gossip-based reliable broadcast", SRDS 2001, which the TOCS paper
// includes); a copy that made more hops raises the age of the buffered one.
//
// Deviations (see docs/dissemination-lpbcast.md):
//   - The view is the membership's neighbour set (protocols.Neighbours), not the paper's
//     own partial view: subs and unSubs are neither kept nor sent, and a node's
//     subscription and unsubscription are the membership's business.
//   - The digest is not the whole eventIds buffer: it names the ids the node delivered in
//     its last DigestRounds rounds (at most DigestIDs, newest first, grouped by origin so
//     the origin can be asked), leaving out the ids of the events the same message
//     carries. The eventIds buffer itself (Seen, for duplicate suppression) is larger.
//   - A node with nothing to say sends nothing and sets no timer: a gossip round runs
//     only while the events buffer, the digest window or the retrieve list is non-empty.
//     The first round after an idle spell comes after a random delay in (0, T], so nodes
//     do not gossip in lockstep.
//   - One retrieval per missing id (the paper keeps an element per digest naming it);
//     requests due to one peer in one round travel as one message. A retrieved broadcast
//     is delivered but not gossiped further (the digests still spread its id).
//   - Caps against bad or oversized messages: at most Events events, DigestIDs digest ids
//     and Events retrieve ids are taken from one message; the rest is ignored.
//   - Ids are hashes (BroadcastID), not the paper's (origin, sequence number) pairs, so
//     the eventIds buffer is bounded by count and not compacted per origin.
//   - The node does not deliver its own broadcasts to itself.
type LPBCast struct {
	cfg  LPBCastConfig
	rng  *rand.Rand
	self peer.ID
	view []peer.ID

	round int64 // gossip rounds run so far
	armed bool  // the round timer is pending

	events []lpbEvent // the events buffer: to go out in the next round

	seen     map[string]lpbSeen // the eventIds buffer
	seenFIFO []string

	archive     map[string]lpbEvent // the retrieve buffer
	archiveFIFO []string

	missing     map[string]*lpbMissing // the retrieveBuf
	missingFIFO []string

	left bool
	out  []protocols.Output
}

// lpbEvent is a broadcast with the hops it made to reach this node.
type lpbEvent struct {
	key string
	b   *Broadcast
	age uint32
}

type lpbSeen struct {
	round  int64 // the round in which it was delivered (or published)
	origin []byte
}

type lpbMissing struct {
	origin []byte
	sender peer.ID // who named it first in a digest ("" once that peer is down)
	asked  peer.ID // who was asked last
	step   int     // 0: ask the sender next, 1: a random view member, 2: the origin, 3: give up
	next   int64   // the round at which to take the next step
}

// LPBCastConfig holds LPBCast's parameters; a zero field means its default.
type LPBCastConfig struct {
	// Fanout is F, the number of view members each gossip goes to; 0 means 3, a small
	// fanout of the kind the paper experiments with (with a membership view of about 5
	// neighbours, 3 of them hear each gossip round). Each delivery costs about F payload
	// copies.
	Fanout int
	// Period is T, the time between gossip rounds; 0 means 200 ms. An event waits on
	// average T/2 at each hop for the next round, so T sets the per-hop latency (next to
	// the link's); since an idle node neither ticks nor sends, a short period costs
	// nothing when there is no traffic, and under load it only makes gossip messages
	// smaller and more frequent.
	Period time.Duration
	// Events bounds the events buffer (the paper's |events|m): at most this many
	// broadcasts go out in one gossip round, the most propagated dropped first; 0 means
	// 64.
	Events int
	// MaxAge is the number of hops after which an event is delivered but no longer
	// forwarded; 0 means 48. The last delivery comes at about 14 hops at 300 nodes and
	// 19 at 3,000 in the simulator (it grows like log N), so 48 leaves room for 10^5
	// nodes and more; retrieval repairs what an age cut misses.
	MaxAge int
	// Seen bounds the eventIds buffer, the ids of delivered broadcasts remembered to
	// deliver each only once (oldest forgotten first); 0 means 65,536.
	Seen int
	// DigestRounds is how many rounds a delivered id is named in the node's gossip
	// digests; 0 means 5.
	DigestRounds int
	// DigestIDs bounds the ids in one digest (newest first); 0 means 256.
	DigestIDs int
	// Archive bounds the retrieve buffer, the broadcasts kept to answer retrieve
	// requests (oldest forgotten first); 0 means 1,024.
	Archive int
	// Missing bounds the retrieveBuf, the ids named by digests and not yet received
	// (oldest forgotten first); 0 means 4,096.
	Missing int
	// RetrieveWait is the paper's k: a missing id is asked for in the first round more
	// than k rounds after the digest that named it, so that gossip has a chance to bring
	// it first; 0 means 1.
	RetrieveWait int
	// RetrieveTimeout is the paper's r: rounds to wait for an answer before asking the
	// next node (sender, then a random view member, then the origin); 0 means 2 (at the
	// default period, 400 ms, several round trips).
	RetrieveTimeout int
	// MaxBytes bounds the payload bytes of the events in one gossip or retrieve reply:
	// events that do not fit wait in the buffer for the next round (one event always
	// goes, whatever its size); 0 means 1 MiB. It keeps messages under the runtime's
	// message size limit when payloads are large.
	MaxBytes int
}

// WithDefaults returns the config with every zero field set to its default.
func (c LPBCastConfig) WithDefaults() LPBCastConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Fanout, 3)
	if c.Period == 0 {
		c.Period = 200 * time.Millisecond
	}
	def(&c.Events, 64)
	def(&c.MaxAge, 48)
	def(&c.Seen, 1<<16)
	def(&c.DigestRounds, 5)
	def(&c.DigestIDs, 256)
	def(&c.Archive, 1024)
	def(&c.Missing, 4096)
	def(&c.RetrieveWait, 1)
	def(&c.RetrieveTimeout, 2)
	def(&c.MaxBytes, 1<<20)
	return c
}

// Validate says which field is wrong, if any.
func (c LPBCastConfig) Validate() error {
	bad := func(field, reason string) error {
		return &protocols.ConfigError{Field: "LPBCastConfig." + field, Reason: reason}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"Fanout", c.Fanout}, {"Events", c.Events}, {"MaxAge", c.MaxAge}, {"Seen", c.Seen},
		{"DigestRounds", c.DigestRounds}, {"DigestIDs", c.DigestIDs}, {"Archive", c.Archive},
		{"Missing", c.Missing}, {"RetrieveWait", c.RetrieveWait}, {"RetrieveTimeout", c.RetrieveTimeout},
		{"MaxBytes", c.MaxBytes},
	} {
		if f.v < 0 {
			return bad(f.name, "must not be negative")
		}
	}
	if c.Period < 0 {
		return bad("Period", "must not be negative")
	}
	if c.MaxAge > 1<<16 {
		return bad("MaxAge", "must not exceed 65,536 hops")
	}
	return nil
}

// LPBCastSizes reports how full a core's view and buffers are.
type LPBCastSizes struct {
	View, Events, Seen, Archive, Missing int
}

const lpbTimerRound uint8 = 40

// NewLPBCast returns an LPBCast core for node self.
func NewLPBCast(self peer.ID, cfg LPBCastConfig, rng *rand.Rand) (*LPBCast, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return &LPBCast{
		cfg: cfg.WithDefaults(), rng: rng, self: self,
		seen: map[string]lpbSeen{}, archive: map[string]lpbEvent{}, missing: map[string]*lpbMissing{},
	}, nil
}

// View returns the view: the membership's neighbours the gossip targets are drawn from.
func (l *LPBCast) View() []peer.ID { return slices.Clone(l.view) }

// Sizes reports how full the view and the buffers are.
func (l *LPBCast) Sizes() LPBCastSizes {
	return LPBCastSizes{View: len(l.view), Events: len(l.events), Seen: len(l.seen), Archive: len(l.archive), Missing: len(l.missing)}
}

// Handle implements protocols.Core.
func (l *LPBCast) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if l.left {
		return nil
	}
	l.out = l.out[:0]
	switch v := in.(type) {
	case protocols.Neighbours:
		l.neighbours(v.Peers)
	case protocols.Call:
		if pub, ok := v.Req.(Publish); ok && pub.Broadcast != nil {
			l.publish(pub.Broadcast)
		}
	case protocols.Receive:
		if m, ok := v.Msg.(*LPBCastMessage); ok && v.From != l.self && v.From != "" {
			l.receive(v.From, m)
		}
	case protocols.TimerFired:
		if v.Timer.Kind == lpbTimerRound && l.armed {
			l.armed = false
			l.gossipRound()
			l.arm(true)
			return l.out
		}
	case protocols.PeerDown:
		l.peerDown(v.Peer)
	case protocols.Leave:
		if l.armed {
			l.out = append(l.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: lpbTimerRound}})
		}
		l.left = true
		return l.out
	}
	l.arm(false)
	return l.out
}

// arm sets the round timer if there is work for a round and none is pending: a period
// after the previous round, or a random delay in (0, T] after an idle spell.
func (l *LPBCast) arm(periodic bool) {
	if l.armed || !l.hasWork() {
		return
	}
	after := l.cfg.Period
	if !periodic {
		after = time.Duration(1 + l.rng.Int64N(int64(l.cfg.Period)))
	}
	l.armed = true
	l.out = append(l.out, protocols.SetTimer{Timer: protocols.Timer{Kind: lpbTimerRound}, After: after})
}

func (l *LPBCast) hasWork() bool {
	if len(l.missing) > 0 {
		return true
	}
	if len(l.view) == 0 {
		return false
	}
	if len(l.events) > 0 {
		return true
	}
	// Is the newest delivered id still to be named in the next round's digest?
	n := len(l.seenFIFO)
	return n > 0 && l.round+1-l.seen[l.seenFIFO[n-1]].round <= int64(l.cfg.DigestRounds)
}

// neighbours takes the membership's new neighbour set as the view; those gone are down.
func (l *LPBCast) neighbours(peers []peer.ID) {
	for _, q := range l.view {
		if !slices.Contains(peers, q) {
			l.forgetPeer(q)
		}
	}
	l.view = l.view[:0]
	for _, q := range peers {
		if q != l.self && q != "" && !slices.Contains(l.view, q) {
			l.view = append(l.view, q)
		}
	}
}

func (l *LPBCast) peerDown(q peer.ID) {
	l.view = slices.DeleteFunc(l.view, func(x peer.ID) bool { return x == q })
	l.forgetPeer(q)
}

// forgetPeer: a peer that is down is not asked for missing broadcasts.
func (l *LPBCast) forgetPeer(q peer.ID) {
	for _, key := range l.missingFIFO {
		if m := l.missing[key]; m.sender == q {
			m.sender = ""
		}
	}
}

func (l *LPBCast) publish(b *Broadcast) {
	id := BroadcastID(b)
	key := string(id)
	if _, dup := l.seen[key]; dup {
		return
	}
	l.remember(key, b, 0)
	l.forgetMissing(key)
	l.buffer(lpbEvent{key: key, b: b, age: 0})
}

func (l *LPBCast) receive(from peer.ID, m *LPBCastMessage) {
	switch body := m.GetBody().(type) {
	case *LPBCastMessage_Gossip:
		for _, e := range capped(body.Gossip.GetEvents(), l.cfg.Events) {
			l.onEvent(e, true)
		}
		l.onDigest(from, body.Gossip.GetEventIds())
	case *LPBCastMessage_Retrieve:
		l.onRetrieve(from, body.Retrieve.GetIds())
	case *LPBCastMessage_Reply:
		for _, e := range capped(body.Reply.GetEvents(), l.cfg.Events) {
			l.onEvent(e, false)
		}
	}
}

func capped[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// onEvent is the paper's phase 3 for one event: deliver it if new, and (if it came by
// gossip) put it in the events buffer for the next round.
func (l *LPBCast) onEvent(e *LPBCastEvent, gossiped bool) {
	b := e.GetBroadcast()
	if b == nil {
		return
	}
	id := BroadcastID(b)
	key := string(id)
	age := e.GetAge()
	if _, dup := l.seen[key]; dup {
		// Age-based purging: a copy that travelled further says the event is more
		// propagated than the one we buffered.
		if i := slices.IndexFunc(l.events, func(x lpbEvent) bool { return x.key == key }); i >= 0 && age > l.events[i].age {
			if int(age) >= l.cfg.MaxAge {
				l.events = slices.Delete(l.events, i, i+1)
			} else {
				l.events[i].age = age
			}
		}
		return
	}
	l.remember(key, b, age)
	l.forgetMissing(key)
	l.out = append(l.out, Delivered{ID: id, Broadcast: b, Round: age})
	if gossiped {
		l.buffer(lpbEvent{key: key, b: b, age: age})
	}
}

// buffer puts an event in the events buffer unless it made MaxAge hops already; when the
// buffer is full, the most propagated event (highest age) gives way.
func (l *LPBCast) buffer(e lpbEvent) {
	if int(e.age) >= l.cfg.MaxAge {
		return
	}
	if len(l.events) >= l.cfg.Events {
		worst := 0
		for i, x := range l.events {
			if x.age > l.events[worst].age {
				worst = i
			}
		}
		if e.age >= l.events[worst].age {
			return
		}
		l.events = slices.Delete(l.events, worst, worst+1)
	}
	l.events = append(l.events, e)
}

// onDigest notes the ids a gossip names that the node has not delivered.
func (l *LPBCast) onDigest(from peer.ID, groups []*LPBCastIDs) {
	budget := l.cfg.DigestIDs
	for _, g := range groups {
		for _, id := range g.GetIds() {
			if budget == 0 {
				return
			}
			budget--
			key := string(id)
			if len(id) != sha256.Size {
				continue
			}
			if _, ok := l.seen[key]; ok {
				continue
			}
			if _, ok := l.missing[key]; ok {
				continue
			}
			if len(l.missingFIFO) >= l.cfg.Missing {
				delete(l.missing, l.missingFIFO[0])
				l.missingFIFO = l.missingFIFO[1:]
			}
			l.missing[key] = &lpbMissing{origin: g.GetOrigin(), sender: from, next: l.round + int64(l.cfg.RetrieveWait) + 1}
			l.missingFIFO = append(l.missingFIFO, key)
		}
	}
}

// onRetrieve answers a retrieve request with the broadcasts still in the retrieve buffer.
func (l *LPBCast) onRetrieve(from peer.ID, ids [][]byte) {
	var found []*LPBCastEvent
	bytes := 0
	for _, id := range capped(ids, l.cfg.Events) {
		if e, ok := l.archive[string(id)]; ok {
			if size := len(e.b.GetPayload()); len(found) == 0 || bytes+size <= l.cfg.MaxBytes {
				bytes += size
				found = append(found, &LPBCastEvent{Broadcast: e.b, Age: e.age + 1})
			}
		}
	}
	if len(found) > 0 {
		l.send(from, &LPBCastMessage{Body: &LPBCastMessage_Reply{Reply: &LPBCastReply{Events: found}}})
	}
}

func (l *LPBCast) send(to peer.ID, m *LPBCastMessage) {
	l.out = append(l.out, protocols.Send{To: to, Msg: m})
}

// gossipRound is one period: gossip the events buffer and the digest to F random view
// members, empty the buffer, and take the due retrieval steps.
func (l *LPBCast) gossipRound() {
	l.round++
	if targets := l.pick(l.cfg.Fanout, ""); len(targets) > 0 {
		g := &LPBCastGossip{}
		inMsg := make(map[string]bool, len(l.events))
		bytes, n := 0, 0
		for _, e := range l.events {
			size := len(e.b.GetPayload())
			if n > 0 && bytes+size > l.cfg.MaxBytes {
				break
			}
			bytes += size
			n++
			g.Events = append(g.Events, &LPBCastEvent{Broadcast: e.b, Age: e.age + 1})
			inMsg[e.key] = true
		}
		l.events = slices.Delete(l.events, 0, n)
		g.EventIds = l.digest(inMsg)
		if len(g.Events) > 0 || len(g.EventIds) > 0 {
			for _, q := range targets {
				l.send(q, &LPBCastMessage{Body: &LPBCastMessage_Gossip{Gossip: g}})
			}
		}
	}
	l.retrieve()
}

// digest names the ids delivered in the last DigestRounds rounds, newest first, grouped
// by origin, except those in skip.
func (l *LPBCast) digest(skip map[string]bool) []*LPBCastIDs {
	var groups []*LPBCastIDs
	n := 0
	for i := len(l.seenFIFO) - 1; i >= 0 && n < l.cfg.DigestIDs; i-- {
		key := l.seenFIFO[i]
		s := l.seen[key]
		if l.round-s.round > int64(l.cfg.DigestRounds) {
			break
		}
		if skip[key] {
			continue
		}
		j := slices.IndexFunc(groups, func(g *LPBCastIDs) bool { return string(g.Origin) == string(s.origin) })
		if j < 0 {
			groups = append(groups, &LPBCastIDs{Origin: s.origin})
			j = len(groups) - 1
		}
		groups[j].Ids = append(groups[j].Ids, []byte(key))
		n++
	}
	return groups
}

// pick draws up to n distinct view members other than except, in random order.
func (l *LPBCast) pick(n int, except peer.ID) []peer.ID {
	var c []peer.ID
	for _, q := range l.view {
		if q != except {
			c = append(c, q)
		}
	}
	l.rng.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	return capped(c, n)
}

// retrieve takes the due steps for the missing ids: ask the digest's sender, then a
// random view member, then the origin, then give up.
func (l *LPBCast) retrieve() {
	asks := map[peer.ID][][]byte{}
	var order []peer.ID
	kept := l.missingFIFO[:0]
	for _, key := range l.missingFIFO {
		m := l.missing[key]
		if l.round < m.next {
			kept = append(kept, key)
			continue
		}
		var to peer.ID
		for to == "" && m.step < 3 {
			switch m.step {
			case 0:
				to = m.sender
			case 1:
				if p := l.pick(1, m.asked); len(p) > 0 {
					to = p[0]
				}
			case 2:
				if o, err := peer.IDFromBytes(m.origin); err == nil && o != l.self && o != m.asked {
					to = o
				}
			}
			m.step++
		}
		if to == "" {
			delete(l.missing, key) // given up
			continue
		}
		kept = append(kept, key)
		m.asked = to
		m.next = l.round + int64(l.cfg.RetrieveTimeout)
		if _, ok := asks[to]; !ok {
			order = append(order, to)
		}
		asks[to] = append(asks[to], []byte(key))
	}
	clear(l.missingFIFO[len(kept):])
	l.missingFIFO = kept
	for _, to := range order {
		for ids := asks[to]; len(ids) > 0; {
			chunk := capped(ids, l.cfg.Events)
			ids = ids[len(chunk):]
			l.send(to, &LPBCastMessage{Body: &LPBCastMessage_Retrieve{Retrieve: &LPBCastRetrieve{Ids: chunk}}})
		}
	}
}

// remember records a delivered (or published) broadcast in the eventIds buffer and the
// retrieve buffer, forgetting the oldest beyond their bounds.
func (l *LPBCast) remember(key string, b *Broadcast, age uint32) {
	if len(l.seenFIFO) >= l.cfg.Seen {
		delete(l.seen, l.seenFIFO[0])
		l.seenFIFO = l.seenFIFO[1:]
	}
	l.seen[key] = lpbSeen{round: l.round, origin: b.GetOrigin()}
	l.seenFIFO = append(l.seenFIFO, key)
	if len(l.archiveFIFO) >= l.cfg.Archive {
		delete(l.archive, l.archiveFIFO[0])
		l.archiveFIFO = l.archiveFIFO[1:]
	}
	l.archive[key] = lpbEvent{key: key, b: b, age: age}
	l.archiveFIFO = append(l.archiveFIFO, key)
}

func (l *LPBCast) forgetMissing(key string) {
	if _, ok := l.missing[key]; !ok {
		return
	}
	delete(l.missing, key)
	l.missingFIFO = slices.DeleteFunc(l.missingFIFO, func(k string) bool { return k == key })
}

// LPBCast's wire message.
var _ Carrier = (*LPBCastMessage)(nil)

// Broadcasts implements Carrier.
func (m *LPBCastMessage) Broadcasts() []*Broadcast {
	var events []*LPBCastEvent
	switch b := m.GetBody().(type) {
	case *LPBCastMessage_Gossip:
		events = b.Gossip.GetEvents()
	case *LPBCastMessage_Reply:
		events = b.Reply.GetEvents()
	}
	var out []*Broadcast
	for _, e := range events {
		if e.GetBroadcast() != nil {
			out = append(out, e.GetBroadcast())
		}
	}
	return out
}

// Kind implements Carrier.
func (m *LPBCastMessage) Kind() string {
	switch m.GetBody().(type) {
	case *LPBCastMessage_Gossip:
		return "GOSSIP"
	case *LPBCastMessage_Retrieve:
		return "RETRIEVE"
	case *LPBCastMessage_Reply:
		return "REPLY"
	}
	return "UNKNOWN"
}
