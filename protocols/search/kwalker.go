package search

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// KWalker is the k-random-walkers search of Lv, Cao, Cohen, Li and Shenker, "Search
// and replication in unstructured peer-to-peer networks", ICS 2002.
//
// The origin of a search sends k walkers (query messages) to its neighbours; each
// walker moves from node to node at random, one hop at a time, until its TTL runs out.
// A node holding the key answers the origin directly and stops the walker. Every
// CheckEvery hops the node holding a walker checks back with the origin (Check) and
// lets the walker go on only if the origin says the search is still on: once one
// walker has found the key, the others stop at their next check. The paper's figures
// use 16 to 64 walkers checking every 4 steps; walkers cost about k times fewer
// messages than flooding at the same success rate, at the price of more hops.
//
// Deviations (see docs/search.md):
//   - A walker does not step straight back to the node it came from when it has
//     another neighbour to go to (a non-backtracking walk; the paper's walkers pick any
//     neighbour). On the overlays UnsServ builds (about 5 neighbours per node) this
//     visits more distinct nodes per message.
//   - A walker whose TTL runs out tells the origin (Exhausted), so that the origin can
//     report absence as soon as every walker is accounted for; the paper stops at TTL
//     silently. A search also ends after its timeout (walkers lost to failed nodes).
//   - A check the origin does not answer within CheckTimeout lets the walker go on
//     (the TTL still bounds it): a lost answer should not lose the walker.
//   - A node holds at most MaxHeld walkers waiting for checks; beyond, walkers go on
//     unchecked.
//   - A check names its walker, so the origin knows which walkers are still out. One it
//     has not heard from (a check, or its Exhausted report) for Replace (3 s) is taken
//     as lost, with its hit if it found the key (a node crashed holding it, a message
//     dropped), and the origin sends a new walker in its place, at most Walkers new
//     ones per search. In the paper a lost walker is simply gone.
type KWalker struct {
	base
	cfg KWalkerConfig

	held  map[heldKey][]heldWalker // walkers waiting for their origin's answer to a check
	nheld int
	hkeys []heldKey // held's keys in arrival order
}

type heldWalker struct {
	q    *Query
	from peer.ID
}

type heldKey struct {
	origin peer.ID
	id     uint64
}

func (h heldKey) timer() protocols.Timer {
	return protocols.Timer{Kind: timerCheck, Peer: h.origin, Key: strconv.FormatUint(h.id, 10)}
}

// KWalkerConfig holds KWalker's parameters; a zero field means its default.
type KWalkerConfig struct {
	// Walkers is k, the walkers of one search; 0 means 16 (the paper: 16 to 64).
	Walkers int
	// TTL bounds the hops of each walker; 0 means 128. With checking, the TTL only
	// bounds the cost of a search that finds nothing: 16 walkers of 128 hops visit
	// about 2,000 nodes.
	TTL int
	// CheckEvery is the number of hops between two checks with the origin; 0 means 4
	// (the paper's choice); negative switches checking off.
	CheckEvery int
	// CheckTimeout is how long a node waits for the origin's answer to a check before
	// letting the walker go on; 0 means 2 s.
	CheckTimeout time.Duration
	// MaxHeld bounds the walkers a node holds waiting for checks; 0 means 1,024.
	MaxHeld int
	// Replace is how long the origin waits to hear from a walker (a check, a report)
	// before it takes the walker as lost and sends a new one in its place (at most
	// Walkers new ones per search); 0 means 3 s, a negative value never. Keep it above
	// CheckTimeout plus CheckEvery hops and a round trip to the origin, the longest a
	// walker on its way stays silent: a walker replaced too early costs one more
	// walker, nothing else. Without checking (CheckEvery < 0) nothing is replaced.
	Replace time.Duration
	Limits
}

