package membership

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Newscast is the membership protocol of Jelasity, Kowalczyk and van Steen, "Newscast
// Computing", technical report IR-CS-006, Vrije Universiteit Amsterdam, 2003; in the
// framework of Jelasity et al., "Gossip-based peer sampling" (ACM TOCS 2007) it is the
// (random peer, freshest entries, push-pull) protocol.
//
// Each node keeps a cache of at most c news items, each a node descriptor with the time
// it was created by that node. Once per cycle a node picks a random member of its cache
// and the two exchange their whole caches, each adding a fresh item about itself; both
// keep the c freshest items of the union, at most one per node and never their own.
// Dead nodes stop producing fresh items and fall out of every cache within a few cycles,
// which makes Newscast robust to very high churn, at the price of an overlay whose links
// change all the time.
//
// Deviations (see docs/membership.md):
//   - Timestamps travel as ages (milliseconds before sending), turned back into local
//     times on arrival, so nodes need no synchronised clocks; the error is the transit
//     time. Ages over a day are taken as a day.
//   - A node the transport reports unreachable leaves the cache at once instead of
//     ageing out.
//   - The cycle is a wall-clock Interval; the first exchange comes after a random part
//     of it so that nodes do not exchange in lockstep.
type Newscast struct {
	cfg    NewscastConfig
	rng    *rand.Rand
	self   *Node
	selfID peer.ID

	cache     []newsItem // freshest first
	bootstrap []peer.ID

	started, left bool
	changed       bool
	out           []protocols.Output
}

type newsItem struct {
	id peer.ID
	n  *Node
	ts time.Time
}

// NewscastConfig holds Newscast's parameters; a zero field means its default.
type NewscastConfig struct {
	// CacheSize is c, the number of items a cache holds; 0 means 20, the value of the
	// paper's experiments.
	CacheSize int
	// Interval is the cycle length; 0 means 5 s.
	Interval time.Duration
}

// WithDefaults returns the config with every zero field set to its default.
func (c NewscastConfig) WithDefaults() NewscastConfig {
	if c.CacheSize == 0 {
		c.CacheSize = 20
	}
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	return c
}

// Validate says which field is wrong, if any.
func (c NewscastConfig) Validate() error {
	if c.CacheSize < 0 || c.CacheSize > 1000 {
		return &protocols.ConfigError{Field: "NewscastConfig.CacheSize", Reason: "must be in [0, 1000]"}
	}
	if c.Interval < 0 {
		return &protocols.ConfigError{Field: "NewscastConfig.Interval", Reason: "must not be negative"}
	}
	return nil
}

const (
	timerNews  uint8 = iota + 10
	maxNewsAge       = 24 * time.Hour
)

// NewNewscast returns a Newscast core for the node self.
func NewNewscast(self *Node, cfg NewscastConfig, rng *rand.Rand) (*Newscast, error) {
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
	return &Newscast{cfg: cfg.WithDefaults(), rng: rng, self: cloneNode(self), selfID: id}, nil
}

// Self returns the node's own ID.
func (c *Newscast) Self() peer.ID { return c.selfID }

// View returns the cache members, freshest first.
func (c *Newscast) View() []peer.ID {
	out := make([]peer.ID, len(c.cache))
	for i, it := range c.cache {
		out[i] = it.id
	}
	return out
}

// Handle implements protocols.Core.
func (c *Newscast) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if c.left {
		return nil
	}
	c.out = c.out[:0]
	c.changed = false
	switch v := in.(type) {
	case protocols.Start:
		c.start(now, v)
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && v.From != c.selfID {
			if ex := m.GetNewscast(); ex != nil {
				c.exchange(now, v.From, ex)
			}
		}
	case protocols.TimerFired:
		if v.Timer.Kind == timerNews {
			c.tick(now)
		}
	case protocols.PeerDown:
		c.remove(v.Peer)
	case protocols.Leave:
		for _, it := range c.cache {
			c.out = append(c.out, protocols.Link{Peer: it.id, Up: false})
		}
		c.cache = nil
		c.out = append(c.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerNews}}, NeighboursChanged{})
		c.left = true
		return c.out
	case protocols.SelfUpdated:
		c.self = NewNode(c.selfID, v.Record, v.Meta)
	}
	if c.changed {
		nodes := make([]*Node, len(c.cache))
		for i, it := range c.cache {
			nodes[i] = cloneNode(it.n)
		}
		c.out = append(c.out, NeighboursChanged{Nodes: nodes})
	}
	return c.out
}

