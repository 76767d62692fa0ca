package dissemination

//go:generate protoc --go_out=. --go_opt=paths=source_relative mon.proto

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Mon is the on-demand overlay of Liang, Ko, Gupta and Nahrstedt, "MON: On-demand
// Overlays for Distributed System Management", 2nd USENIX Workshop on Real, Large
// Distributed Systems (WORLDS), 2005, used here for one-to-many broadcast.
//
// MON keeps no dissemination structure while nobody needs one. When a node has something
// to send and no live session, it starts a session: it sends a construction message
// (SESSION, with the session's id and a TTL in levels) to up to Fanout random neighbours of
// its membership. A node that receives a session for the first time takes the sender as
// its parent, answers ACCEPT, and in turn asks up to Fanout of its own neighbours (all but
// its parent and the origin); a node already in the session answers REJECT, and the asker
// then tries its next untried neighbour, until it has Fanout children or none is left
// (the paper's randomised tree building with a degree bound k). The tree is soft state: a
// node forgets a session Lifetime after its last activity, and the origin uses a session
// for new broadcasts for at most Lifetime after starting it, so new members join the next
// tree. Broadcasts travel down the tree only: one payload message per tree edge, N-1 per
// broadcast. Each session numbers its broadcasts; a child acknowledges what it receives
// (the paper's commands return their results up the tree; here the result is an ACK), and
// a parent resends what is not acknowledged within AckTimeout, Retries times.
//
// Broadcasts issued while the tree is being built are not lost: the tree grows edge by
// edge, and every node keeps its session's broadcasts until its construction is over, so
// a child gets everything published so far the moment it accepts (the closest thing to
// the paper's "build the overlay, then run the command", without waiting for the whole
// tree). MON does not repair trees; neither do we: when a node loses a child (PeerDown,
// Retries resends unacknowledged, or the child answers
// that it is not in the session), it sends BREAK up to the origin with the first session
// index the lost branch may lack. The origin ends the session at once and, if the branch
// may have missed broadcasts, builds a new session right away and sends them again over
// it (nodes that have them already do not deliver them twice); otherwise its next
// broadcast builds the new tree. A node whose parent fails keeps the session (its own
// resends may still be due) but gets nothing more through it.
//
// Deviations (see docs/dissemination-mon.md):
//   - The membership is the neighbour set of the layer below (protocols.Neighbours), not
//     the paper's gossip-based global membership: children are drawn from a node's
//     neighbours, and a tree covers every node only if Fanout is at least the overlay's
//     largest degree (the default, 32, makes construction a flood). A neighbour that
//     leaves the set is only no longer a candidate for new trees: a session's edges are
//     its own, as in MON, and only a transport failure or an unanswered PUSH ends them
//     (over Newscast, whose views change every cycle, ending sessions at every view
//     change made a rebuild storm: RMR 99 at 50 mocknet hosts, against 0 now).
//   - A node in a live session invites a neighbour that appears later (within Fanout), so
//     nodes that joined since the tree was built are not left out for its lifetime.
//   - The paper builds the tree before running a command; here broadcasts flow down each
//     edge as soon as it is accepted, and nodes keep a session's broadcasts (at most
//     Window) until their own construction is over.
//   - Children acknowledge broadcasts and parents resend; SESSION is resent too (message
//     loss). A failure ends the session early (BREAK) and the origin resends, over a new
//     session, what the broken branch may lack (the broadcasts the lost child left
//     unacknowledged or acknowledged within 2*AckTimeout), at the cost of one
//     construction and N-1 payload messages per resent broadcast.
//   - No DAG mode (the paper's multi-parent overlay for software push): a tree only.
//   - Every table is bounded: sessions (MaxSessions, the least recently active forgotten
//     first), children (Fanout), broadcasts kept per session and per child (Window), the
//     origin's own recent broadcasts (Window), delivered ids (Seen), entries and indices
//     taken from one message (Window).
//   - The node does not deliver its own broadcasts to itself.
type Mon struct {
	cfg   MonConfig
	rng   *rand.Rand
	self  peer.ID
	neigh []peer.ID

	sessions map[string]*monSession
	order    []*monSession // in the order created
	cur      *monSession   // this node's own session for new broadcasts, nil if none
	epoch    uint64        // epoch of this node's newest own session

	recent []monRecent // own broadcasts, oldest first, for resending after a break

	seen     map[string]struct{}
	seenFIFO []string

	now  time.Time
	left bool
	out  []protocols.Output
}