// WithDefaults returns the config with every zero field set to its default.
func (c KWalkerConfig) WithDefaults() KWalkerConfig {
	if c.Walkers == 0 {
		c.Walkers = 16
	}
	if c.TTL == 0 {
		c.TTL = 128
	}
	if c.CheckEvery == 0 {
		c.CheckEvery = 4
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 2 * time.Second
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = 1024
	}
	if c.Replace == 0 {
		c.Replace = 3 * time.Second
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// Validate says which field is wrong, if any.
func (c KWalkerConfig) Validate() error {
	switch {
	case c.Walkers < 0 || c.Walkers > maxWalkers:
		return &protocols.ConfigError{Field: "KWalkerConfig.Walkers", Reason: "must be between 1 and 256 (0 for the default)"}
	case c.TTL < 0 || c.TTL > maxTTL:
		return &protocols.ConfigError{Field: "KWalkerConfig.TTL", Reason: "must be between 1 and 10000 (0 for the default)"}
	case c.CheckTimeout < 0:
		return &protocols.ConfigError{Field: "KWalkerConfig.CheckTimeout", Reason: "must not be negative"}
	case c.MaxHeld < 0:
		return &protocols.ConfigError{Field: "KWalkerConfig.MaxHeld", Reason: "must not be negative"}
	}
	return c.Limits.validate("KWalkerConfig")
}

// NewKWalker returns a KWalker core for node self.
func NewKWalker(self peer.ID, cfg KWalkerConfig, rng *rand.Rand) (*KWalker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validSelf(self, rng); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	k := &KWalker{base: newBase(self, cfg.Limits, rng), cfg: cfg, held: map[heldKey][]heldWalker{}}
	k.reroute = func(q *Query) {
		if origin, ok := validQuery(q, uint32(k.cfg.TTL)); ok {
			k.step("", origin, q)
		}
	}
	k.retryTimers = k.replaces()
	return k, nil
}

// Handle implements protocols.Core.
func (k *KWalker) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if k.left {
		return nil
	}
	k.now = now
	k.out = k.out[:0]
	if k.common(in) {
		return k.out
	}
	switch v := in.(type) {
	case protocols.Neighbours:
		k.setNeighbours(v.Peers)
	case protocols.Call:
		if p := k.call(v.Req); p != nil {
			k.start(p)
		}
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && m != nil && v.From != k.self && v.From != "" {
			k.receive(v.From, m)
		}
	case protocols.TimerFired:
		switch v.Timer.Kind {
		case timerCheck:
			if id, err := strconv.ParseUint(v.Timer.Key, 10, 64); err == nil {
				k.release(heldKey{v.Timer.Peer, id}, false, true)
			}
		case timerRetry:
			k.replaceLost(v.Timer.Key)
		}
	case protocols.Leave:
		for _, h := range k.hkeys {
			k.out = append(k.out, protocols.CancelTimer{Timer: h.timer()})
		}
		k.leave()
	}
	return k.out
}

// start sends the search's k walkers, spread over the neighbours as evenly as they go.
func (k *KWalker) start(p *pending) {
	n := k.cfg.Walkers
	p.walkers = make([]bool, n)
	p.left = n
	us := k.usable()
	perm := k.rng.Perm(len(us))
	for w := 0; w < n; w++ {
		k.sendWalker(p, us[perm[w%len(us)]], w)
	}
	if k.replaces() {
		p.heard = make([]time.Time, n)
		for w := range p.heard {
			p.heard[w] = k.now
		}
		k.out = append(k.out, protocols.SetTimer{Timer: retryTimer(p.id), After: k.cfg.Replace / 2})
	}
}

func (k *KWalker) sendWalker(p *pending, to peer.ID, w int) {
	q := &Query{Id: p.id, Origin: k.selfPeer(), Key: p.key, Ttl: uint32(k.cfg.TTL - 1), Hops: 1, Walker: uint32(w)}
	k.stats.Forwarded++
	k.send(to, &Message{Body: &Message_Query{Query: q}})
}

// replaces reports whether the origin replaces walkers it stopped hearing from.
func (k *KWalker) replaces() bool { return k.cfg.Replace > 0 && k.cfg.CheckEvery > 0 }

// heard notes that walker w of search id is still out.
func (k *KWalker) heard(id uint64, w uint32) {
	if p, ok := k.pend[id]; ok && int(w) < len(p.heard) {
		p.heard[w] = k.now
	}
}

// replaceLost runs every Replace/2 while a search is on: each walker not heard from
// for Replace and not accounted for is taken as lost, and a new one goes out instead.
func (k *KWalker) replaceLost(key string) {
	id, err := strconv.ParseUint(key, 10, 64)
	if err != nil {
		return
	}
	p, ok := k.pend[id]
	if !ok {
		return
	}
	for w := range p.heard {
		if p.walkers[w] || k.now.Sub(p.heard[w]) < k.cfg.Replace || len(p.walkers) >= 2*k.cfg.Walkers {
			continue
		}
		us := k.usable()
		if len(us) == 0 {
			break
		}
		p.walkers[w] = true // accounted for: a report it may still send is ignored
		nw := len(p.walkers)
		p.walkers = append(p.walkers, false)
		p.heard = append(p.heard, k.now)
		k.stats.Retried++
		k.sendWalker(p, k.pick(us), nw)
	}
	k.out = append(k.out, protocols.SetTimer{Timer: retryTimer(p.id), After: k.cfg.Replace / 2})
}

func (k *KWalker) receive(from peer.ID, m *Message) {
	switch b := m.GetBody().(type) {
	case *Message_Query:
		k.onQuery(from, b.Query)
	case *Message_Hit:
		k.onHit(from, b.Hit)
	case *Message_Exhausted:
		k.onExhausted(from, b.Exhausted)
	case *Message_Check:
		_, on := k.pend[b.Check.GetId()]
		k.heard(b.Check.GetId(), b.Check.GetWalker())
		k.send(from, &Message{Body: &Message_CheckReply{CheckReply: &CheckReply{Id: b.Check.GetId(), Stop: !on}}})
	case *Message_CheckReply:
		k.release(heldKey{from, b.CheckReply.GetId()}, b.CheckReply.GetStop(), false)
	}
}

func (k *KWalker) onQuery(from peer.ID, q *Query) {
	origin, ok := validQuery(q, uint32(k.cfg.TTL))
	if !ok || int(q.GetWalker()) >= 2*k.cfg.Walkers {
		return
	}
	if k.answer(origin, q) {
		return
	}
	if q.GetTtl() == 0 {
		k.exhausted(origin, q)
		return
	}
	if k.cfg.CheckEvery > 0 && int(q.GetHops())%k.cfg.CheckEvery == 0 {
		if origin == k.self {
			if _, on := k.pend[q.GetId()]; !on {
				k.stats.Stopped++
				return
			}
			k.heard(q.GetId(), q.GetWalker())
		} else if k.nheld < k.cfg.MaxHeld {
			h := heldKey{origin, q.GetId()}
			if _, waiting := k.held[h]; !waiting {
				k.hkeys = append(k.hkeys, h)
				k.stats.Checks++
				k.send(origin, &Message{Body: &Message_Check{Check: &Check{Id: q.GetId(), Walker: q.GetWalker()}}})
				k.out = append(k.out, protocols.SetTimer{Timer: h.timer(), After: k.cfg.CheckTimeout})
			}
			k.held[h] = append(k.held[h], heldWalker{q, from})
			k.nheld++
			return
		}
	}
	k.step(from, origin, q)
}

// step moves the walker q, now at this node, to a random neighbour other than from
// (unless from is the only one).
func (k *KWalker) step(from, origin peer.ID, q *Query) {
	us := k.usable()
	to := k.pick(us)
	if len(us) > 1 {
		for to == from {
			to = k.pick(us)
		}
	}
	if to == "" {
		k.exhausted(origin, q) // no neighbour: the walker cannot go on
		return
	}
	k.stats.Forwarded++
	k.send(to, &Message{Body: &Message_Query{Query: &Query{
		Id: q.GetId(), Origin: q.GetOrigin(), Key: q.GetKey(), Ttl: q.GetTtl() - 1, Hops: q.GetHops() + 1, Walker: q.GetWalker(),
	}}})
}

// release lets the walkers held for h go on, or stops them.
func (k *KWalker) release(h heldKey, stop, timedOut bool) {
	qs, ok := k.held[h]
	if !ok {
		return
	}
	delete(k.held, h)
	k.hkeys = slices.DeleteFunc(k.hkeys, func(x heldKey) bool { return x == h })
	k.nheld -= len(qs)
	if !timedOut {
		k.out = append(k.out, protocols.CancelTimer{Timer: h.timer()})
	}
	for _, w := range qs {
		switch {
		case stop:
			k.stats.Stopped++
		default:
			if timedOut {
				k.stats.Unchecked++
			}
			k.step(w.from, h.origin, w.q)
		}
	}
}
