package search

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// ABloom is the probabilistic location of Rhea and Kubiatowicz, "Probabilistic
// location and routing", INFOCOM 2002: queries routed by attenuated Bloom filters.
//
// An attenuated Bloom filter of depth d is an array of d Bloom filters. Each node keeps
// one per overlay link: the filter its neighbour sent it, whose level i summarises the
// keys held i hops beyond that neighbour (level 0: the neighbour's own keys). A node
// builds the filter it sends to neighbour B from its own keys (level 0) and, for level
// i, the union of levels i-1 of the filters it holds from its other neighbours. A query
// goes to the neighbour whose filter matches the key at the shallowest level; every
// hop looks again, so a query follows the match downhill to a node holding the key,
// which answers the origin directly. The paper falls back to a deterministic location
// algorithm (Plaxton/Tapestry) when no filter matches; with no such algorithm in an
// unstructured overlay, ABloom falls back to a random walk that keeps checking the
// filters at each hop, so a walk reaches the d-hop neighbourhood of a replica after a
// few hops.
//
// Deviations (see docs/search.md):
//   - Filters are rebuilt from the current keys every Period and sent to a neighbour
//     when they changed (and every Refresh periods in any case), instead of the paper's
//     bit-level update deltas; a withdrawn key leaves the filters within d periods.
//   - A query carries the latest nodes it visited (PathLength) and is not sent back to
//     them, so a stale match or a false positive costs a detour, never a loop; when every
//     neighbour was visited it goes to a random one.
//   - The fallback is a random walk (above), bounded by TTL; the node where the TTL runs
//     out tells the origin (Exhausted), so absence is reported without waiting for the
//     timeout.
//   - Walkers (default 1) queries may be sent at once, to the best-matching neighbours.
//   - A query travels one path, so one message lost on it (a node that crashed holding
//     it, a dropped send) would leave the origin waiting for its timeout. The origin
//     sends one more query every Retry (2 s) while it has neither an answer nor a
//     report, up to maxRetries times. Retries only stand in for lost queries: once
//     Walkers queries have reported running out of TTL the search is over, as it would
//     be without them.
type ABloom struct {
	base
	cfg ABloomConfig

	filters map[peer.ID][][]byte // the filter each neighbour sent
	sent    map[peer.ID][]byte   // the filter last sent to each neighbour, flattened
	period  int                  // filter periods since start
	started bool
}

// ABloomConfig holds ABloom's parameters; a zero field means its default. Depth, Bits
// and Hashes must be the same at every node of a search id.
type ABloomConfig struct {
	// Depth is d, the levels of an attenuated filter: keys up to Depth hops beyond a
	// neighbour are summarised; 0 means 3 (the paper's figures use 3 to 5).
	Depth int
	// Bits is the width of one level, a multiple of 8; 0 means 2,048 (256 bytes).
	Bits int
	// Hashes is the number of hash functions; 0 means 4.
	Hashes int
	// Period is the time between two rebuilds of the filters; 0 means 5 s.
	Period time.Duration
	// Refresh sends a neighbour the filter every Refresh periods even when it did not
	// change; 0 means 6.
	Refresh int
	// TTL bounds the hops of a query; 0 means 64.
	TTL int
	// Walkers is the number of queries a search sends at once; 0 means 1.
	Walkers int
	// PathLength bounds the visited nodes a query remembers; 0 means 16.
	PathLength int
	// Retry is how long a search waits for an answer or a report before it sends one
	// more query, and again (at most 8 times); 0 means 2 s, a negative value never.
	// Once Walkers queries reported running out of TTL the search ends, retries out
	// or not. A retry while the first query is only slow costs one more query.
	Retry time.Duration
	Limits
}

