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
// the eager links settle into a spanning tree, one per origin (see the deviations). When a node hears of a broadcast by IHAVE
// and the broadcast itself does not follow within a timeout, it asks the announcer for it
// with GRAFT, which makes that link eager again: the tree repairs itself where links or
// nodes fail. The optimisation of the paper replaces a tree link when a lazy link offers
// a path shorter by at least Threshold hops.
//
// Deviations (see docs/dissemination.md):
//   - A tree per origin beside the paper's shared one. The shared tree evolves exactly as
//     in the paper (prune on duplicates, eager on receipt and GRAFT) but without the
//     optimisation; each origin's broadcasts follow a tree of their own (at most Trees
//     origins, the least recently used forgotten) that starts as a copy of the shared
//     tree, sees the same prunes and grafts for that origin, and is the only one the
//     optimisation changes. With one shared tree the optimisation, applied for one
//     origin, lengthens another's paths and the tree never settles; per origin it
//     converges, and a new origin still costs no flood. PRUNE and GRAFT name the origin.
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

	neigh  []peer.ID          // the membership's neighbours
	shared ptTree             // the paper's tree, template of new origins' trees
	trees  map[string]*ptTree // by origin
	uses   uint64             // clock of tree uses, for forgetting the least recent

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

// ptTree is one origin's split of the neighbours into eager and lazy peers.
type ptTree struct {
	eager, lazy []peer.ID
	used        uint64
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
	// Threshold is the hop gain that makes the paper's optimisation act: a broadcast
	// received by eager push that an announcer had offered over a path shorter by at
	// least Threshold hops makes that announcer's link a tree link and the sender's a
	// lazy one, in the origin's tree only. 0 means 1; negative switches it off.
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
	// Trees bounds the origins whose trees are kept (least recently used forgotten
	// first); 0 means 1,024. A tree costs a few peer IDs per neighbour.
	Trees int
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
	if c.Trees == 0 {
		c.Trees = 1024
	}
	if c.Threshold == 0 {
		c.Threshold = 1
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
	case c.Seen < 0, c.Cache < 0, c.Missing < 0, c.MaxGrafts < 0, c.Trees < 0:
		return &protocols.ConfigError{Field: "PlumtreeConfig.Seen/Cache/Missing/MaxGrafts/Trees", Reason: "must not be negative"}
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
		trees: map[string]*ptTree{},
		seen:  map[string]seenEntry{}, cache: map[string]*Broadcast{},
		missing: map[string]*missingEntry{}, ihave: map[peer.ID][]*Announcement{},
	}, nil
}

// Eager returns the eager push peers (the tree links) of origin's tree, or of the
// shared tree for an origin the node keeps no tree of (or "").
func (p *Plumtree) Eager(origin peer.ID) []peer.ID {
	if t, ok := p.trees[string(origin)]; ok {
		return slices.Clone(t.eager)
	}
	return slices.Clone(p.shared.eager)
}

// Lazy returns the lazy push peers of origin's tree (or of the shared tree).
func (p *Plumtree) Lazy(origin peer.ID) []peer.ID {
	if t, ok := p.trees[string(origin)]; ok {
		return slices.Clone(t.lazy)
	}
	return slices.Clone(p.shared.lazy)
}

// tree returns origin's tree, starting it with every neighbour eager.
func (p *Plumtree) tree(origin string) *ptTree {
	p.uses++
	t, ok := p.trees[origin]
	if !ok {
		if len(p.trees) >= p.cfg.Trees {
			var oldest string
			var min uint64
			for o, x := range p.trees {
				if oldest == "" || x.used < min || (x.used == min && o < oldest) {
					oldest, min = o, x.used
				}
			}
			delete(p.trees, oldest)
		}
		t = &ptTree{eager: slices.Clone(p.shared.eager), lazy: slices.Clone(p.shared.lazy)}
		p.trees[origin] = t
	}
	t.used = p.uses
	return t
}

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

// neighbours applies the membership's new neighbour set: newcomers are eager in every
// tree (the paper's NeighborUp), those gone are forgotten (NeighborDown).
func (p *Plumtree) neighbours(peers []peer.ID) {
	for _, q := range slices.Clone(p.neigh) {
		if !slices.Contains(peers, q) {
			p.neighborDown(q)
		}
	}
	for _, q := range peers {
		if q != p.selfID && q != "" && !slices.Contains(p.neigh, q) {
			p.neigh = append(p.neigh, q)
			p.shared.eager = append(p.shared.eager, q)
			for _, o := range p.treeOrigins() {
				t := p.trees[o]
				t.eager = append(t.eager, q)
			}
		}
	}
}

