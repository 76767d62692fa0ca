package dissemination

//go:generate protoc --go_out=. --go_opt=paths=source_relative brisa.proto

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Brisa is the one-to-many dissemination protocol of Matos, Schiavoni, Felber, Oliveira
// and Rivière, "BRISA: Combining Efficiency and Reliability in Epidemic Data
// Dissemination", IEEE IPDPS 2012.
//
// It runs over a membership's neighbours (HyParView in the paper) and lets a
// dissemination structure per source emerge from the first flood. Every link starts
// active: a node forwards each broadcast it receives for the first time to all its
// neighbours but the sender. A node that receives a copy from a neighbour it has not
// picked as a parent deactivates that link (DEACTIVATE: the neighbour stops pushing
// that source's broadcasts to it), so only the links from the parents stay active: a
// tree (Mode BrisaTree, one parent) or a DAG (BrisaDAG, Parents parents). Parents are
// picked by the strategy: first-come first-picked (the first neighbours to deliver are
// kept) or delay-aware (a neighbour with a lower round-trip time replaces a parent).
//
// Cycles are avoided in two ways. A node forwards a broadcast as DATA only if it came
// from one of its parents (otherwise as REPLAY, which never makes a parent), so every
// DATA has travelled down a chain of parents, and a node without parent can take the
// first neighbour that pushes it a broadcast it lacks: that neighbour cannot be its
// descendant. A node that already has a parent takes another (DAG) or swaps (delay-
// aware) only for a neighbour whose level (hops from the source, carried by every
// push) is below its own.
//
// When its last parent fails or leaves (Neighbours, PeerDown), a node reactivates its
// links (REACTIVATE to every neighbour), the first to push a fresh broadcast becomes
// the parent, and the duplicates deactivate the rest as in the first flood; a DAG node
// that loses one of its parents reactivates the links it had deactivated. Nothing is
// lost across the repair: REACTIVATE carries the last sequence number the node holds of
// that source, and neighbours replay what they hold beyond it; a node that sees a gap in
// a source's sequence numbers pulls the missing ones (PULL).
//
// Deviations (see docs/dissemination-brisa.md):
//   - Ours, for loss (the paper relies on TCP): gap detection on per-origin sequence
//     numbers, PULL/REPLAY with retries backing off and alternating between the parent
//     and another neighbour, the REPLAY answer to REACTIVATE, repeated REACTIVATE.
//   - Ours: a node still without parent after RepairTimeout reactivates again with
//     detached set, and its children look for another parent (all its neighbours may be
//     in its own subtree). A DAG node that lost every parent sets detached at once.
//   - The DATA/REPLAY split and the level rule are our reading of the paper's cycle
//     avoidance.
//   - Delay-aware measures the round-trip time of each new neighbour once, with
//     PING/PONG, and swaps a parent only for a strictly faster eligible neighbour.
//   - Every state is bounded: sources tracked (MaxSources, least recently used
//     forgotten, one's own stream last), per source a window of sequence numbers seen
//     (Window; older ones count as seen), broadcasts kept for replays (Cache) and
//     missing sequence numbers chased (Missing).
//   - Duplicates are recognised by (origin, seq): a second broadcast with the same
//     origin and seq is dropped. Nobody pushes a broadcast back to its origin. The node
//     does not deliver its own broadcasts to itself.
type Brisa struct {
	cfg  BrisaConfig
	rng  *rand.Rand
	self peer.ID

	neighbours []peer.ID
	rtt        map[peer.ID]time.Duration
	pings      map[peer.ID]brisaPing

	origins map[string]*brisaOrigin
	order   []string // tracked origins, least recently used first

	now  time.Time // of the input being handled
	left bool
	out  []protocols.Output
}

// BrisaMode chooses the structure each source's broadcasts follow.
type BrisaMode uint8

const (
	// BrisaTree keeps one parent per node: a spanning tree per source (the default).
	BrisaTree BrisaMode = iota
	// BrisaDAG keeps up to BrisaConfig.Parents parents per node.
	BrisaDAG
)

// BrisaStrategy chooses which neighbours become parents.
type BrisaStrategy uint8

const (
	// BrisaFirstCome keeps the first neighbours that deliver a source's broadcast
	// (the paper's first-come first-picked; the default).
	BrisaFirstCome BrisaStrategy = iota
	// BrisaDelayAware prefers the neighbours with the lowest round-trip time.
	BrisaDelayAware
)

