package dissemination

import (
	"crypto/sha256"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Plumtree is the broadcast protocol of Leitão, Pereira and Rodrigues, "Epidemic
// Broadcast Trees", SRDS 2007.
//
// It runs over a membership's neighbours and splits them into eager peers, to which a
// node forwards every broadcast in full, and lazy peers, to which it only announces the
// broadcast's id (IHAVE). Initially every neighbour is eager; a node that receives a
// broadcast it already has prunes the link it came by (PRUNE makes both ends lazy), so
// the eager links settle into a spanning tree. When a node hears of a broadcast by IHAVE
// and the broadcast itself does not follow within a timeout, it asks the announcer for it
// with GRAFT, which makes that link eager again: the tree repairs itself where links or
// nodes fail. The optimisation of the paper replaces a tree link when a lazy link offers
// a path shorter by at least Threshold hops (off by default, see PlumtreeConfig).
//
// Deviations (see docs/dissemination.md):
//   - IHAVE announcements due to one peer in one step are sent as one message.
//   - Every cache is bounded: the ids of broadcasts received (Seen, oldest forgotten
//     first), the broadcasts kept to answer GRAFTs (Cache), and the missing ids waited for
//     (Missing, with at most 8 announcers each).
//   - The node does not deliver its own broadcasts to itself.
//   - When every announcer of a missing broadcast was grafted and it still did not come
//     (a GRAFT or its answer lost), the node goes round the announcers again, up to
//     MaxGrafts GRAFTs; the paper stops after the last announcer, relying on TCP.
type Plumtree struct {
	cfg    PlumtreeConfig
	rng    *rand.Rand
	selfID peer.ID

	eager, lazy []peer.ID

	seen     map[string]seenEntry
	seenFIFO []string
	cache    map[string]*Broadcast
	cacheIDs []string

	missing     map[string]*missingEntry
	missingFIFO []string

	ihave map[peer.ID][]*Announcement // announcements to flush at the end of the step
	order []peer.ID                   // peers of ihave, in the order first queued

	left bool
	out  []protocols.Output
}

type seenEntry struct {
	from  peer.ID // who sent it first ("" for our own)
	round uint32
}

type announcement struct {
	from  peer.ID
	round uint32
}

// missingEntry is a broadcast announced by IHAVE and not received: who announced it
// (at most 8) and how many GRAFTs were sent for it.
type missingEntry struct {
	anns   []announcement
	grafts int
}

// PlumtreeConfig holds Plumtree's parameters; a zero field means its default.
type PlumtreeConfig struct {
	// IHaveTimeout is how long to wait for a broadcast announced by IHAVE before
	// grafting (the paper's timeout1); 0 means 1 s.
	IHaveTimeout time.Duration
	// GraftTimeout is how long to wait after a GRAFT before trying the next announcer
	// (the paper's timeout2); 0 means 500 ms.
	GraftTimeout time.Duration
	// Threshold switches on the paper's optimisation: a broadcast received by eager
	// push that an announcer had offered over a path shorter by at least Threshold hops
	// makes that announcer's link a tree link and the sender's a lazy one. 0 (the
	// default) leaves it off: with broadcasts from many origins over one shared tree, a
	// swap that shortens one origin's paths lengthens another's, and the tree never
	// settles (see docs/dissemination.md). Use it with a single origin, e.g. 3.
	Threshold int
	// Seen bounds the ids of received broadcasts remembered; 0 means 65,536.
	Seen int
	// Cache bounds the broadcasts kept to answer GRAFTs; 0 means 1,024.
	Cache int
	// Missing bounds the announced ids waited for; 0 means 4,096.
	Missing int
	// MaxGrafts bounds the GRAFTs sent for one missing broadcast, going round its
	// announcers (at most 8); 0 means 8.
	MaxGrafts int
}

// WithDefaults returns the config with every zero field set to its default.
func (c PlumtreeConfig) WithDefaults() PlumtreeConfig {
	if c.IHaveTimeout == 0 {
		c.IHaveTimeout = time.Second
	}
	if c.GraftTimeout == 0 {
		c.GraftTimeout = 500 * time.Millisecond
	}
	if c.Seen == 0 {
		c.Seen = 1 << 16
	}
	if c.Cache == 0 {
		c.Cache = 1024
	}
	if c.Missing == 0 {
		c.Missing = 4096
	}
	if c.MaxGrafts == 0 {
		c.MaxGrafts = 8
	}
	return c
}

// Validate says which field is wrong, if any.
func (c PlumtreeConfig) Validate() error {
	switch {
	case c.IHaveTimeout < 0:
		return &protocols.ConfigError{Field: "PlumtreeConfig.IHaveTimeout", Reason: "must not be negative"}
	case c.GraftTimeout < 0:
		return &protocols.ConfigError{Field: "PlumtreeConfig.GraftTimeout", Reason: "must not be negative"}
	case c.Seen < 0, c.Cache < 0, c.Missing < 0, c.MaxGrafts < 0:
		return &protocols.ConfigError{Field: "PlumtreeConfig.Seen/Cache/Missing/MaxGrafts", Reason: "must not be negative"}
	}
	if d := c.WithDefaults(); d.Cache > d.Seen {
		return &protocols.ConfigError{Field: "PlumtreeConfig.Cache", Reason: "must not exceed Seen"}
	}
	return nil
}

const (
	timerMissing uint8 = iota + 20
)

// NewPlumtree returns a Plumtree core for node self.
func NewPlumtree(self peer.ID, cfg PlumtreeConfig, rng *rand.Rand) (*Plumtree, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return &Plumtree{
		cfg: cfg.WithDefaults(), rng: rng, selfID: self,
		seen: map[string]seenEntry{}, cache: map[string]*Broadcast{},
		missing: map[string]*missingEntry{}, ihave: map[peer.ID][]*Announcement{},
	}, nil
}

// Eager returns the eager push peers (the tree links), Lazy the lazy ones.
func (p *Plumtree) Eager() []peer.ID { return slices.Clone(p.eager) }

// Lazy returns the lazy push peers.
func (p *Plumtree) Lazy() []peer.ID { return slices.Clone(p.lazy) }

// Handle implements protocols.Core.
func (p *Plumtree) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if p.left {
		return nil
	}
	p.out = p.out[:0]
	switch v := in.(type) {
	case protocols.Neighbours:
		p.neighbours(v.Peers)
	case protocols.Call:
		if pub, ok := v.Req.(Publish); ok && pub.Broadcast != nil {
			p.publish(pub.Broadcast)
		}
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && v.From != p.selfID {
			p.receive(v.From, m)
		}
	case protocols.TimerFired:
		if v.Timer.Kind == timerMissing {
			p.missingTimer(v.Timer.Key)
		}
	case protocols.PeerDown:
		p.neighborDown(v.Peer)
	case protocols.Leave:
		for _, id := range p.missingFIFO {
			p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerMissing, Key: id}})
		}
		p.left = true
		return p.out
	}
	p.flushIHave()
	return p.out
}

