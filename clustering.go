package unsserv

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
)

// clusteringOptions holds the options of NewClustering.
type clusteringOptions struct {
	tman clustering.TManConfig
	xbot clustering.XBOTConfig
}

// WithTMan sets T-Man's parameters (the Extreme profile's clustering); its zero value
// means the defaults. It does not pick the profile: give Extreme, or build the
// clustering over an Extreme membership.
func WithTMan(cfg clustering.TManConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.clustering.tman = cfg
		return nil
	})
}

// WithXBOT sets X-BOT's parameters (the Stable profile's clustering); its zero value
// means the defaults. It does not pick the profile.
func WithXBOT(cfg clustering.XBOTConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.clustering.xbot = cfg
		return nil
	})
}

// ClusteringProtocol returns the stream protocol of a clustering service.
func ClusteringProtocol(id string) protocol.ID {
	return protocol.ID("/unsserv/clustering/" + id)
}

// RankedNode is a clustered neighbour with its current rank (lower is better).
type RankedNode struct {
	Node
	Rank float64
}

// ClusteringStats are a clustering service's counters since it started.
type ClusteringStats struct {
	Algorithm   string     // "tman" or "xbot"
	Service     host.Stats // messages and bytes on the wire, violations
	Neighbours  int        // clustered neighbours now
	ViewChanges uint64     // times the clustered neighbours changed
}

// Clustering is an overlay whose neighbours are biased by a rank the application
// gives: T-Man (Extreme) or X-BOT (Stable) running as the stream protocol
// /unsserv/clustering/<id> over another overlay (a *Membership, or another
// *Clustering). It is itself an Overlay, so every service can run over it. Its
// neighbours are listed best ranked first (as the protocol last ranked them).
type Clustering struct {
	o         Overlay
	h         p2phost.Host
	id        string
	algorithm string
	profile   Profile
	meta      []byte
	rank      func(Node) float64
	svc       *host.Service

	rmu      sync.Mutex // serialises calls to rank, guards addrs and metas
	addrs    map[string][]ma.Multiaddr
	metas    map[peer.ID][]byte // metadata of the overlay's neighbours, for nodes known by ID
	changes  atomic.Uint64
	nmu      sync.Mutex // serialises neighbour updates to the core
	stopNeig func()

	neighbourSet // Neighbours (best ranked first), OnNeighboursChanged, WaitReady

	stop chan struct{}
	wg   sync.WaitGroup
}

var _ Overlay = (*Clustering)(nil)

// maxAddrCache bounds the parsed peer records NewClustering keeps (by record bytes).
const maxAddrCache = 4096