// MonConfig holds Mon's parameters; a zero field means its default.
type MonConfig struct {
	// Lifetime is how long a session lives: its origin uses it for new broadcasts for at
	// most Lifetime, and nodes forget it Lifetime after its last activity; 0 means 30 s.
	Lifetime time.Duration
	// Fanout bounds the children of a node in a session (the paper's k); 0 means 32.
	Fanout int
	// ConstructionTTL bounds the depth of a session's tree, in levels; 0 means 64.
	ConstructionTTL int
	// ReplyTimeout is how long to wait for the answer to SESSION before asking again;
	// 0 means 1 s.
	ReplyTimeout time.Duration
	// AckTimeout is how long to wait for a child's ACK before resending; 0 means 1 s.
	AckTimeout time.Duration
	// Retries is how many times SESSION and PUSH are resent before the peer is given up;
	// 0 means 5 (a peer is given up wrongly with probability 1e-6 under 5% loss),
	// negative means never.
	Retries int
	// MaxSessions bounds the sessions a node keeps; 0 means 64.
	MaxSessions int
	// Window bounds the broadcasts kept per session (for children still to come and
	// for resending), the sent records per child, and the node's own recent broadcasts
	// kept for resending after a break; 0 means 256.
	Window int
	// Seen bounds the ids of delivered broadcasts remembered; 0 means 65,536.
	Seen int
	// MaxBytes bounds the payload bytes in one PUSH (a late child's catch-up is split
	// over several); 0 means 1 MiB. It keeps messages under the runtime's size limit.
	MaxBytes int
}

// WithDefaults returns the config with every zero field set to its default.
func (c MonConfig) WithDefaults() MonConfig {
	if c.Lifetime == 0 {
		c.Lifetime = 30 * time.Second
	}
	if c.Fanout == 0 {
		c.Fanout = 32
	}
	if c.ConstructionTTL == 0 {
		c.ConstructionTTL = 64
	}
	if c.ReplyTimeout == 0 {
		c.ReplyTimeout = time.Second
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = time.Second
	}
	if c.Retries == 0 {
		c.Retries = 5
	} else if c.Retries < 0 {
		c.Retries = 0
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 64
	}
	if c.Window == 0 {
		c.Window = 256
	}
	if c.Seen == 0 {
		c.Seen = 1 << 16
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 20
	}
	return c
}

// Validate says which field is wrong, if any.
func (c MonConfig) Validate() error {
	switch {
	case c.Lifetime < 0:
		return &protocols.ConfigError{Field: "MonConfig.Lifetime", Reason: "must not be negative"}
	case c.Fanout < 0:
		return &protocols.ConfigError{Field: "MonConfig.Fanout", Reason: "must not be negative"}
	case c.ConstructionTTL < 0 || c.ConstructionTTL > 1<<16:
		return &protocols.ConfigError{Field: "MonConfig.ConstructionTTL", Reason: "must be in [0, 65536]"}
	case c.ReplyTimeout < 0:
		return &protocols.ConfigError{Field: "MonConfig.ReplyTimeout", Reason: "must not be negative"}
	case c.AckTimeout < 0:
		return &protocols.ConfigError{Field: "MonConfig.AckTimeout", Reason: "must not be negative"}
	case c.MaxSessions < 0:
		return &protocols.ConfigError{Field: "MonConfig.MaxSessions", Reason: "must not be negative"}
	case c.Window < 0:
		return &protocols.ConfigError{Field: "MonConfig.Window", Reason: "must not be negative"}
	case c.Seen < 0:
		return &protocols.ConfigError{Field: "MonConfig.Seen", Reason: "must not be negative"}
	case c.MaxBytes < 0:
		return &protocols.ConfigError{Field: "MonConfig.MaxBytes", Reason: "must not be negative"}
	}
	return nil
}

const (
	monTimerExpire uint8 = iota + 40 // Key: session
	monTimerReply                    // Key: session, Peer: candidate asked
	monTimerAck                      // Key: session, Peer: child
)