func (p *Plumtree) send(to peer.ID, m *Message) {
	p.out = append(p.out, protocols.Send{To: to, Msg: m})
}

// neighbours applies the membership's new neighbour set: newcomers are eager (the
// paper's NeighborUp), those gone are forgotten (NeighborDown).
func (p *Plumtree) neighbours(peers []peer.ID) {
	for _, q := range slices.Concat(p.eager, p.lazy) {
		if !slices.Contains(peers, q) {
			p.neighborDown(q)
		}
	}
	for _, q := range peers {
		if q != p.selfID && !slices.Contains(p.eager, q) && !slices.Contains(p.lazy, q) {
			p.eager = append(p.eager, q)
		}
	}
}

func (p *Plumtree) neighborDown(q peer.ID) {
	p.eager = remove(p.eager, q)
	p.lazy = remove(p.lazy, q)
	for _, id := range p.missingFIFO {
		e := p.missing[id]
		e.anns = slices.DeleteFunc(e.anns, func(a announcement) bool { return a.from == q })
	}
}

func remove(s []peer.ID, q peer.ID) []peer.ID {
	return slices.DeleteFunc(s, func(x peer.ID) bool { return x == q })
}

func (p *Plumtree) publish(b *Broadcast) {
	id := BroadcastID(b)
	if _, dup := p.seen[string(id)]; dup {
		return
	}
	p.remember(id, b, seenEntry{})
	p.eagerPush(b, 0, "")
	p.lazyPush(id, 0, "", nil)
}