// BrisaConfig holds Brisa's parameters; a zero field means its default.
type BrisaConfig struct {
	// Mode is BrisaTree (default) or BrisaDAG.
	Mode BrisaMode
	// Parents is the number of parents per node in DAG mode; 0 means 2. In tree mode it
	// must be 0 or 1.
	Parents int
	// Strategy is BrisaFirstCome (default) or BrisaDelayAware.
	Strategy BrisaStrategy
	// RepairTimeout is how long a node that lost every parent waits for a fresh push
	// before it reactivates its links again, detached (its children look elsewhere);
	// 0 means 1 s (several round trips: a broadcast stream is expected to be busier).
	RepairTimeout time.Duration
	// RepairRetries bounds the repeated REACTIVATE rounds of one repair; 0 means 3.
	RepairRetries int
	// PullTimeout is how long a missing broadcast is waited for before it is pulled
	// (copies may be reordered), and the first wait for an answer; later waits double
	// up to 16 x. 0 means 500 ms.
	PullTimeout time.Duration
	// PullRetries bounds the PULLs sent for one missing broadcast; 0 means 6.
	PullRetries int
	// MaxSources bounds the sources (origins) whose structure is tracked; 0 means 32.
	MaxSources int
	// Window is how many sequence numbers below a source's highest are remembered to
	// recognise duplicates (older ones count as seen); 0 means 4,096.
	Window int
	// Cache bounds the broadcasts kept per source to answer PULL and REACTIVATE; 0
	// means 256.
	Cache int
	// Missing bounds the missing sequence numbers chased per source (and the
	// broadcasts replayed per PULL or REACTIVATE); 0 means 256.
	Missing int
}

// WithDefaults returns the config with every zero field set to its default.
func (c BrisaConfig) WithDefaults() BrisaConfig {
	if c.Parents == 0 {
		c.Parents = 1
		if c.Mode == BrisaDAG {
			c.Parents = 2
		}
	}
	if c.RepairTimeout == 0 {
		c.RepairTimeout = time.Second
	}
	if c.RepairRetries == 0 {
		c.RepairRetries = 3
	}
	if c.PullTimeout == 0 {
		c.PullTimeout = 500 * time.Millisecond
	}
	if c.PullRetries == 0 {
		c.PullRetries = 6
	}
	if c.MaxSources == 0 {
		c.MaxSources = 32
	}
	if c.Window == 0 {
		c.Window = 4096
	}
	if c.Cache == 0 {
		c.Cache = 256
	}
	if c.Missing == 0 {
		c.Missing = 256
	}
	return c
}

// Validate says which field is wrong, if any.
func (c BrisaConfig) Validate() error {
	bad := func(field, reason string) error {
		return &protocols.ConfigError{Field: "BrisaConfig." + field, Reason: reason}
	}
	switch {
	case c.Mode > BrisaDAG:
		return bad("Mode", "must be BrisaTree or BrisaDAG")
	case c.Strategy > BrisaDelayAware:
		return bad("Strategy", "must be BrisaFirstCome or BrisaDelayAware")
	case c.Parents < 0:
		return bad("Parents", "must not be negative")
	case c.Mode == BrisaTree && c.Parents > 1:
		return bad("Parents", "must be 0 or 1 in tree mode (use BrisaDAG for more)")
	case c.Parents > 16:
		return bad("Parents", "must be at most 16")
	case c.RepairTimeout < 0:
		return bad("RepairTimeout", "must not be negative")
	case c.PullTimeout < 0:
		return bad("PullTimeout", "must not be negative")
	case c.RepairRetries < 0:
		return bad("RepairRetries", "must not be negative")
	case c.PullRetries < 0:
		return bad("PullRetries", "must not be negative")
	case c.MaxSources < 0:
		return bad("MaxSources", "must not be negative")
	case c.Window < 0:
		return bad("Window", "must not be negative")
	case c.Window > 1<<20:
		return bad("Window", "must be at most 1,048,576")
	case c.Cache < 0:
		return bad("Cache", "must not be negative")
	case c.Missing < 0:
		return bad("Missing", "must not be negative")
	}
	if d := c.WithDefaults(); d.Cache > d.Window {
		return bad("Cache", "must not exceed Window")
	} else if d.Missing > d.Window {
		return bad("Missing", "must not exceed Window")
	}
	return nil
}

const (
	timerBrisaRepair uint8 = iota + 40
	timerBrisaPull
)

// maxOriginLen bounds the origin bytes accepted from the wire (a peer ID is ~40).
const maxOriginLen = 128