func (c *Newscast) start(now time.Time, v protocols.Start) {
	if c.started {
		return
	}
	c.started = true
	for _, b := range v.Bootstrap {
		if b != "" && b != c.selfID && !slices.Contains(c.bootstrap, b) {
			c.bootstrap = append(c.bootstrap, b)
		}
	}
	c.seed(now)
	first := time.Duration(c.rng.Int64N(int64(c.cfg.Interval) + 1))
	c.out = append(c.out, protocols.SetTimer{Timer: protocols.Timer{Kind: timerNews}, After: first})
}

// seed puts the bootstrap peers in an empty cache.
func (c *Newscast) seed(now time.Time) {
	if len(c.cache) > 0 {
		return
	}
	var items []*NewsItem
	for _, b := range c.bootstrap {
		items = append(items, &NewsItem{Node: NewNode(b, nil, nil)})
	}
	c.merge(now, items)
}

func (c *Newscast) tick(now time.Time) {
	c.out = append(c.out, protocols.SetTimer{Timer: protocols.Timer{Kind: timerNews}, After: c.cfg.Interval})
	c.seed(now) // an emptied cache starts over from the bootstrap peers
	if len(c.cache) == 0 {
		return
	}
	q := c.cache[c.rng.IntN(len(c.cache))].id
	c.out = append(c.out, protocols.Send{To: q, Msg: c.message(now, false)})
}

// message carries the cache and a fresh item about this node.
func (c *Newscast) message(now time.Time, reply bool) *Message {
	items := make([]*NewsItem, 0, len(c.cache)+1)
	items = append(items, &NewsItem{Node: cloneNode(c.self)})
	for _, it := range c.cache {
		age := now.Sub(it.ts)
		if age < 0 {
			age = 0
		}
		items = append(items, &NewsItem{Node: cloneNode(it.n), AgeMs: uint64(age / time.Millisecond)})
	}
	return &Message{Body: &Message_Newscast{Newscast: &NewscastExchange{Sender: cloneNode(c.self), Items: items, Reply: reply}}}
}

func (c *Newscast) exchange(now time.Time, from peer.ID, ex *NewscastExchange) {
	if !ex.GetReply() {
		c.out = append(c.out, protocols.Send{To: from, Msg: c.message(now, true)})
	}
	items := ex.GetItems()
	if len(items) > c.cfg.CacheSize+1 {
		items = items[:c.cfg.CacheSize+1]
	}
	c.merge(now, items)
	if !ex.GetReply() && !slices.ContainsFunc(c.cache, func(it newsItem) bool { return it.id == from }) {
		c.out = append(c.out, protocols.Close{Peer: from})
	}
}

// merge keeps the CacheSize freshest items of the cache and items, one per node.
func (c *Newscast) merge(now time.Time, items []*NewsItem) {
	before := c.View()
	for _, in := range items {
		n := in.GetNode()
		id := n.PeerID()
		if id == "" || id == c.selfID {
			continue
		}
		age := time.Duration(min(in.GetAgeMs(), uint64(maxNewsAge/time.Millisecond))) * time.Millisecond
		ts := now.Add(-age)
		if i := slices.IndexFunc(c.cache, func(it newsItem) bool { return it.id == id }); i >= 0 {
			if ts.After(c.cache[i].ts) {
				c.cache[i].ts = ts
				if len(n.GetRecord()) > 0 || len(c.cache[i].n.GetRecord()) == 0 {
					c.cache[i].n = cloneNode(n)
				}
			}
			continue
		}
		c.cache = append(c.cache, newsItem{id: id, n: cloneNode(n), ts: ts})
	}
	slices.SortStableFunc(c.cache, func(a, b newsItem) int { return b.ts.Compare(a.ts) })
	if len(c.cache) > c.cfg.CacheSize {
		c.cache = c.cache[:c.cfg.CacheSize]
	}
	c.linkDiff(before)
}

func (c *Newscast) remove(p peer.ID) {
	before := c.View()
	c.cache = slices.DeleteFunc(c.cache, func(it newsItem) bool { return it.id == p })
	c.linkDiff(before)
}

// linkDiff emits Link outputs for members that came and went since before.
func (c *Newscast) linkDiff(before []peer.ID) {
	now := c.View()
	for _, p := range before {
		if !slices.Contains(now, p) {
			c.out = append(c.out, protocols.Link{Peer: p, Up: false})
			c.changed = true
		}
	}
	for _, p := range now {
		if !slices.Contains(before, p) {
			c.out = append(c.out, protocols.Link{Peer: p, Up: true})
			c.changed = true
		}
	}
}