func (p *Plumtree) receive(from peer.ID, m *Message) {
	switch b := m.GetBody().(type) {
	case *Message_Gossip:
		p.onGossip(from, b.Gossip)
	case *Message_Ihave:
		for _, a := range b.Ihave.GetAnnouncements() {
			p.onIHave(from, a.GetId(), a.GetRound())
		}
	case *Message_Graft:
		p.onGraft(from, b.Graft)
	case *Message_Prune:
		p.moveToLazy(from)
	}
}

func (p *Plumtree) onGossip(from peer.ID, g *Gossip) {
	b := g.GetBroadcast()
	if b == nil {
		return
	}
	id := BroadcastID(b)
	key := string(id)
	if _, dup := p.seen[key]; dup {
		// A second copy: the link it came by is redundant.
		p.moveToLazy(from)
		p.send(from, &Message{Body: &Message_Prune{Prune: &Prune{}}})
		return
	}
	round := g.GetRound()
	p.remember(id, b, seenEntry{from: from, round: round})
	p.out = append(p.out, Delivered{ID: id, Broadcast: b, Round: round + 1}) // hops: 1 from the origin
	e, waiting := p.missing[key]
	var announcers []announcement
	if waiting {
		announcers = e.anns
		p.forgetMissing(key)
	}
	p.eagerPush(b, round+1, from)
	p.lazyPush(id, round+1, from, announcers)
	p.moveToEager(from)
	if waiting {
		p.optimise(e, round, from)
	}
}

func (p *Plumtree) onIHave(from peer.ID, id []byte, round uint32) {
	key := string(id)
	if len(id) != sha256.Size {
		return
	}
	if _, ok := p.seen[key]; ok {
		return
	}
	e, waiting := p.missing[key]
	if !waiting {
		if len(p.missingFIFO) >= p.cfg.Missing {
			p.forgetMissing(p.missingFIFO[0])
		}
		e = &missingEntry{}
		p.missing[key] = e
		p.missingFIFO = append(p.missingFIFO, key)
		p.out = append(p.out, protocols.SetTimer{Timer: protocols.Timer{Kind: timerMissing, Key: key}, After: p.cfg.IHaveTimeout})
	}
	if len(e.anns) < 8 && !slices.ContainsFunc(e.anns, func(a announcement) bool { return a.from == from }) {
		e.anns = append(e.anns, announcement{from: from, round: round})
	}
}

// missingTimer: the announced broadcast did not come; graft the next announcer, in the
// order they announced it, going round again while MaxGrafts allows (a GRAFT or its
// answer can be lost, or the announcer may have failed).
func (p *Plumtree) missingTimer(key string) {
	e, ok := p.missing[key]
	if !ok {
		return
	}
	if len(e.anns) == 0 || e.grafts >= p.cfg.MaxGrafts {
		p.forgetMissing(key)
		return
	}
	a := e.anns[e.grafts%len(e.anns)]
	e.grafts++
	p.out = append(p.out, protocols.SetTimer{Timer: protocols.Timer{Kind: timerMissing, Key: key}, After: p.cfg.GraftTimeout})
	p.moveToEager(a.from)
	p.send(a.from, &Message{Body: &Message_Graft{Graft: &Graft{Id: []byte(key), Round: a.round}}})
}