// brisaOrigin is the state of one source's structure.
type brisaOrigin struct {
	key string
	own bool // this node is the source

	parents []brisaParent
	level   uint32 // hops of the parents' pushes (the highest); 0 before the first
	pushed  uint32 // level announced in the last push sent (hops - 1)
	hasPush bool

	orphan  bool // every parent lost: repairing
	repairs int  // REACTIVATE rounds of this repair after the first

	inactiveOut []peer.ID // neighbours that asked us to stop pushing
	deactivated []peer.ID // neighbours we asked to stop pushing

	seen     seqWindow
	floor    uint64 // nothing older is chased: the predecessor of the first seen
	sparse   bool   // a broadcast named a predecessor other than seq - 1
	cache    map[uint64]brisaCopy
	cacheFIF []uint64

	missing   []brisaMissing // sorted by seq
	lastFrom  peer.ID        // sender of the last DATA
	pullArmed bool
	pullAt    time.Time // when the armed pull timer fires
	pullFires int
}

type brisaParent struct {
	id   peer.ID
	hops uint32 // hops of its last push
}

type brisaMissing struct {
	seq   uint64
	pulls int       // PULLs sent for it so far
	due   time.Time // when to pull it (again)
}

// brisaCopy is a broadcast as received (and kept for replays): the hops it made, and
// the seq of the origin's previous broadcast if known.
type brisaCopy struct {
	b       *Broadcast
	hops    uint32
	prev    uint64
	hasPrev bool
}

type brisaPing struct {
	nonce uint64
	at    time.Time
}

// NewBrisa returns a Brisa core for node self.
func NewBrisa(self peer.ID, cfg BrisaConfig, rng *rand.Rand) (*Brisa, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return &Brisa{
		cfg: cfg.WithDefaults(), rng: rng, self: self,
		rtt: map[peer.ID]time.Duration{}, pings: map[peer.ID]brisaPing{},
		origins: map[string]*brisaOrigin{},
	}, nil
}

// Parents returns the node's current parents in the structure of origin's broadcasts.
func (p *Brisa) Parents(origin peer.ID) []peer.ID {
	st := p.origins[string(origin)]
	if st == nil {
		return nil
	}
	out := make([]peer.ID, len(st.parents))
	for i, pa := range st.parents {
		out[i] = pa.id
	}
	return out
}

// Level returns the node's level (hops from the source) in origin's structure, 0 if
// unknown.
func (p *Brisa) Level(origin peer.ID) uint32 {
	if st := p.origins[string(origin)]; st != nil {
		return st.level
	}
	return 0
}

// Sources returns how many sources' structures the node tracks.
func (p *Brisa) Sources() int { return len(p.order) }

// Handle implements protocols.Core.
func (p *Brisa) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if p.left {
		return nil
	}
	p.out = p.out[:0]
	p.now = now
	switch v := in.(type) {
	case protocols.Neighbours:
		p.setNeighbours(now, v.Peers)
	case protocols.Call:
		if pub, ok := v.Req.(Publish); ok && pub.Broadcast != nil {
			p.publish(pub.Broadcast)
		}
	case protocols.Receive:
		if m, ok := v.Msg.(*BrisaMessage); ok && m != nil && v.From != p.self && v.From != "" {
			p.receive(now, v.From, m)
		}
	case protocols.TimerFired:
		switch v.Timer.Kind {
		case timerBrisaRepair:
			p.repairTimer(v.Timer.Key)
		case timerBrisaPull:
			p.pullTimer(v.Timer.Key)
		}
	case protocols.PeerDown:
		if i := slices.Index(p.neighbours, v.Peer); i >= 0 {
			p.neighbours = slices.Delete(p.neighbours, i, i+1)
		}
		p.forget(v.Peer)
	case protocols.Leave:
		for _, key := range p.order {
			p.cancelTimers(p.origins[key])
		}
		p.left = true
	}
	return p.out
}

func (p *Brisa) send(to peer.ID, m *BrisaMessage) {
	p.out = append(p.out, protocols.Send{To: to, Msg: m})
}

func (p *Brisa) isNeighbour(q peer.ID) bool { return slices.Contains(p.neighbours, q) }

