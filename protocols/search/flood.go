package search

import (
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Flood is the TTL-limited flood of Gnutella's search, as Lv, Cao, Cohen, Li and
// Shenker ("Search and replication in unstructured peer-to-peer networks", ICS 2002)
// measure it: the origin sends the query to every neighbour; a node that sees a query
// for the first time answers the origin directly if it holds the key, and passes the
// query on to every neighbour but the one it came from while its TTL lasts; copies seen
// before are dropped. It is the baseline KWalker and ABloom are measured against.
//
// Deviations: duplicate suppression remembers at most Seen queries (the oldest
// forgotten first). The origin cannot tell when a flood is over, so a search that
// finds nothing ends at its timeout.
type Flood struct {
	base
	cfg FloodConfig

	seen     map[heldKey]bool
	seenFIFO []heldKey
}

// FloodConfig holds Flood's parameters; a zero field means its default.
type FloodConfig struct {
	// TTL bounds the hops of the query; 0 means 7 (Gnutella's).
	TTL int
	// Seen bounds the queries remembered to drop duplicates; 0 means 8,192.
	Seen int
	Limits
}

// WithDefaults returns the config with every zero field set to its default.
func (c FloodConfig) WithDefaults() FloodConfig {
	if c.TTL == 0 {
		c.TTL = 7
	}
	if c.Seen == 0 {
		c.Seen = 8192
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// Validate says which field is wrong, if any.
func (c FloodConfig) Validate() error {
	switch {
	case c.TTL < 0 || c.TTL > maxTTL:
		return &protocols.ConfigError{Field: "FloodConfig.TTL", Reason: "must be between 1 and 10000 (0 for the default)"}
	case c.Seen < 0:
		return &protocols.ConfigError{Field: "FloodConfig.Seen", Reason: "must not be negative"}
	}
	return c.Limits.validate("FloodConfig")
}

// NewFlood returns a Flood core for node self.
func NewFlood(self peer.ID, cfg FloodConfig, rng *rand.Rand) (*Flood, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validSelf(self, rng); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	return &Flood{base: newBase(self, cfg.Limits, rng), cfg: cfg, seen: map[heldKey]bool{}}, nil
}

// Handle implements protocols.Core.
func (f *Flood) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if f.left {
		return nil
	}
	f.now = now
	f.out = f.out[:0]
	if f.common(in) {
		return f.out
	}
	switch v := in.(type) {
	case protocols.Neighbours:
		f.setNeighbours(v.Peers)
	case protocols.Call:
		if p := f.call(v.Req); p != nil {
			f.remember(heldKey{f.self, p.id})
			q := &Query{Id: p.id, Origin: f.selfPeer(), Key: p.key, Ttl: uint32(f.cfg.TTL - 1), Hops: 1}
			f.forward("", q)
		}
	case protocols.Receive:
		m, ok := v.Msg.(*Message)
		if !ok || m == nil || v.From == f.self || v.From == "" {
			break
		}
		switch b := m.GetBody().(type) {
		case *Message_Query:
			f.onQuery(v.From, b.Query)
		case *Message_Hit:
			f.onHit(v.From, b.Hit)
		}
	case protocols.Leave:
		f.leave()
	}
	return f.out
}

func (f *Flood) remember(h heldKey) {
	if len(f.seenFIFO) >= f.cfg.Seen {
		delete(f.seen, f.seenFIFO[0])
		f.seenFIFO = f.seenFIFO[1:]
	}
	f.seen[h] = true
	f.seenFIFO = append(f.seenFIFO, h)
}

func (f *Flood) onQuery(from peer.ID, q *Query) {
	origin, ok := validQuery(q, uint32(f.cfg.TTL))
	if !ok {
		return
	}
	h := heldKey{origin, q.GetId()}
	if f.seen[h] {
		f.stats.Dups++
		return
	}
	f.remember(h)
	f.answer(origin, q)
	if q.GetTtl() == 0 {
		return
	}
	f.forward(from, &Query{Id: q.GetId(), Origin: q.GetOrigin(), Key: q.GetKey(), Ttl: q.GetTtl() - 1, Hops: q.GetHops() + 1})
}

// forward sends q to every neighbour but except.
func (f *Flood) forward(except peer.ID, q *Query) {
	for _, p := range f.usable() {
		if p != except {
			f.stats.Forwarded++
			f.send(p, &Message{Body: &Message_Query{Query: q}})
		}
	}
}