// monSession is one session (tree) a node takes part in.
type monSession struct {
	key     string
	origin  string
	epoch   uint64
	root    bool    // this node is the origin
	parent  peer.ID // "" at the root and once the parent failed
	level   uint32  // depth in the tree
	ttl     uint32  // levels the tree may still grow below this node
	created time.Time
	active  time.Time // last activity, for expiry
	ended   bool      // root: takes no new broadcasts

	candidates []peer.ID   // neighbours not asked yet, in random order
	pending    []*monCand  // asked, answer awaited
	children   []*monChild // accepted

	log     []monEntry // broadcasts kept for children still to come and for resending
	trimmed bool       // an entry left the log: a late child cannot be caught up

	next      uint64   // root: index of the next broadcast
	gotLow    uint64   // non-root: every index up to gotLow was received
	gotHigh   []uint64 // and these above it (sorted)
	maxGot    uint64
	breakFrom uint64 // lowest index reported in a BREAK so far; 0 none
}

type monCand struct {
	id    peer.ID
	tries int
}

type monChild struct {
	id    peer.ID
	sent  []monSent
	armed bool // ack timer pending
}

type monSent struct {
	index uint64
	at    time.Time
	tries int
	acked bool
}

type monEntry struct {
	index uint64
	b     *Broadcast
}

// monRecent is one of this node's own broadcasts and where it was last sent.
type monRecent struct {
	b            *Broadcast
	epoch, index uint64
}

// NewMon returns a Mon core for node self.
func NewMon(self peer.ID, cfg MonConfig, rng *rand.Rand) (*Mon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return &Mon{
		cfg: cfg.WithDefaults(), rng: rng, self: self,
		sessions: map[string]*monSession{}, seen: map[string]struct{}{},
	}, nil
}

// Sessions returns the number of sessions the node keeps state for.
func (m *Mon) Sessions() int { return len(m.order) }

// Tree returns the node's place in the newest session of origin it knows: its parent
// ("" at the origin, or once the parent failed) and its children; ok is false if it
// knows no session of origin.
func (m *Mon) Tree(origin peer.ID) (parent peer.ID, children []peer.ID, ok bool) {
	var s *monSession
	for _, x := range m.order {
		if x.origin == string(origin) && (s == nil || x.epoch > s.epoch) {
			s = x
		}
	}
	if s == nil {
		return "", nil, false
	}
	for _, c := range s.children {
		children = append(children, c.id)
	}
	return s.parent, children, true
}

// Handle implements protocols.Core.
func (m *Mon) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if m.left {
		return nil
	}
	m.out = m.out[:0]
	m.now = now
	switch v := in.(type) {
	case protocols.Neighbours:
		m.neighbours(v.Peers)
	case protocols.Call:
		if pub, ok := v.Req.(Publish); ok && pub.Broadcast != nil {
			m.publish(pub.Broadcast)
		}
	case protocols.Receive:
		if msg, ok := v.Msg.(*MonMessage); ok && v.From != m.self && v.From != "" {
			m.receive(v.From, msg)
		}
	case protocols.TimerFired:
		m.timer(v.Timer)
	case protocols.PeerDown:
		if v.Peer != m.self && v.Peer != "" {
			m.peerDown(v.Peer)
		}
	case protocols.Leave:
		for _, s := range m.order {
			m.cancelTimers(s)
		}
		m.left = true
	}
	return m.out
}

func (m *Mon) receive(from peer.ID, msg *MonMessage) {
	switch b := msg.GetBody().(type) {
	case *MonMessage_Session:
		m.onSession(from, b.Session)
	case *MonMessage_Reply:
		m.onReply(from, b.Reply)
	case *MonMessage_Push:
		m.onPush(from, b.Push)
	case *MonMessage_Ack:
		m.onAck(from, b.Ack)
	case *MonMessage_Break:
		m.onBreak(from, b.Break)
	}
}

func (m *Mon) send(to peer.ID, body isMonMessage_Body) {
	m.out = append(m.out, protocols.Send{To: to, Msg: &MonMessage{Body: body}})
}

func (m *Mon) setTimer(kind uint8, p peer.ID, key string, after time.Duration) {
	m.out = append(m.out, protocols.SetTimer{Timer: protocols.Timer{Kind: kind, Peer: p, Key: key}, After: after})
}

func (m *Mon) cancelTimer(kind uint8, p peer.ID, key string) {
	m.out = append(m.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: kind, Peer: p, Key: key}})
}

// --- sessions ---

// monKey names a session: origin (length-prefixed) and epoch.
func monKey(origin string, epoch uint64) string {
	k := binary.AppendUvarint(nil, uint64(len(origin)))
	k = append(k, origin...)
	return string(binary.BigEndian.AppendUint64(k, epoch))
}