// setNeighbours applies the membership's new neighbour set: links to newcomers start
// active in both directions; those gone are forgotten, and structures that lost a
// parent repair.
func (p *Brisa) setNeighbours(now time.Time, peers []peer.ID) {
	var gone []peer.ID
	for _, q := range p.neighbours {
		if !slices.Contains(peers, q) {
			gone = append(gone, q)
		}
	}
	for _, q := range gone {
		p.neighbours = remove(p.neighbours, q)
	}
	for _, q := range gone {
		p.forget(q)
	}
	for _, q := range peers {
		if q == p.self || q == "" || p.isNeighbour(q) {
			continue
		}
		p.neighbours = append(p.neighbours, q)
		if p.cfg.Strategy == BrisaDelayAware {
			nonce := p.rng.Uint64()
			p.pings[q] = brisaPing{nonce: nonce, at: now}
			p.send(q, &BrisaMessage{Body: &BrisaMessage_Ping{Ping: &BrisaPing{Nonce: nonce}}})
		}
	}
}

// forget drops q from every structure (it is no neighbour any more); a structure that
// loses a parent repairs.
func (p *Brisa) forget(q peer.ID) {
	delete(p.rtt, q)
	delete(p.pings, q)
	for _, key := range p.order {
		st := p.origins[key]
		st.inactiveOut = remove(st.inactiveOut, q)
		st.deactivated = remove(st.deactivated, q)
		if i := st.parentIndex(q); i >= 0 {
			st.parents = slices.Delete(st.parents, i, i+1)
			p.parentLost(st)
		}
	}
}

// parentLost repairs a structure that lost a parent: with none left, the node
// reactivates every link; with some left (DAG), the links it had deactivated.
func (p *Brisa) parentLost(st *brisaOrigin) {
	if len(st.parents) > 0 {
		st.updateLevel()
		for _, q := range st.deactivated {
			p.reactivate(st, q, true, false)
		}
		st.deactivated = st.deactivated[:0]
		return
	}
	st.orphan, st.repairs = true, 0
	// In a DAG, children have other parents: they let go of this one at once, so
	// that it can take any neighbour without closing a cycle.
	p.reactivateAll(st, p.cfg.Mode == BrisaDAG)
}

// reactivateAll asks every neighbour to push again (and to replay what we lack).
// detached also asks the nodes whose parent we are to find another: all our neighbours
// may be in our own subtree, which would otherwise never hear of a broadcast again.
func (p *Brisa) reactivateAll(st *brisaOrigin, detached bool) {
	st.deactivated = st.deactivated[:0]
	for _, q := range p.neighbours {
		p.reactivate(st, q, true, detached)
	}
	p.out = append(p.out, protocols.SetTimer{Timer: protocols.Timer{Kind: timerBrisaRepair, Key: st.key}, After: p.cfg.RepairTimeout})
}

func (p *Brisa) reactivate(st *brisaOrigin, q peer.ID, withLast, detached bool) {
	r := &BrisaReactivate{Origin: []byte(st.key), Detached: detached}
	if withLast && st.seen.init {
		r.Last, r.HasLast = st.seen.high, true
	}
	p.send(q, &BrisaMessage{Body: &BrisaMessage_Reactivate{Reactivate: r}})
}

// repairTimer: no fresh push came within RepairTimeout; ask again, now detached.
func (p *Brisa) repairTimer(key string) {
	st := p.origins[key]
	if st == nil || !st.orphan {
		return
	}
	st.repairs++
	if st.repairs <= p.cfg.RepairRetries {
		p.reactivateAll(st, true)
	}
}

func (p *Brisa) publish(b *Broadcast) {
	if peer.ID(b.GetOrigin()) != p.self {
		return // not ours: makes no sense
	}
	st := p.originState(string(p.self))
	if st.seen.has(b.GetSeq()) {
		return
	}
	st.own = true
	c := brisaCopy{b: b, prev: st.seen.high, hasPrev: st.seen.init && st.seen.high < b.GetSeq()}
	p.remember(st, c)
	p.forward(st, c, "", false)
}

// originState returns origin's state, creating it (and forgetting the least recently
// used other source beyond MaxSources); either way it becomes the most recently used.
func (p *Brisa) originState(key string) *brisaOrigin {
	if st := p.origins[key]; st != nil {
		if i := slices.Index(p.order, key); i >= 0 && i != len(p.order)-1 {
			p.order = append(slices.Delete(p.order, i, i+1), key)
		}
		return st
	}
	if len(p.order) >= p.cfg.MaxSources {
		victim := 0
		if p.origins[p.order[0]].own && len(p.order) > 1 {
			victim = 1
		}
		old := p.origins[p.order[victim]]
		p.cancelTimers(old)
		delete(p.origins, old.key)
		p.order = slices.Delete(p.order, victim, victim+1)
	}
	st := &brisaOrigin{key: key, cache: map[uint64]brisaCopy{}}
	st.seen.n = uint64(p.cfg.Window)
	p.origins[key] = st
	p.order = append(p.order, key)
	return st
}