// treeOrigins returns the origins of the trees kept, sorted (a deterministic order).
func (p *Plumtree) treeOrigins() []string {
	os := make([]string, 0, len(p.trees))
	for o := range p.trees {
		os = append(os, o)
	}
	slices.Sort(os)
	return os
}

func (p *Plumtree) neighborDown(q peer.ID) {
	p.neigh = remove(p.neigh, q)
	p.shared.eager = remove(p.shared.eager, q)
	p.shared.lazy = remove(p.shared.lazy, q)
	for _, t := range p.trees {
		t.eager = remove(t.eager, q)
		t.lazy = remove(t.lazy, q)
	}
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
	t := p.tree(string(b.GetOrigin()))
	p.eagerPush(t, b, 0, "")
	p.lazyPush(t, id, 0, "", nil)
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
		if o := b.Prune.GetOrigin(); validOrigin(o) {
			p.tree(string(o)).moveToLazy(from)
			if !b.Prune.GetOptimise() {
				p.shared.moveToLazy(from)
			}
		}
	}
}

func (p *Plumtree) onGossip(from peer.ID, g *Gossip) {
	b := g.GetBroadcast()
	if b == nil {
		return
	}
	id := BroadcastID(b)
	key := string(id)
	if !validOrigin(b.GetOrigin()) {
		return
	}
	t := p.tree(string(b.GetOrigin()))
	if _, dup := p.seen[key]; dup {
		// A second copy: the link it came by is redundant.
		t.moveToLazy(from)
		p.shared.moveToLazy(from)
		p.send(from, &Message{Body: &Message_Prune{Prune: &Prune{Origin: b.GetOrigin()}}})
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
	p.eagerPush(t, b, round+1, from)
	p.lazyPush(t, id, round+1, from, announcers)
	t.moveToEager(from)
	p.shared.moveToEager(from)
	if waiting {
		p.optimise(t, b.GetOrigin(), e, round, from)
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
	// The origin is not known until the broadcast comes; its arrival from a.from makes
	// that link eager in the origin's tree.
	p.send(a.from, &Message{Body: &Message_Graft{Graft: &Graft{Id: []byte(key), Round: a.round}}})
}

// optimise is the paper's optimisation, on receiving a broadcast by eager push with
// round hops when it was also announced: if an announcer offered a path shorter by
// Threshold hops or more, its link becomes a tree link (GRAFT without id) and the
// sender's a lazy one (PRUNE).
func (p *Plumtree) optimise(t *ptTree, origin []byte, e *missingEntry, round uint32, sender peer.ID) {
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
	t.moveToEager(a.from)
	p.send(a.from, &Message{Body: &Message_Graft{Graft: &Graft{Round: a.round, Origin: origin}}})
	t.moveToLazy(sender)
	p.send(sender, &Message{Body: &Message_Prune{Prune: &Prune{Origin: origin, Optimise: true}}})
}

func (p *Plumtree) onGraft(from peer.ID, g *Graft) {
	if b, ok := p.cache[string(g.GetId())]; ok {
		p.tree(string(b.GetOrigin())).moveToEager(from)
		p.shared.moveToEager(from)
		round := p.seen[string(g.GetId())].round
		p.send(from, &Message{Body: &Message_Gossip{Gossip: &Gossip{Broadcast: b, Round: round + 1}}})
		return
	}
	if o := g.GetOrigin(); validOrigin(o) {
		p.tree(string(o)).moveToEager(from)
	}
}

// validOrigin reports whether o is a peer ID, so that a tree is kept for it.
func validOrigin(o []byte) bool {
	_, err := peer.IDFromBytes(o)
	return err == nil
}

func (p *Plumtree) eagerPush(t *ptTree, b *Broadcast, round uint32, except peer.ID) {
	for _, q := range t.eager {
		if q != except {
			p.send(q, &Message{Body: &Message_Gossip{Gossip: &Gossip{Broadcast: b, Round: round}}})
		}
	}
}

// lazyPush announces id to the lazy peers but except and those that announced it.
func (p *Plumtree) lazyPush(t *ptTree, id []byte, round uint32, except peer.ID, announcers []announcement) {
	for _, q := range t.lazy {
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

// moveToEager and moveToLazy change a neighbour's kind in a tree; peers that are not
// neighbours (any more) are left alone.
func (t *ptTree) moveToEager(q peer.ID) {
	if i := slices.Index(t.lazy, q); i >= 0 {
		t.lazy = slices.Delete(t.lazy, i, i+1)
		t.eager = append(t.eager, q)
	}
}

func (t *ptTree) moveToLazy(q peer.ID) {
	if i := slices.Index(t.eager, q); i >= 0 {
		t.eager = slices.Delete(t.eager, i, i+1)
		t.lazy = append(t.lazy, q)
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