// WithDefaults returns the config with every zero field set to its default.
func (c ABloomConfig) WithDefaults() ABloomConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Depth, 3)
	def(&c.Bits, 2048)
	def(&c.Hashes, 4)
	def(&c.Refresh, 6)
	def(&c.TTL, 64)
	def(&c.Walkers, 1)
	def(&c.PathLength, 16)
	if c.Period == 0 {
		c.Period = 5 * time.Second
	}
	if c.Retry == 0 {
		c.Retry = 2 * time.Second
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// Validate says which field is wrong, if any.
func (c ABloomConfig) Validate() error {
	bad := func(f, r string) error { return &protocols.ConfigError{Field: "ABloomConfig." + f, Reason: r} }
	switch {
	case c.Depth < 0 || c.Depth > 16:
		return bad("Depth", "must be between 1 and 16 (0 for the default)")
	case c.Bits < 0 || c.Bits > 1<<16 || c.Bits%8 != 0:
		return bad("Bits", "must be a multiple of 8 up to 65536 (0 for the default)")
	case c.Hashes < 0 || c.Hashes > 32:
		return bad("Hashes", "must be between 1 and 32 (0 for the default)")
	case c.Period < 0:
		return bad("Period", "must not be negative")
	case c.Refresh < 0:
		return bad("Refresh", "must not be negative")
	case c.TTL < 0 || c.TTL > maxTTL:
		return bad("TTL", "must be between 1 and 10000 (0 for the default)")
	case c.Walkers < 0 || c.Walkers > maxWalkers:
		return bad("Walkers", "must be between 1 and 256 (0 for the default)")
	case c.PathLength < 0 || c.PathLength > 256:
		return bad("PathLength", "must be between 1 and 256 (0 for the default)")
	}
	return c.Limits.validate("ABloomConfig")
}

// NewABloom returns an ABloom core for node self.
func NewABloom(self peer.ID, cfg ABloomConfig, rng *rand.Rand) (*ABloom, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validSelf(self, rng); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	a := &ABloom{base: newBase(self, cfg.Limits, rng), cfg: cfg,
		filters: map[peer.ID][][]byte{}, sent: map[peer.ID][]byte{}}
	a.reroute = a.onQuery
	a.retryTimers = cfg.Retry > 0
	return a, nil
}

var filterTimer = protocols.Timer{Kind: timerFilter}

// Handle implements protocols.Core.
func (a *ABloom) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if a.left {
		return nil
	}
	a.now = now
	a.out = a.out[:0]
	if !a.started {
		// The first input starts the periodic filter exchange (Start may not come to a
		// stacked core).
		a.started = true
		a.out = append(a.out, protocols.SetTimer{Timer: filterTimer, After: a.cfg.Period})
	}
	if a.common(in) {
		return a.out
	}
	switch v := in.(type) {
	case protocols.Neighbours:
		added, removed := a.setNeighbours(v.Peers)
		for _, p := range removed {
			delete(a.filters, p)
			delete(a.sent, p)
		}
		for _, p := range added {
			a.sendFilter(p, true)
		}
	case protocols.Call:
		if p := a.call(v.Req); p != nil {
			a.start(p)
		}
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && m != nil && v.From != a.self && v.From != "" {
			a.receive(v.From, m)
		}
	case protocols.TimerFired:
		switch v.Timer.Kind {
		case timerRetry:
			a.retry(v.Timer.Key)
		case timerFilter:
			a.period++
			force := a.cfg.Refresh > 0 && a.period%a.cfg.Refresh == 0
			for _, p := range a.neigh {
				a.sendFilter(p, force)
			}
			a.out = append(a.out, protocols.SetTimer{Timer: filterTimer, After: a.cfg.Period})
		}
	case protocols.Leave:
		a.out = append(a.out, protocols.CancelTimer{Timer: filterTimer})
		a.leave()
	}
	return a.out
}

// Filter returns the attenuated filter this node would send to neighbour to now.
func (a *ABloom) Filter(to peer.ID) [][]byte {
	n := a.cfg.Bits / 8
	levels := make([][]byte, a.cfg.Depth)
	for i := range levels {
		levels[i] = make([]byte, n)
	}
	for k := range a.items {
		bloomAdd(levels[0], bloomPositions(k, a.cfg.Bits, a.cfg.Hashes))
	}
	for _, p := range a.neigh {
		f, ok := a.filters[p]
		if p == to || !ok {
			continue
		}
		for i := 1; i < a.cfg.Depth; i++ {
			bloomOr(levels[i], f[i-1])
		}
	}
	return levels
}

// sendFilter sends neighbour p its filter if it changed since the last one (or always,
// with force).
func (a *ABloom) sendFilter(p peer.ID, force bool) {
	if a.down[p] {
		return
	}
	levels := a.Filter(p)
	flat := bytes.Join(levels, nil)
	if !force && bytes.Equal(flat, a.sent[p]) {
		return
	}
	a.sent[p] = flat
	a.stats.Filters++
	a.send(p, &Message{Body: &Message_Filter{Filter: &Filter{Levels: levels}}})
}

func (a *ABloom) receive(from peer.ID, m *Message) {
	switch b := m.GetBody().(type) {
	case *Message_Filter:
		ls := b.Filter.GetLevels()
		if !slices.Contains(a.neigh, from) || len(ls) != a.cfg.Depth {
			return
		}
		for _, l := range ls {
			if len(l) != a.cfg.Bits/8 {
				return
			}
		}
		a.filters[from] = ls
	case *Message_Query:
		a.onQuery(b.Query)
	case *Message_Hit:
		a.onHit(from, b.Hit)
	case *Message_Exhausted:
		a.onExhausted(from, b.Exhausted)
	}
}