func (p *Brisa) cancelTimers(st *brisaOrigin) {
	if st.orphan {
		p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerBrisaRepair, Key: st.key}})
	}
	if st.pullArmed {
		p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerBrisaPull, Key: st.key}})
	}
}

func (p *Brisa) receive(now time.Time, from peer.ID, m *BrisaMessage) {
	switch b := m.GetBody().(type) {
	case *BrisaMessage_Data:
		d := b.Data
		p.onData(from, brisaCopy{b: d.GetBroadcast(), hops: d.GetHops(), prev: d.GetPrev(), hasPrev: d.GetHasPrev()})
	case *BrisaMessage_Replay:
		r := b.Replay
		p.onReplay(from, brisaCopy{b: r.GetBroadcast(), hops: r.GetHops(), prev: r.GetPrev(), hasPrev: r.GetHasPrev()})
	case *BrisaMessage_Deactivate:
		if st := p.tracked(b.Deactivate.GetOrigin()); st != nil && p.isNeighbour(from) && !slices.Contains(st.inactiveOut, from) {
			st.inactiveOut = append(st.inactiveOut, from)
		}
	case *BrisaMessage_Reactivate:
		p.onReactivate(from, b.Reactivate)
	case *BrisaMessage_Pull:
		p.onPull(from, b.Pull)
	case *BrisaMessage_Ping:
		if p.isNeighbour(from) {
			p.send(from, &BrisaMessage{Body: &BrisaMessage_Pong{Pong: &BrisaPong{Nonce: b.Ping.GetNonce()}}})
		}
	case *BrisaMessage_Pong:
		if pg, ok := p.pings[from]; ok && pg.nonce == b.Pong.GetNonce() {
			delete(p.pings, from)
			p.rtt[from] = now.Sub(pg.at)
		}
	}
}

// tracked returns the state of a source named on the wire, without creating one.
func (p *Brisa) tracked(origin []byte) *brisaOrigin {
	if len(origin) == 0 || len(origin) > maxOriginLen {
		return nil
	}
	return p.origins[string(origin)]
}

// sane checks a broadcast from the wire and clamps its hop count.
func (c *brisaCopy) sane() bool {
	if c.b == nil || len(c.b.GetOrigin()) == 0 || len(c.b.GetOrigin()) > maxOriginLen {
		return false
	}
	c.hops = min(max(c.hops, 1), math.MaxUint32/2)
	c.hasPrev = c.hasPrev && c.prev < c.b.GetSeq()
	return true
}

func (p *Brisa) onData(from peer.ID, c brisaCopy) {
	if !c.sane() {
		return
	}
	b, hops := c.b, c.hops
	if peer.ID(b.GetOrigin()) == p.self {
		// Our own broadcast came back: that link is redundant.
		p.send(from, brisaDeactivate(b.GetOrigin()))
		return
	}
	st := p.originState(string(b.GetOrigin()))
	seq := b.GetSeq()
	fresh := !st.seen.has(seq)
	if fresh {
		p.remember(st, c)
		st.lastFrom = from
	}
	p.choose(st, from, hops, fresh)
	if fresh {
		p.forward(st, c, from, st.parentIndex(from) < 0)
	}
}

// choose applies the parent-selection strategy to a push from q that reached this node
// with the given hops.
func (p *Brisa) choose(st *brisaOrigin, q peer.ID, hops uint32, fresh bool) {
	if !p.isNeighbour(q) {
		p.send(q, brisaDeactivate([]byte(st.key)))
		return
	}
	if i := st.parentIndex(q); i >= 0 {
		st.parents[i].hops = hops
		st.updateLevel()
		return
	}
	if len(st.parents) == 0 {
		// First come, first picked. DATA only travels from parent to child (see
		// forward), so its path is a chain of parents that cannot contain this node,
		// which lacked the broadcast: the pusher of a fresh broadcast is never a
		// descendant. Other pushes leave the link open until a fresh one comes.
		if fresh {
			p.adopt(st, q, hops)
		}
		return
	}
	if len(st.parents) < p.cfg.Parents && p.eligible(st, hops) {
		p.adopt(st, q, hops)
		return
	}
	if p.cfg.Strategy == BrisaDelayAware && len(st.parents) > 0 && p.eligible(st, hops) {
		worst, wr := -1, time.Duration(0)
		for i, pa := range st.parents {
			if r, ok := p.rtt[pa.id]; ok && r > wr {
				worst, wr = i, r
			}
		}
		if r, ok := p.rtt[q]; ok && worst >= 0 && r < wr {
			old := st.parents[worst].id
			st.parents = slices.Delete(st.parents, worst, worst+1)
			p.deactivate(st, old)
			p.adopt(st, q, hops)
			return
		}
	}
	p.deactivate(st, q)
}