// NewClustering starts the clustering service id over overlay o and returns the
// clustered overlay: its neighbours are the nodes best ranked by rank among those the
// protocol finds, lower being better (as the quickstart's ranking function). rank gets
// a node with its ID, the addresses of its signed peer record (or, for a node known by
// ID alone, those of the peerstore) and the metadata it published (the Meta option of
// its membership). rank is called often, on the service's goroutine, one call at a
// time: it must be quick, must not block and must not panic; a NaN counts as +Inf
// (the worst). RTTRank is a ready rank by measured round-trip time.
//
// The algorithm follows the profile: X-BOT (Stable) or T-Man (Extreme), from the
// options or, without a profile option, the overlay's profile. Every node of the
// clustering id runs the same algorithm. The overlay's neighbours feed the protocol
// with random peers; the overlay itself is not changed, and Leave leaves it running.
func NewClustering(ctx context.Context, o Overlay, id string, rank func(Node) float64, opts ...Option) (*Clustering, error) {
	opt, profile, h, err := stackedSetup("clustering", o, id, opts, true)
	if err != nil {
		return nil, err
	}
	if rank == nil {
		return nil, fmt.Errorf("new clustering %s: rank is nil: pass a func(unsserv.Node) float64 (lower is better), e.g. unsserv.RTTRank", id)
	}
	meta := opt.meta
	if meta == nil {
		meta = overlayMeta(o)
	}
	c := &Clustering{
		o: o, h: h, id: id, profile: profile, meta: meta, rank: rank,
		addrs: map[string][]ma.Multiaddr{},
		metas: map[peer.ID][]byte{},
		stop:  make(chan struct{}),
	}
	c.neighbourSet.init("clustered neighbours in " + id)
	rng := newRand(opt.seed)
	var core protocols.Core
	switch profile {
	case Stable:
		c.algorithm = "xbot"
		core, err = clustering.NewXBOT(h.ID(), opt.clustering.xbot, c.coreRank, rng)
	case Extreme:
		c.algorithm = "tman"
		core, err = clustering.NewTMan(h.ID(), opt.clustering.tman, c.coreRank, rng)
	default:
		return nil, fmt.Errorf("new clustering %s: unknown profile %s", id, profile)
	}
	if err != nil {
		return nil, fmt.Errorf("new clustering %s: %w", id, err)
	}
	c.svc, err = host.NewService(h, core, host.ServiceConfig{
		Protocol:       ClusteringProtocol(id),
		Name:           "unsserv.clustering",
		NewMessage:     clusteringMessage(c.algorithm),
		OnEvent:        c.onEvent,
		MaxMessageSize: 256 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("new clustering %s: %w", id, err)
	}
	fail := func(err error) (*Clustering, error) {
		_ = c.Leave()
		return nil, fmt.Errorf("new clustering %s: %w", id, err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.notifier(c.stop)
	}()
	if c.stopNeig, err = feed(ctx, h, o, ClusteringProtocol(id), c.stop, &c.wg, c.updateNeighbours, c.updateSelf); err != nil {
		return fail(err)
	}
	if err := c.svc.Post(ctx, protocols.Start{}); err != nil {
		return fail(err)
	}
	return c, nil
}

// clusteringMessage returns the wire message constructor of an algorithm.
func clusteringMessage(algorithm string) func() proto.Message {
	if algorithm == "tman" {
		return func() proto.Message { return new(clustering.TManMessage) }
	}
	return func() proto.Message { return new(clustering.XBotMessage) }
}

// overlayMeta returns the metadata the overlay publishes for this node, if any.
func overlayMeta(o Overlay) []byte {
	switch v := o.(type) {
	case *Membership:
		return v.meta
	case *Clustering:
		return v.meta
	case interface{ Meta() []byte }:
		return v.Meta()
	}
	return nil
}

// updateSelf gives the core this node's descriptor: a fresh signed record and the
// metadata.
func (c *Clustering) updateSelf(ctx context.Context) error {
	rec, err := host.SelfRecord(c.h)
	if err != nil {
		return err
	}
	return c.svc.Post(ctx, protocols.SelfUpdated{Record: rec, Meta: c.meta})
}

// updateNeighbours gives the core the overlay's neighbours (its random peers), and
// keeps their metadata for nodes the core knows by ID alone.
func (c *Clustering) updateNeighbours(ctx context.Context) error {
	c.nmu.Lock()
	defer c.nmu.Unlock()
	ns := c.o.Neighbours()
	ids := make([]peer.ID, 0, len(ns))
	c.rmu.Lock()
	clear(c.metas)
	for _, n := range ns {
		ids = append(ids, n.ID)
		if len(n.Meta) > 0 {
			c.metas[n.ID] = n.Meta
		}
	}
	c.rmu.Unlock()
	return c.svc.Post(ctx, protocols.Neighbours{Peers: ids})
}

// coreRank is the rank the core calls: the node as the application sees it, ranked by
// the application's function, NaN taken as +Inf.
func (c *Clustering) coreRank(n clustering.Node) float64 {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.rankLocked(c.toNodeLocked(n))
}

func (c *Clustering) rankLocked(n Node) float64 {
	r := c.rank(n)
	if math.IsNaN(r) {
		return math.Inf(1)
	}
	return r
}

// toNodeLocked turns a core's node into a Node: addresses from its signed record
// (parsed once per record), or the peerstore's; metadata from the node, or from the
// overlay when the core knows the node by ID alone.
func (c *Clustering) toNodeLocked(n clustering.Node) Node {
	nd := Node{ID: n.ID, Meta: n.Meta}
	if len(n.Record) > 0 {
		addrs, ok := c.addrs[string(n.Record)]
		if !ok {
			addrs = recordAddrs(n.ID, n.Record)
			if len(c.addrs) >= maxAddrCache {
				clear(c.addrs)
			}
			c.addrs[string(n.Record)] = addrs
		}
		nd.Addrs = addrs
	}
	if len(nd.Addrs) == 0 {
		nd.Addrs = c.h.Peerstore().Addrs(n.ID)
	}
	if len(nd.Meta) == 0 {
		nd.Meta = c.metas[n.ID]
	}
	return nd
}

// onEvent runs on the service loop: it must not block.
func (c *Clustering) onEvent(out protocols.Output) {
	ev, ok := out.(clustering.ViewChanged)
	if !ok {
		return
	}
	c.rmu.Lock()
	ns := make([]Node, 0, len(ev.Nodes))
	for _, n := range ev.Nodes {
		ns = append(ns, c.toNodeLocked(n))
	}
	c.rmu.Unlock()
	c.changes.Add(1)
	c.set(ns)
}

// Ranked returns the clustered neighbours with their ranks now, best first.
func (c *Clustering) Ranked() []RankedNode {
	ns := c.Neighbours()
	rs := make([]RankedNode, len(ns))
	c.rmu.Lock()
	for i, n := range ns {
		rs[i] = RankedNode{Node: n, Rank: c.rankLocked(n)}
	}
	c.rmu.Unlock()
	slices.SortStableFunc(rs, func(a, b RankedNode) int {
		switch {
		case a.Rank < b.Rank:
			return -1
		case a.Rank > b.Rank:
			return 1
		}
		return 0
	})
	return rs
}

// Leave says goodbye to the clustered neighbours, stops the protocol and releases its
// streams and goroutines. The overlay below and the host stay up. Calling it again
// returns nil.
func (c *Clustering) Leave() error {
	if !c.close() {
		return nil
	}
	if c.stopNeig != nil {
		c.stopNeig()
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err := c.svc.Close(ctx)
	close(c.stop)
	c.wg.Wait()
	c.clear()
	return err
}

// Host returns the libp2p host the clustering runs on.
func (c *Clustering) Host() p2phost.Host { return c.h }

// Profile returns the profile the clustering runs (services stacked on it follow it).
func (c *Clustering) Profile() Profile { return c.profile }

// Meta returns the metadata this node publishes in the clustering.
func (c *Clustering) Meta() []byte { return c.meta }

// Algorithm names the algorithm running: "tman" or "xbot".
func (c *Clustering) Algorithm() string { return c.algorithm }

// Stats returns the service's counters.
func (c *Clustering) Stats() ClusteringStats {
	n := len(c.Neighbours())
	return ClusteringStats{Algorithm: c.algorithm, Service: c.svc.Stats(), Neighbours: n, ViewChanges: c.changes.Load()}
}