// maxRetries bounds the queries a search sends again (the same at every node: a
// query's walker number is below Walkers+maxRetries).
const maxRetries = 8

// start sends the search's queries: to the best-matching neighbours first.
func (a *ABloom) start(p *pending) {
	p.walkers = make([]bool, a.cfg.Walkers)
	p.left = a.cfg.Walkers
	p.enough = a.cfg.Walkers
	ranked := a.rank(bloomPositions(p.key, a.cfg.Bits, a.cfg.Hashes), nil)
	for w := 0; w < a.cfg.Walkers; w++ {
		a.sendQuery(p, ranked[w%len(ranked)], w)
	}
	if a.cfg.Retry > 0 {
		a.out = append(a.out, protocols.SetTimer{Timer: retryTimer(p.id), After: a.cfg.Retry})
	}
}

func (a *ABloom) sendQuery(p *pending, to ranked, w int) {
	a.stats.Forwarded++
	a.send(to.p, &Message{Body: &Message_Query{Query: &Query{
		Id: p.id, Origin: a.selfPeer(), Key: p.key, Ttl: uint32(a.cfg.TTL - 1), Hops: 1, Walker: uint32(w),
		Path: [][]byte{[]byte(a.self)},
	}}})
	if to.level < a.cfg.Depth {
		a.stats.Matched++
	} else {
		a.stats.Fallback++
	}
}

// retry sends one more query for a search still waiting when its retry timer fires:
// a query or its answer may have been lost on the way.
func (a *ABloom) retry(key string) {
	id, err := strconv.ParseUint(key, 10, 64)
	if err != nil {
		return
	}
	p, ok := a.pend[id]
	if !ok || len(p.walkers) >= a.cfg.Walkers+maxRetries || len(a.usable()) == 0 {
		return
	}
	w := len(p.walkers)
	p.walkers = append(p.walkers, false)
	p.left++
	a.stats.Retried++
	a.sendQuery(p, a.rank(bloomPositions(p.key, a.cfg.Bits, a.cfg.Hashes), nil)[0], w)
	if len(p.walkers) < a.cfg.Walkers+maxRetries {
		a.out = append(a.out, protocols.SetTimer{Timer: retryTimer(p.id), After: a.cfg.Retry})
	}
}

type ranked struct {
	p     peer.ID
	level int // shallowest matching level, Depth if none
}

// rank orders the usable neighbours not in path by their filter's shallowest match,
// ties (and neighbours without a match) in random order; when every neighbour is in
// path, it ranks them all.
func (a *ABloom) rank(ps []uint32, path [][]byte) []ranked {
	us := a.usable()
	var rs []ranked
	for _, i := range a.rng.Perm(len(us)) {
		p := us[i]
		if slices.ContainsFunc(path, func(b []byte) bool { return peer.ID(b) == p }) {
			continue
		}
		rs = append(rs, ranked{p, a.match(p, ps)})
	}
	if len(rs) == 0 {
		for _, i := range a.rng.Perm(len(us)) {
			rs = append(rs, ranked{us[i], a.match(us[i], ps)})
		}
	}
	slices.SortStableFunc(rs, func(x, y ranked) int { return x.level - y.level })
	return rs
}

// match returns the shallowest level of p's filter that holds the key, or Depth.
func (a *ABloom) match(p peer.ID, ps []uint32) int {
	for i, l := range a.filters[p] {
		if bloomHas(l, ps) {
			return i
		}
	}
	return a.cfg.Depth
}

func (a *ABloom) onQuery(q *Query) {
	origin, ok := validQuery(q, uint32(a.cfg.TTL))
	if !ok || int(q.GetWalker()) >= a.cfg.Walkers+maxRetries || len(q.GetPath()) > a.cfg.PathLength {
		return
	}
	if a.answer(origin, q) {
		return
	}
	if q.GetTtl() == 0 || len(a.usable()) == 0 {
		a.exhausted(origin, q)
		return
	}
	path := append(slices.Clone(q.GetPath()), []byte(a.self))
	if len(path) > a.cfg.PathLength {
		path = path[len(path)-a.cfg.PathLength:]
	}
	rs := a.rank(bloomPositions(q.GetKey(), a.cfg.Bits, a.cfg.Hashes), path)
	to := rs[0]
	if to.level < a.cfg.Depth {
		a.stats.Matched++
	} else {
		a.stats.Fallback++
	}
	a.stats.Forwarded++
	a.send(to.p, &Message{Body: &Message_Query{Query: &Query{
		Id: q.GetId(), Origin: q.GetOrigin(), Key: q.GetKey(), Ttl: q.GetTtl() - 1, Hops: q.GetHops() + 1,
		Walker: q.GetWalker(), Path: path,
	}}})
}