// eligible says whether a neighbour whose push made hops may become a further parent
// of a node that has one (DAG, or a delay-aware swap) without risking a cycle: its
// level (hops - 1) must be below this node's, so it cannot be a descendant. The level
// last announced counts too: descendants have not heard of a newer, deeper one.
func (p *Brisa) eligible(st *brisaOrigin, hops uint32) bool {
	ref := st.level
	if st.hasPush && st.pushed < ref {
		ref = st.pushed
	}
	return !st.own && hops <= ref
}

func (p *Brisa) adopt(st *brisaOrigin, q peer.ID, hops uint32) {
	st.parents = append(st.parents, brisaParent{id: q, hops: hops})
	st.updateLevel()
	if i := slices.Index(st.deactivated, q); i >= 0 {
		// We told it to stop before it won; have it push again.
		st.deactivated = slices.Delete(st.deactivated, i, i+1)
		p.reactivate(st, q, false, false)
	}
	if st.orphan {
		st.orphan = false
		p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerBrisaRepair, Key: st.key}})
	}
}

func (p *Brisa) deactivate(st *brisaOrigin, q peer.ID) {
	p.send(q, brisaDeactivate([]byte(st.key)))
	if !slices.Contains(st.deactivated, q) {
		st.deactivated = append(st.deactivated, q)
	}
}

func brisaDeactivate(origin []byte) *BrisaMessage {
	return &BrisaMessage{Body: &BrisaMessage_Deactivate{Deactivate: &BrisaDeactivate{Origin: origin}}}
}

// forward pushes a broadcast delivered for the first time on every active link but the
// one it came by (and never back to its origin): as DATA if it is our own or came from
// a parent, else as REPLAY, so that DATA only ever travels along chains of parents.
func (p *Brisa) forward(st *brisaOrigin, c brisaCopy, from peer.ID, replay bool) {
	lvl := c.hops
	if st.own {
		lvl = 0
	} else if st.level > 0 {
		lvl = st.level
	}
	if !replay {
		st.pushed, st.hasPush = lvl, true
	}
	for _, q := range p.neighbours {
		if q == from || string(q) == st.key || slices.Contains(st.inactiveOut, q) {
			continue
		}
		p.send(q, c.message(lvl+1, replay))
	}
}

func (c brisaCopy) message(hops uint32, replay bool) *BrisaMessage {
	if replay {
		return &BrisaMessage{Body: &BrisaMessage_Replay{Replay: &BrisaReplay{Broadcast: c.b, Hops: hops, Prev: c.prev, HasPrev: c.hasPrev}}}
	}
	return &BrisaMessage{Body: &BrisaMessage_Data{Data: &BrisaData{Broadcast: c.b, Hops: hops, Prev: c.prev, HasPrev: c.hasPrev}}}
}

// remember records a broadcast received for the first time and delivers it (unless it
// is our own). If the origin's previous broadcast is unknown here, it is chased; in a
// dense stream (every prev so far was seq - 1) so is every seq since the highest seen.
func (p *Brisa) remember(st *brisaOrigin, c brisaCopy) {
	b, hops := c.b, c.hops
	seq := b.GetSeq()
	prevHigh, had := st.seen.high, st.seen.init
	st.seen.add(seq)
	if i, ok := st.missingIndex(seq); ok {
		st.missing = slices.Delete(st.missing, i, i+1)
	}
	if len(st.cacheFIF) >= p.cfg.Cache {
		delete(st.cache, st.cacheFIF[0])
		st.cacheFIF = st.cacheFIF[1:]
	}
	st.cache[seq] = c
	st.cacheFIF = append(st.cacheFIF, seq)
	if st.own {
		return
	}
	p.out = append(p.out, Delivered{ID: BroadcastID(b), Broadcast: b, Round: hops})
	if !had {
		st.floor = seq
		if c.hasPrev {
			st.floor = c.prev // a joiner fetches one predecessor, not the history
		}
	}
	if c.hasPrev && c.prev != seq-1 {
		st.sparse = true
	}
	if !c.hasPrev || c.prev < st.floor || st.seen.has(c.prev) {
		return
	}
	lo := c.prev
	if !st.sparse && had && prevHigh < c.prev {
		lo = max(prevHigh+1, st.floor, seq-min(seq, uint64(p.cfg.Missing)))
	}
	p.gap(st, lo, c.prev)
}