// monParseID checks a session id from the wire.
func monParseID(id *MonSessionID) (origin string, epoch uint64, ok bool) {
	o := id.GetOrigin()
	if len(o) == 0 || len(o) > 256 || id.GetEpoch() == 0 {
		return "", 0, false
	}
	return string(o), id.GetEpoch(), true
}

func (s *monSession) wireID() *MonSessionID {
	return &MonSessionID{Origin: []byte(s.origin), Epoch: s.epoch}
}

func (m *Mon) lookup(id *MonSessionID) *monSession {
	origin, epoch, ok := monParseID(id)
	if !ok {
		return nil
	}
	return m.sessions[monKey(origin, epoch)]
}

func (s *monSession) child(p peer.ID) *monChild {
	for _, c := range s.children {
		if c.id == p {
			return c
		}
	}
	return nil
}

func (s *monSession) pendingIndex(p peer.ID) int {
	return slices.IndexFunc(s.pending, func(c *monCand) bool { return c.id == p })
}

// nextIndex is the first index this node has not seen in the session.
func (s *monSession) nextIndex() uint64 {
	if s.root {
		return s.next
	}
	return s.maxGot + 1
}

// has and mark keep the indices received, to forward each only once.
func (s *monSession) has(i uint64) bool {
	if i <= s.gotLow {
		return true
	}
	_, ok := slices.BinarySearch(s.gotHigh, i)
	return ok
}

func (s *monSession) mark(i uint64, bound int) {
	if s.has(i) {
		return
	}
	j, _ := slices.BinarySearch(s.gotHigh, i)
	s.gotHigh = slices.Insert(s.gotHigh, j, i)
	s.maxGot = max(s.maxGot, i)
	for len(s.gotHigh) > 0 && (s.gotHigh[0] == s.gotLow+1 || len(s.gotHigh) > bound) {
		s.gotLow = s.gotHigh[0]
		s.gotHigh = s.gotHigh[1:]
	}
}

// insert adds a session, forgetting the least recently active one beyond MaxSessions.
func (m *Mon) insert(s *monSession) {
	for len(m.order) >= m.cfg.MaxSessions {
		var victim *monSession
		for _, x := range m.order {
			if x != m.cur && (victim == nil || x.active.Before(victim.active)) {
				victim = x
			}
		}
		if victim == nil {
			victim = m.order[0]
		}
		m.drop(victim)
	}
	m.sessions[s.key] = s
	m.order = append(m.order, s)
	m.setTimer(monTimerExpire, "", s.key, m.cfg.Lifetime)
}

func (m *Mon) drop(s *monSession) {
	if m.sessions[s.key] != s {
		return
	}
	m.cancelTimers(s)
	delete(m.sessions, s.key)
	m.order = slices.DeleteFunc(m.order, func(x *monSession) bool { return x == s })
	if m.cur == s {
		m.cur = nil
	}
}

func (m *Mon) cancelTimers(s *monSession) {
	m.cancelTimer(monTimerExpire, "", s.key)
	for _, c := range s.pending {
		m.cancelTimer(monTimerReply, c.id, s.key)
	}
	for _, c := range s.children {
		if c.armed {
			m.cancelTimer(monTimerAck, c.id, s.key)
		}
	}
}