// optimise is the paper's optimisation, on receiving a broadcast by eager push with
// round hops when it was also announced: if an announcer offered a path shorter by
// Threshold hops or more, its link becomes a tree link (GRAFT without id) and the
// sender's a lazy one (PRUNE).
func (p *Plumtree) optimise(e *missingEntry, round uint32, sender peer.ID) {
	if p.cfg.Threshold <= 0 {
		return
	}
	best := -1
	for i, a := range e.anns {
		if a.from != sender && a.round < round && int(round-a.round) >= p.cfg.Threshold && (best < 0 || a.round < e.anns[best].round) {
			best = i
		}
	}
	if best < 0 {
		return
	}
	a := e.anns[best]
	p.moveToEager(a.from)
	p.send(a.from, &Message{Body: &Message_Graft{Graft: &Graft{Round: a.round}}})
	p.moveToLazy(sender)
	p.send(sender, &Message{Body: &Message_Prune{Prune: &Prune{}}})
}

func (p *Plumtree) onGraft(from peer.ID, g *Graft) {
	p.moveToEager(from)
	if b, ok := p.cache[string(g.GetId())]; ok {
		round := p.seen[string(g.GetId())].round
		p.send(from, &Message{Body: &Message_Gossip{Gossip: &Gossip{Broadcast: b, Round: round + 1}}})
	}
}

func (p *Plumtree) eagerPush(b *Broadcast, round uint32, except peer.ID) {
	for _, q := range p.eager {
		if q != except {
			p.send(q, &Message{Body: &Message_Gossip{Gossip: &Gossip{Broadcast: b, Round: round}}})
		}
	}
}

// lazyPush announces id to the lazy peers but except and those that announced it.
func (p *Plumtree) lazyPush(id []byte, round uint32, except peer.ID, announcers []announcement) {
	for _, q := range p.lazy {
		if q == except || slices.ContainsFunc(announcers, func(a announcement) bool { return a.from == q }) {
			continue
		}
		if _, ok := p.ihave[q]; !ok {
			p.order = append(p.order, q)
		}
		p.ihave[q] = append(p.ihave[q], &Announcement{Id: id, Round: round})
	}
}

func (p *Plumtree) flushIHave() {
	for _, q := range p.order {
		p.send(q, &Message{Body: &Message_Ihave{Ihave: &IHave{Announcements: p.ihave[q]}}})
		delete(p.ihave, q)
	}
	p.order = p.order[:0]
}

// moveToEager and moveToLazy change a neighbour's kind; peers that are not neighbours
// (any more) are left alone.
func (p *Plumtree) moveToEager(q peer.ID) {
	if i := slices.Index(p.lazy, q); i >= 0 {
		p.lazy = slices.Delete(p.lazy, i, i+1)
		p.eager = append(p.eager, q)
	}
}

func (p *Plumtree) moveToLazy(q peer.ID) {
	if i := slices.Index(p.eager, q); i >= 0 {
		p.eager = slices.Delete(p.eager, i, i+1)
		p.lazy = append(p.lazy, q)
	}
}

// remember records a received broadcast, forgetting the oldest beyond the bounds.
func (p *Plumtree) remember(id []byte, b *Broadcast, e seenEntry) {
	key := string(id)
	if len(p.seenFIFO) >= p.cfg.Seen {
		delete(p.seen, p.seenFIFO[0])
		p.seenFIFO = p.seenFIFO[1:]
	}
	p.seen[key] = e
	p.seenFIFO = append(p.seenFIFO, key)
	if len(p.cacheIDs) >= p.cfg.Cache {
		delete(p.cache, p.cacheIDs[0])
		p.cacheIDs = p.cacheIDs[1:]
	}
	p.cache[key] = b
	p.cacheIDs = append(p.cacheIDs, key)
}

func (p *Plumtree) forgetMissing(key string) {
	delete(p.missing, key)
	p.missingFIFO = slices.DeleteFunc(p.missingFIFO, func(k string) bool { return k == key })
	p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerMissing, Key: key}})
}