// gap chases the seqs from lo to hi: if they have not come within PullTimeout (copies
// from different parents may be reordered), they are pulled.
func (p *Brisa) gap(st *brisaOrigin, lo, hi uint64) {
	for s := lo; s <= hi; s++ {
		p.chase(st, s)
	}
	if over := len(st.missing) - p.cfg.Missing; over > 0 {
		st.missing = slices.Delete(st.missing, 0, over)
	}
	p.armPull(st)
}

// chase adds seq to the missing ones, due for a PULL after PullTimeout.
func (p *Brisa) chase(st *brisaOrigin, seq uint64) {
	if i, ok := st.missingIndex(seq); !ok && !st.seen.has(seq) {
		st.missing = slices.Insert(st.missing, i, brisaMissing{seq: seq, due: p.now.Add(p.cfg.PullTimeout)})
	}
}

// armPull sets the pull timer for the earliest due missing seq, unless it is set
// earlier already.
func (p *Brisa) armPull(st *brisaOrigin) {
	if len(st.missing) == 0 {
		return
	}
	due := st.missing[0].due
	for _, m := range st.missing[1:] {
		if m.due.Before(due) {
			due = m.due
		}
	}
	if st.pullArmed && !due.Before(st.pullAt) {
		return
	}
	st.pullArmed, st.pullAt = true, due
	p.out = append(p.out, protocols.SetTimer{Timer: protocols.Timer{Kind: timerBrisaPull, Key: st.key}, After: max(due.Sub(p.now), 0)})
}

// pullTimer pulls the missing seqs that are due, alternately from a parent (or the
// last sender) and from another neighbour (another branch may hold them while the
// parent is itself recovering them). Each seq is pulled at most PullRetries times,
// backing off exponentially (up to 16 x PullTimeout), then given up: it may never have
// existed (the origin skipped it) or be gone from every cache.
func (p *Brisa) pullTimer(key string) {
	st := p.origins[key]
	if st == nil {
		return
	}
	st.pullArmed = false
	var seqs []uint64
	st.missing = slices.DeleteFunc(st.missing, func(m brisaMissing) bool {
		return !m.due.After(p.now) && m.pulls >= p.cfg.PullRetries
	})
	for i := range st.missing {
		m := &st.missing[i]
		if m.due.After(p.now) {
			continue
		}
		m.pulls++
		m.due = p.now.Add(p.cfg.PullTimeout << min(m.pulls, 4))
		seqs = append(seqs, m.seq)
	}
	if len(seqs) > 0 {
		if to := p.pullTarget(st); to != "" {
			p.send(to, &BrisaMessage{Body: &BrisaMessage_Pull{Pull: &BrisaPull{Origin: []byte(key), Seqs: seqs}}})
		}
	}
	p.armPull(st)
}

func (p *Brisa) pullTarget(st *brisaOrigin) peer.ID {
	st.pullFires++
	to := st.lastFrom
	if len(st.parents) > 0 {
		to = st.parents[0].id
	}
	if st.pullFires%2 == 0 || to == "" || !p.isNeighbour(to) {
		var others []peer.ID
		for _, q := range p.neighbours {
			if q != to && string(q) != st.key {
				others = append(others, q)
			}
		}
		if len(others) > 0 {
			return others[p.rng.IntN(len(others))]
		}
	}
	if p.isNeighbour(to) {
		return to
	}
	return ""
}

// onReplay delivers a broadcast sent to catch this node up and passes it on; it says
// nothing about who should be a parent.
func (p *Brisa) onReplay(from peer.ID, c brisaCopy) {
	if !c.sane() || peer.ID(c.b.GetOrigin()) == p.self {
		return
	}
	st := p.originState(string(c.b.GetOrigin()))
	if st.seen.has(c.b.GetSeq()) {
		return
	}
	p.remember(st, c)
	p.forward(st, c, from, true)
}