// shuffled returns the neighbours but those excluded, in random order.
func (m *Mon) shuffled(exclude ...peer.ID) []peer.ID {
	var out []peer.ID
	for _, q := range m.neigh {
		if !slices.Contains(exclude, q) {
			out = append(out, q)
		}
	}
	m.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// startSession builds a new tree rooted at this node.
func (m *Mon) startSession() *monSession {
	if m.cur != nil {
		m.cur.ended = true
	}
	e := max(uint64(m.now.UnixNano()), m.epoch+1)
	m.epoch = e
	s := &monSession{
		key: monKey(string(m.self), e), origin: string(m.self), epoch: e, root: true,
		ttl: uint32(m.cfg.ConstructionTTL), created: m.now, active: m.now, next: 1,
		candidates: m.shuffled(),
	}
	m.insert(s)
	m.cur = s
	m.explore(s)
	return s
}

// explore asks untried neighbours to join until the node has Fanout children or
// outstanding requests, or nobody is left to ask.
func (m *Mon) explore(s *monSession) {
	if s.ttl == 0 {
		s.candidates = nil
	}
	for len(s.children)+len(s.pending) < m.cfg.Fanout && len(s.candidates) > 0 {
		c := s.candidates[0]
		s.candidates = s.candidates[1:]
		s.pending = append(s.pending, &monCand{id: c})
		m.sendSession(s, c)
	}
}

func (m *Mon) sendSession(s *monSession, to peer.ID) {
	m.send(to, &MonMessage_Session{Session: &MonSession{Id: s.wireID(), Level: s.level, Ttl: s.ttl}})
	m.setTimer(monTimerReply, to, s.key, m.cfg.ReplyTimeout)
}

func (m *Mon) reply(to peer.ID, id *MonSessionID, accept bool) {
	m.send(to, &MonMessage_Reply{Reply: &MonReply{Id: &MonSessionID{Origin: id.GetOrigin(), Epoch: id.GetEpoch()}, Accept: accept}})
}

func (m *Mon) onSession(from peer.ID, msg *MonSession) {
	origin, epoch, ok := monParseID(msg.GetId())
	if !ok {
		return
	}
	if origin == string(m.self) {
		m.reply(from, msg.GetId(), false)
		return
	}
	key := monKey(origin, epoch)
	if s := m.sessions[key]; s != nil {
		// Already in: accept again only the parent (its request or our answer was lost).
		m.reply(from, msg.GetId(), !s.root && s.parent == from)
		return
	}
	for _, x := range m.order {
		if x.origin == origin && x.epoch > epoch {
			m.reply(from, msg.GetId(), false) // a stale session
			return
		}
	}
	ttl := min(msg.GetTtl(), uint32(m.cfg.ConstructionTTL))
	if ttl > 0 {
		ttl--
	}
	s := &monSession{
		key: key, origin: origin, epoch: epoch, parent: from,
		level: min(msg.GetLevel(), 1<<16) + 1, ttl: ttl, created: m.now, active: m.now,
		candidates: m.shuffled(from, peer.ID(origin)),
	}
	m.insert(s)
	m.reply(from, msg.GetId(), true)
	m.explore(s)
	m.gc(s)
}

func (m *Mon) onReply(from peer.ID, msg *MonReply) {
	s := m.lookup(msg.GetId())
	if s == nil {
		return
	}
	i := s.pendingIndex(from)
	if i < 0 {
		if msg.GetAccept() && s.child(from) == nil {
			// A late answer from a peer given up on: it took us as its parent.
			if len(s.children) < m.cfg.Fanout {
				m.adopt(s, from)
			} else {
				m.reportBreak(s, 1)
			}
			m.gc(s)
		}
		return
	}
	s.pending = slices.Delete(s.pending, i, i+1)
	m.cancelTimer(monTimerReply, from, s.key)
	if msg.GetAccept() {
		m.adopt(s, from)
	}
	m.explore(s)
	m.gc(s)
}

// adopt makes p a child and sends it what the session carried so far.
func (m *Mon) adopt(s *monSession, p peer.ID) {
	c := &monChild{id: p}
	s.children = append(s.children, c)
	if len(s.log) > 0 {
		m.push(s, c, s.log)
	}
	if s.trimmed {
		m.reportBreak(s, 1) // the child missed broadcasts no longer kept here
	}
}

func (m *Mon) replyTimer(s *monSession, p peer.ID) {
	i := s.pendingIndex(p)
	if i < 0 {
		return
	}
	if c := s.pending[i]; c.tries < m.cfg.Retries {
		c.tries++
		m.sendSession(s, p)
		return
	}
	s.pending = slices.Delete(s.pending, i, i+1)
	m.explore(s)
	m.gc(s)
}

// --- broadcasts ---

func (m *Mon) publish(b *Broadcast) {
	id := BroadcastID(b)
	if m.isSeen(id) {
		return
	}
	m.markSeen(id)
	s := m.rootSession()
	idx := s.next
	s.next++
	if len(m.recent) >= m.cfg.Window {
		m.recent = m.recent[1:]
	}
	m.recent = append(m.recent, monRecent{b: b, epoch: s.epoch, index: idx})
	m.forward(s, []monEntry{{index: idx, b: b}})
	m.gc(s)
}

// rootSession returns the node's own session for a new broadcast, starting one if it
// has none alive.
func (m *Mon) rootSession() *monSession {
	s := m.cur
	if s == nil || s.ended || m.now.Sub(s.created) >= m.cfg.Lifetime {
		s = m.startSession()
	}
	s.active = m.now
	return s
}

// forward keeps entries in the session's log and sends them to every child.
func (m *Mon) forward(s *monSession, entries []monEntry) {
	s.log = append(s.log, entries...)
	var slow []*monChild
	for len(s.log) > m.cfg.Window {
		e := s.log[0]
		s.log = s.log[1:]
		s.trimmed = true
		for _, c := range s.children {
			if !slices.Contains(slow, c) && c.unacked(e.index) {
				slow = append(slow, c)
			}
		}
	}
	for _, c := range slices.Clone(s.children) {
		if slices.Contains(slow, c) || !m.push(s, c, entries) {
			m.childFailed(s, c)
		}
	}
}

// push sends entries to child c and records them; false if c lags more than Window
// unacknowledged broadcasts behind.
func (m *Mon) push(s *monSession, c *monChild, entries []monEntry) bool {
	for _, e := range entries {
		c.sent = append(c.sent, monSent{index: e.index, at: m.now})
	}
	m.sendPush(s, c, entries)
	m.trimSent(c)
	for len(c.sent) > m.cfg.Window {
		if !c.sent[0].acked {
			return false
		}
		c.sent = c.sent[1:]
	}
	return true
}

// sendPush sends entries to c in as few PUSH messages as MaxBytes allows (one entry at
// least per message, whatever its size).
func (m *Mon) sendPush(s *monSession, c *monChild, entries []monEntry) {
	for len(entries) > 0 {
		p := &MonPush{Id: s.wireID(), Hops: s.level + 1}
		bytes := 0
		for len(entries) > 0 {
			size := len(entries[0].b.GetPayload())
			if len(p.Entries) > 0 && bytes+size > m.cfg.MaxBytes {
				break
			}
			bytes += size
			p.Entries = append(p.Entries, &MonEntry{Index: entries[0].index, Broadcast: entries[0].b})
			entries = entries[1:]
		}
		m.send(c.id, &MonMessage_Push{Push: p})
	}
	if !c.armed {
		c.armed = true
		m.setTimer(monTimerAck, c.id, s.key, m.cfg.AckTimeout)
	}
}

func (c *monChild) unacked(index uint64) bool {
	return slices.ContainsFunc(c.sent, func(r monSent) bool { return r.index == index && !r.acked })
}

// grace is how long after acknowledging a broadcast a child may still be passing it on
// to its own children (they answer within a round trip unless messages are lost), plus
// time to notice the child's failure. A child that fails within grace of receiving a
// broadcast is assumed to have left its branch without it.
func (m *Mon) grace() time.Duration {
	return 2 * m.cfg.AckTimeout
}

// trimSent forgets the acknowledged records older than grace.
func (m *Mon) trimSent(c *monChild) {
	cut := m.now.Add(-m.grace())
	c.sent = slices.DeleteFunc(c.sent, func(r monSent) bool { return r.acked && r.at.Before(cut) })
}

func (m *Mon) onPush(from peer.ID, msg *MonPush) {
	origin, epoch, ok := monParseID(msg.GetId())
	if !ok {
		return
	}
	entries := msg.GetEntries()
	if len(entries) > m.cfg.Window {
		entries = entries[:m.cfg.Window]
	}
	s := m.sessions[monKey(origin, epoch)]
	if s == nil || s.root || s.parent != from {
		// Not the sender's child (any more): deliver, and tell it to drop us.
		for _, e := range entries {
			if b := e.GetBroadcast(); b != nil {
				m.deliver(b, msg.GetHops())
			}
		}
		m.send(from, &MonMessage_Ack{Ack: &MonAck{Id: &MonSessionID{Origin: []byte(origin), Epoch: epoch}, NoSession: true}})
		return
	}
	s.active = m.now
	var acks []uint64
	var fresh []monEntry
	for _, e := range entries {
		idx, b := e.GetIndex(), e.GetBroadcast()
		if idx == 0 || b == nil {
			continue
		}
		acks = append(acks, idx)
		if s.has(idx) {
			continue // a resend: our ACK was lost
		}
		s.mark(idx, m.cfg.Window)
		m.deliver(b, s.level)
		fresh = append(fresh, monEntry{index: idx, b: b})
	}
	if len(acks) > 0 {
		m.send(from, &MonMessage_Ack{Ack: &MonAck{Id: s.wireID(), Indices: acks}})
	}
	if len(fresh) > 0 {
		m.forward(s, fresh)
	}
	m.gc(s)
}

func (m *Mon) deliver(b *Broadcast, round uint32) {
	id := BroadcastID(b)
	if m.isSeen(id) {
		return
	}
	m.markSeen(id)
	m.out = append(m.out, Delivered{ID: id, Broadcast: b, Round: round})
}

func (m *Mon) onAck(from peer.ID, msg *MonAck) {
	s := m.lookup(msg.GetId())
	if s == nil {
		return
	}
	c := s.child(from)
	if c == nil {
		return
	}
	if msg.GetNoSession() {
		m.childFailed(s, c)
		m.gc(s)
		return
	}
	idx := msg.GetIndices()
	if len(idx) > m.cfg.Window {
		idx = idx[:m.cfg.Window]
	}
	for _, i := range idx {
		for k := range c.sent {
			if c.sent[k].index == i {
				c.sent[k].acked = true
			}
		}
	}
	m.gc(s)
}

// ackTimer resends what child p has not acknowledged, or gives p up.
func (m *Mon) ackTimer(s *monSession, p peer.ID) {
	c := s.child(p)
	if c == nil {
		return
	}
	c.armed = false
	var again []monEntry
	var next time.Duration
	for k := range c.sent {
		r := &c.sent[k]
		if r.acked {
			continue
		}
		if wait := r.at.Add(m.cfg.AckTimeout).Sub(m.now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		i := slices.IndexFunc(s.log, func(e monEntry) bool { return e.index == r.index })
		if r.tries >= m.cfg.Retries || i < 0 {
			m.childFailed(s, c)
			m.gc(s)
			return
		}
		r.tries++
		r.at = m.now
		again = append(again, s.log[i])
	}
	if len(again) > 0 {
		m.sendPush(s, c, again) // arms the timer
	} else if next > 0 {
		c.armed = true
		m.setTimer(monTimerAck, p, s.key, next)
	}
}

// --- failures ---

// childFailed drops child c and reports the first index its branch may lack.
func (m *Mon) childFailed(s *monSession, c *monChild) {
	i := slices.Index(s.children, c)
	if i < 0 {
		return
	}
	s.children = slices.Delete(s.children, i, i+1)
	if c.armed {
		m.cancelTimer(monTimerAck, c.id, s.key)
	}
	from := s.nextIndex()
	cut := m.now.Add(-m.grace())
	for _, r := range c.sent {
		if (!r.acked || !r.at.Before(cut)) && r.index < from {
			from = r.index
		}
	}
	m.reportBreak(s, from)
}

// reportBreak sends BREAK up the tree, once per lower index; at the root it ends the
// session.
func (m *Mon) reportBreak(s *monSession, from uint64) {
	if from == 0 {
		from = 1
	}
	if s.breakFrom != 0 && from >= s.breakFrom {
		return
	}
	s.breakFrom = from
	switch {
	case s.root:
		m.rootBreak(s, from)
	case s.parent != "":
		m.send(s.parent, &MonMessage_Break{Break: &MonBreak{Id: s.wireID(), From: from}})
	}
}

func (m *Mon) onBreak(from peer.ID, msg *MonBreak) {
	s := m.lookup(msg.GetId())
	if s == nil || s.child(from) == nil {
		return
	}
	m.reportBreak(s, msg.GetFrom())
}

// rootBreak ends the session s of this node and sends what the broken branch may lack
// again, over a new session.
func (m *Mon) rootBreak(s *monSession, from uint64) {
	s.ended = true
	if m.cur == s {
		m.cur = nil
	}
	var idx []int
	for i, r := range m.recent {
		if r.epoch == s.epoch && r.index >= from {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return // the next broadcast builds a new tree
	}
	ns := m.rootSession()
	entries := make([]monEntry, 0, len(idx))
	for _, i := range idx {
		r := &m.recent[i]
		r.epoch, r.index = ns.epoch, ns.next
		ns.next++
		entries = append(entries, monEntry{index: r.index, b: r.b})
	}
	m.forward(ns, entries)
	m.gc(ns)
}

func (m *Mon) peerDown(q peer.ID) {
	m.neigh = slices.DeleteFunc(m.neigh, func(x peer.ID) bool { return x == q })
	for _, s := range slices.Clone(m.order) {
		if m.sessions[s.key] != s {
			continue // forgotten meanwhile
		}
		s.candidates = slices.DeleteFunc(s.candidates, func(x peer.ID) bool { return x == q })
		if i := s.pendingIndex(q); i >= 0 {
			s.pending = slices.Delete(s.pending, i, i+1)
			m.cancelTimer(monTimerReply, q, s.key)
			m.explore(s)
		}
		if c := s.child(q); c != nil {
			m.childFailed(s, c)
		}
		if s.parent == q {
			s.parent = ""
		}
		m.gc(s)
	}
}

// neighbours applies the membership's new neighbour set; those gone are down.
func (m *Mon) neighbours(peers []peer.ID) {
	var next []peer.ID
	for _, q := range peers {
		if q != m.self && q != "" && !slices.Contains(next, q) {
			next = append(next, q)
		}
	}
	// Tree edges of live sessions stay: in MON a session's links are its own, and a
	// peer that left the membership's view (as Newscast's views change every cycle) is
	// not thereby dead. Failures come as PeerDown, unanswered PUSHes or NOSESSION.
	fresh := slices.DeleteFunc(slices.Clone(next), func(q peer.ID) bool { return slices.Contains(m.neigh, q) })
	m.neigh = next
	// A new neighbour may have been nobody's neighbour when a live session's tree was
	// built (a node that joined since, or one the views left out): invite it to the
	// sessions this node is in, within Fanout. One already in a session refuses.
	for _, s := range slices.Clone(m.order) {
		if m.sessions[s.key] != s || s.ended || s.ttl == 0 || (!s.root && s.parent == "") ||
			m.now.Sub(s.active) >= m.cfg.Lifetime {
			continue
		}
		for _, q := range fresh {
			if string(q) != s.origin && q != s.parent && s.child(q) == nil && s.pendingIndex(q) < 0 && !slices.Contains(s.candidates, q) {
				s.candidates = append(s.candidates, q)
			}
		}
		m.explore(s)
	}
}

// gc forgets, once the node's construction is over, the broadcasts no child needs; and
// ends the node's own session if nobody joined it.
func (m *Mon) gc(s *monSession) {
	if m.sessions[s.key] != s || len(s.pending) > 0 {
		return
	}
	for _, c := range s.children {
		m.trimSent(c)
	}
	for len(s.log) > 0 && !slices.ContainsFunc(s.children, func(c *monChild) bool { return c.unacked(s.log[0].index) }) {
		s.log = s.log[1:]
		s.trimmed = true
	}
	if s.root && len(s.children) == 0 {
		s.ended = true
		if m.cur == s {
			m.cur = nil
		}
	}
}

func (m *Mon) timer(t protocols.Timer) {
	s := m.sessions[t.Key]
	if s == nil {
		return
	}
	switch t.Kind {
	case monTimerExpire:
		if idle := m.now.Sub(s.active); idle >= m.cfg.Lifetime {
			m.drop(s)
		} else {
			m.setTimer(monTimerExpire, "", s.key, m.cfg.Lifetime-idle)
		}
	case monTimerReply:
		m.replyTimer(s, t.Peer)
	case monTimerAck:
		m.ackTimer(s, t.Peer)
	}
}

// --- delivered ids ---

func (m *Mon) isSeen(id []byte) bool {
	_, ok := m.seen[string(id)]
	return ok
}

func (m *Mon) markSeen(id []byte) {
	if len(m.seenFIFO) >= m.cfg.Seen {
		delete(m.seen, m.seenFIFO[0])
		m.seenFIFO = m.seenFIFO[1:]
	}
	m.seen[string(id)] = struct{}{}
	m.seenFIFO = append(m.seenFIFO, string(id))
}

// MonMessage is Mon's wire message.
var _ Carrier = (*MonMessage)(nil)

// Broadcasts implements Carrier.
func (m *MonMessage) Broadcasts() []*Broadcast {
	var out []*Broadcast
	for _, e := range m.GetPush().GetEntries() {
		if b := e.GetBroadcast(); b != nil {
			out = append(out, b)
		}
	}
	return out
}

// Kind implements Carrier.
func (m *MonMessage) Kind() string {
	switch b := m.GetBody().(type) {
	case *MonMessage_Session:
		return "SESSION"
	case *MonMessage_Reply:
		if b.Reply.GetAccept() {
			return "ACCEPT"
		}
		return "REJECT"
	case *MonMessage_Push:
		return "PUSH"
	case *MonMessage_Ack:
		if b.Ack.GetNoSession() {
			return "NOSESSION"
		}
		return "ACK"
	case *MonMessage_Break:
		return "BREAK"
	}
	return "UNKNOWN"
}