func (p *Brisa) onReactivate(from peer.ID, r *BrisaReactivate) {
	st := p.tracked(r.GetOrigin())
	if st == nil {
		return // links are active by default
	}
	st.inactiveOut = remove(st.inactiveOut, from)
	if i := st.parentIndex(from); i >= 0 && r.GetDetached() {
		// Our parent has found no parent of its own: all its neighbours may be in its
		// subtree. Look for another, as if it had failed (it may win again later).
		st.parents = slices.Delete(st.parents, i, i+1)
		p.parentLost(st)
	}
	if !r.GetHasLast() {
		return
	}
	var seqs []uint64
	for _, s := range st.cacheFIF {
		if s > r.GetLast() {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	if len(seqs) > p.cfg.Missing {
		seqs = seqs[:p.cfg.Missing]
	}
	for _, s := range seqs {
		p.replay(st, from, s)
	}
}

func (p *Brisa) onPull(from peer.ID, pl *BrisaPull) {
	st := p.tracked(pl.GetOrigin())
	if st == nil {
		return
	}
	seqs := pl.GetSeqs()
	if len(seqs) > p.cfg.Missing {
		seqs = seqs[:p.cfg.Missing]
	}
	for _, s := range seqs {
		if _, ok := st.cache[s]; ok {
			p.replay(st, from, s)
		} else if s < st.seen.high && len(st.missing) < p.cfg.Missing {
			p.chase(st, s) // we skipped it too: our children will get it from us
		}
	}
	p.armPull(st)
}

func (p *Brisa) replay(st *brisaOrigin, to peer.ID, seq uint64) {
	c, ok := st.cache[seq]
	if !ok || string(to) == st.key {
		return
	}
	p.send(to, c.message(c.hops+1, true))
}

func (st *brisaOrigin) missingIndex(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(st.missing, seq, func(m brisaMissing, s uint64) int {
		switch {
		case m.seq < s:
			return -1
		case m.seq > s:
			return 1
		}
		return 0
	})
}

func (st *brisaOrigin) parentIndex(q peer.ID) int {
	return slices.IndexFunc(st.parents, func(pa brisaParent) bool { return pa.id == q })
}

// updateLevel sets the level from the parents' last pushes: the deepest of them, so
// every parent is above the node.
func (st *brisaOrigin) updateLevel() {
	if len(st.parents) == 0 {
		return
	}
	var lvl uint32
	for _, pa := range st.parents {
		lvl = max(lvl, pa.hops)
	}
	st.level = lvl
}

// seqWindow remembers which of the n sequence numbers up to the highest seen were seen;
// older ones count as seen.
type seqWindow struct {
	init bool
	high uint64
	n    uint64
	bits []uint64
}

func (w *seqWindow) has(s uint64) bool {
	if !w.init || s > w.high {
		return false
	}
	if w.high-s >= w.n {
		return true
	}
	i := s % w.n
	return w.bits[i/64]&(1<<(i%64)) != 0
}

func (w *seqWindow) set(s uint64, on bool) {
	i := s % w.n
	if on {
		w.bits[i/64] |= 1 << (i % 64)
	} else {
		w.bits[i/64] &^= 1 << (i % 64)
	}
}

func (w *seqWindow) add(s uint64) {
	if w.bits == nil {
		w.bits = make([]uint64, (w.n+63)/64)
	}
	switch {
	case !w.init:
		w.init, w.high = true, s
	case s > w.high:
		if s-w.high >= w.n {
			clear(w.bits)
		} else {
			for x := w.high + 1; x < s; x++ {
				w.set(x, false)
			}
		}
		w.high = s
	case w.high-s >= w.n:
		return
	}
	w.set(s, true)
}

var _ Carrier = (*BrisaMessage)(nil)

// Broadcasts implements Carrier.
func (m *BrisaMessage) Broadcasts() []*Broadcast {
	if b := m.GetData().GetBroadcast(); b != nil {
		return []*Broadcast{b}
	}
	if b := m.GetReplay().GetBroadcast(); b != nil {
		return []*Broadcast{b}
	}
	return nil
}

// Kind implements Carrier.
func (m *BrisaMessage) Kind() string {
	switch m.GetBody().(type) {
	case *BrisaMessage_Data:
		return "DATA"
	case *BrisaMessage_Replay:
		return "REPLAY"
	case *BrisaMessage_Deactivate:
		return "DEACTIVATE"
	case *BrisaMessage_Reactivate:
		return "REACTIVATE"
	case *BrisaMessage_Pull:
		return "PULL"
	case *BrisaMessage_Ping:
		return "PING"
	case *BrisaMessage_Pong:
		return "PONG"
	}
	return "UNKNOWN"
}
