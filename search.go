package unsserv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
)

// ErrNotFound is wrapped by the errors of Search when no node answered: the search
// gave up (every walker used its hops, or the search timed out), or its context ended
// first (then the error wraps the context's error too).
var ErrNotFound = errors.New("not found")

// defaultSearchDataLimit is the size limit of published data unless SearchDataLimit
// says otherwise.
const defaultSearchDataLimit = 64 << 10

// maxSearchDataLimit bounds SearchDataLimit: data travels in one message.
const maxSearchDataLimit = 16 << 20

// searchOptions holds the options of NewSearch.
type searchOptions struct {
	kwalker   search.KWalkerConfig
	abloom    search.ABloomConfig
	dataLimit int
	timeout   time.Duration
}

// WithKWalker sets every parameter of KWalker, the Extreme profile's search (walkers,
// TTL, checking, bounds); its zero value means the defaults.
func WithKWalker(cfg search.KWalkerConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.search.kwalker = cfg
		return nil
	})
}

// WithABloom sets every parameter of ABloom, the Stable profile's search (filter depth,
// width and hashes, which every node of a search id must share; period, TTL, bounds);
// its zero value means the defaults.
func WithABloom(cfg search.ABloomConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.search.abloom = cfg
		return nil
	})
}

// SearchDataLimit sets the largest data Publish accepts, in bytes (default 64 KiB, at
// most 16 MiB). An answer carries the data in one message, so every node of a search
// id should use the same limit: a node with a smaller one drops larger answers.
func SearchDataLimit(n int) Option {
	return optionFunc(func(o *options) error {
		if n < 1 || n > maxSearchDataLimit {
			return fmt.Errorf("SearchDataLimit(%d): give between 1 byte and 16 MiB", n)
		}
		o.search.dataLimit = n
		return nil
	})
}

// SearchTimeout sets how long a search runs when its context has no deadline (default
// 10 s); with a deadline, the search runs until the deadline.
func SearchTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < time.Millisecond || d > time.Hour {
			return fmt.Errorf("SearchTimeout(%v): give a duration between 1 ms and 1 h", d)
		}
		o.search.timeout = d
		return nil
	})
}

// SearchProtocol returns the stream protocol of a search service.
func SearchProtocol(id string) protocol.ID {
	return protocol.ID("/unsserv/search/" + id)
}

// SearchResult is the answer to a search.
type SearchResult struct {
	// Data is the data as its node published it.
	Data []byte
	// From is the node that answered (this node when it holds the data itself).
	From Node
	// Hops is the number of overlay hops the query took to reach From (0: local).
	Hops int
}

// SearchStats are a search service's counters since it started.
type SearchStats struct {
	Algorithm string     // "abloom" or "kwalker"
	Service   host.Stats // messages and bytes on the wire, violations
	Published int        // items published here now
	Found     uint64     // Search calls answered with data
	NotFound  uint64     // Search calls the service gave up on
	Expired   uint64     // Search calls whose context ended first
}

// Search finds data published by the members of an overlay, without a DHT: queries
// travel over the overlay's links (ABloom in the Stable profile, KWalker in the
// Extreme one) and the node that holds the data answers the searcher directly.
type Search struct {
	o         Overlay
	h         p2phost.Host
	id        string
	algorithm string
	svc       *host.Service
	lim       search.Limits
	timeout   time.Duration

	next     atomic.Uint64
	found    atomic.Uint64
	notFound atomic.Uint64
	expired  atomic.Uint64

	mu      sync.Mutex // guards closed and waiters (onEvent takes it)
	closed  bool
	waiters map[uint64]chan searchAnswer

	pmu   sync.Mutex     // serialises Publish and Unpublish; guards items and bytes
	items map[string]int // published here: key -> bytes
	bytes int

	nmu       sync.Mutex // serialises neighbour updates to the core
	stopNeigh func()
	stop      chan struct{} // closed by Leave
	wg        sync.WaitGroup
}

type searchAnswer struct {
	found  *search.Found
	reason string
}

// NewSearch starts the search service id over overlay o (a *Membership, or any
// Overlay). Every member that runs the service answers searches for the data it
// published, and can search.
//
// The algorithm follows the profile: ABloom (Stable) or KWalker (Extreme). Without a
// profile option it is the overlay's profile. Queries travel over the overlay's
// neighbours on the stream protocol /unsserv/search/<id>.
func NewSearch(ctx context.Context, o Overlay, id string, opts ...Option) (*Search, error) {
	opt, profile, h, err := stackedSetup("search", o, id, opts, false)
	if err != nil {
		return nil, err
	}
	so := opt.search
	// limits completes the algorithm's bounds with the data limit and the timeout.
	limits := func(l search.Limits) search.Limits {
		d := so.dataLimit
		if d == 0 {
			d = l.MaxData
		}
		if d == 0 {
			d = defaultSearchDataLimit
		}
		l.MaxData = d
		l = withSearchDefaults(l)
		l.MaxBytes = max(l.MaxBytes, d)
		if so.timeout > 0 {
			l.Timeout = so.timeout
		}
		return l
	}
	rng := newRand(opt.seed)
	var (
		core      protocols.Core
		algorithm string
		lim       search.Limits
		wire      int // the largest message apart from the data
	)
	switch profile {
	case Stable:
		algorithm = "abloom"
		cfg := so.abloom
		cfg.Limits = limits(cfg.Limits)
		lim = cfg.Limits
		d := cfg.WithDefaults()
		wire = d.Depth * (d.Bits/8 + 8)
		core, err = search.NewABloom(h.ID(), cfg, rng)
	case Extreme:
		algorithm = "kwalker"
		cfg := so.kwalker
		cfg.Limits = limits(cfg.Limits)
		lim = cfg.Limits
		core, err = search.NewKWalker(h.ID(), cfg, rng)
	default:
		return nil, fmt.Errorf("new search %s: unknown profile %s", id, profile)
	}
	if err != nil {
		return nil, fmt.Errorf("new search %s: %w", id, err)
	}
	s := &Search{
		o: o, h: h, id: id, algorithm: algorithm, lim: lim, timeout: lim.Timeout,
		waiters: map[uint64]chan searchAnswer{}, items: map[string]int{},
		stop: make(chan struct{}),
	}
	s.svc, err = host.NewService(h, core, host.ServiceConfig{
		Protocol:   SearchProtocol(id),
		Name:       "unsserv.search",
		NewMessage: func() proto.Message { return new(search.Message) },
		OnEvent:    s.onEvent,
		// An answer carries the data, a key and two descriptors; a query its path.
		MaxMessageSize: max(lim.MaxData, wire) + 32<<10,
		QueueSize:      1024,
		QueueBytes:     4*lim.MaxData + 1<<20,
	})
	if err != nil {
		return nil, fmt.Errorf("new search %s: %w", id, err)
	}
	fail := func(err error) (*Search, error) {
		_ = s.Leave()
		return nil, fmt.Errorf("new search %s: %w", id, err)
	}
	// Our descriptor, which queries and answers carry: the signed record lets the node
	// that holds the data reach the searcher directly.
	if s.stopNeigh, err = feed(ctx, h, o, SearchProtocol(id), s.stop, &s.wg, s.updateNeighbours, s.updateSelf); err != nil {
		return fail(err)
	}
	return s, nil
}

// withSearchDefaults fills in the zero bounds as the cores do.
func withSearchDefaults(l search.Limits) search.Limits {
	return search.KWalkerConfig{Limits: l}.WithDefaults().Limits
}

func (s *Search) updateSelf(ctx context.Context) error {
	rec, err := host.SelfRecord(s.h)
	if err != nil {
		return err
	}
	return s.svc.Post(ctx, protocols.SelfUpdated{Record: rec})
}

func (s *Search) updateNeighbours(ctx context.Context) error {
	s.nmu.Lock()
	defer s.nmu.Unlock()
	return s.svc.Post(ctx, protocols.Neighbours{Peers: neighbourIDs(s.o)})
}

// onEvent runs on the service loop: it must not block.
func (s *Search) onEvent(out protocols.Output) {
	var (
		id uint64
		a  searchAnswer
	)
	switch ev := out.(type) {
	case search.Found:
		id, a.found = ev.ID, &ev
	case search.NotFound:
		id, a.reason = ev.ID, ev.Reason
	default:
		return
	}
	s.mu.Lock()
	ch, ok := s.waiters[id]
	delete(s.waiters, id)
	s.mu.Unlock()
	if ok {
		ch <- a // buffered, and each search is answered once
	}
}

// Publish makes data findable under id by the other members (replacing what this node
// published under id before). The data is kept by this node, which answers searches
// for id until Unpublish or Leave. It returns an error when data is over the size
// limit (see SearchDataLimit), when this node holds too many items or bytes (the
// Limits of WithABloom or WithKWalker), and ErrClosed after Leave.
func (s *Search) Publish(ctx context.Context, id string, data []byte) error {
	if id == "" || len(id) > search.MaxKey {
		return fmt.Errorf("publish %q on %s: the id must be 1 to %d bytes", id, s.id, search.MaxKey)
	}
	if len(data) > s.lim.MaxData {
		return fmt.Errorf("publish %q on %s: data is %d bytes, over the limit of %d bytes: raise it with unsserv.SearchDataLimit (on every node of the search), or publish a smaller piece",
			id, s.id, len(data), s.lim.MaxData)
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.isClosed() {
		return fmt.Errorf("publish %q on %s: %w", id, s.id, ErrClosed)
	}
	old, had := s.items[id]
	if !had && len(s.items) >= s.lim.MaxItems {
		return fmt.Errorf("publish %q on %s: this node already publishes %d items, the limit (raise Limits.MaxItems in WithABloom or WithKWalker, or Unpublish some)", id, s.id, len(s.items))
	}
	if total := s.bytes - old + len(data); total > s.lim.MaxBytes {
		return fmt.Errorf("publish %q on %s: this node would publish %d bytes in all, over the limit of %d (raise Limits.MaxBytes in WithABloom or WithKWalker, or Unpublish some)", id, s.id, total, s.lim.MaxBytes)
	}
	if err := s.svc.Post(ctx, protocols.Call{Req: search.Publish{Key: id, Data: slices.Clone(data)}}); err != nil {
		return fmt.Errorf("publish %q on %s: %w", id, s.id, err)
	}
	s.items[id] = len(data)
	s.bytes += len(data) - old
	return nil
}

// Unpublish withdraws id from this node: searches stop finding it here at once (ABloom's
// filters forget it within a few of their periods; meanwhile they may route a query
// here, which then goes on elsewhere). Unpublishing an id not published does nothing.
func (s *Search) Unpublish(ctx context.Context, id string) error {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.isClosed() {
		return fmt.Errorf("unpublish %q on %s: %w", id, s.id, ErrClosed)
	}
	if err := s.svc.Post(ctx, protocols.Call{Req: search.Unpublish{Key: id}}); err != nil {
		return fmt.Errorf("unpublish %q on %s: %w", id, s.id, err)
	}
	if n, ok := s.items[id]; ok {
		s.bytes -= n
		delete(s.items, id)
	}
	return nil
}

func (s *Search) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Published returns the ids this node publishes, sorted.
func (s *Search) Published() []string {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	ids := make([]string, 0, len(s.items))
	for id := range s.items {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Search looks for the data published under id, here first, then in the network, and
// returns the first answer: the bytes as published and the node that answered. It
// returns an error wrapping ErrNotFound when the search gives up (for ABloom and
// KWalker, when every query used its hops; in any case by ctx's deadline, or after
// SearchTimeout if ctx has none), wrapping ctx's error too if ctx ended first. It
// returns ErrClosed after Leave. Any number of searches may run at once.
func (s *Search) Search(ctx context.Context, id string) (SearchResult, error) {
	start := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return SearchResult{}, fmt.Errorf("search %q on %s: %w", id, s.id, ErrClosed)
	}
	n := s.next.Add(1)
	ch := make(chan searchAnswer, 1)
	s.waiters[n] = ch
	s.mu.Unlock()

	timeout := s.timeout
	if dl, ok := ctx.Deadline(); ok {
		// The core gives up just after the deadline: the context ends first, and the
		// error says so.
		timeout = time.Until(dl) + 100*time.Millisecond
	}
	if err := ctx.Err(); err != nil {
		s.forget(n)
		s.expired.Add(1)
		return SearchResult{}, fmt.Errorf("search %q: %w: the context ended before the search began: %w", id, ErrNotFound, context.Cause(ctx))
	}
	if err := s.svc.Post(ctx, protocols.Call{Req: search.Search{ID: n, Key: id, Timeout: timeout}}); err != nil {
		s.forget(n)
		if errors.Is(err, host.ErrClosed) {
			return SearchResult{}, fmt.Errorf("search %q on %s: %w", id, s.id, ErrClosed)
		}
		s.expired.Add(1)
		return SearchResult{}, fmt.Errorf("search %q: %w after %v: %w", id, ErrNotFound, time.Since(start).Round(time.Millisecond), err)
	}
	select {
	case a := <-ch:
		if a.found == nil {
			s.notFound.Add(1)
			return SearchResult{}, fmt.Errorf("search %q: %w after %v: %s", id, ErrNotFound, time.Since(start).Round(time.Millisecond), a.reason)
		}
		s.found.Add(1)
		return SearchResult{Data: a.found.Data, From: s.toNode(a.found.From, a.found.Node), Hops: a.found.Hops}, nil
	case <-ctx.Done():
		s.forget(n)
		s.expired.Add(1)
		// Tell the core to stop: a short wait at most, the loop is rarely busy.
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.svc.Post(cctx, protocols.Call{Req: search.Cancel{ID: n}})
		cancel()
		return SearchResult{}, fmt.Errorf("search %q: %w after %v (the overlay gives this node %d neighbours): %w",
			id, ErrNotFound, time.Since(start).Round(time.Millisecond), len(s.o.Neighbours()), ctx.Err())
	case <-s.stop:
		return SearchResult{}, fmt.Errorf("search %q on %s: %w", id, s.id, ErrClosed)
	}
}

func (s *Search) forget(n uint64) {
	s.mu.Lock()
	delete(s.waiters, n)
	s.mu.Unlock()
}

// toNode turns the answering node's descriptor (its record checked by the runtime)
// into a Node.
func (s *Search) toNode(from peer.ID, p *search.Peer) Node {
	n := Node{ID: from, Addrs: recordAddrs(from, p.GetRecord())}
	if len(n.Addrs) == 0 {
		if from == s.h.ID() {
			n.Addrs = s.h.Addrs()
		} else {
			n.Addrs = s.h.Peerstore().Addrs(n.ID)
		}
	}
	for _, nb := range s.o.Neighbours() {
		if nb.ID == n.ID {
			n.Meta = nb.Meta
			break
		}
	}
	if from == s.h.ID() {
		if m, ok := s.o.(interface{ Meta() []byte }); ok {
			n.Meta = m.Meta()
		}
	}
	return n
}

// Algorithm names the algorithm running: "abloom" or "kwalker".
func (s *Search) Algorithm() string { return s.algorithm }

// Stats returns the service's counters.
func (s *Search) Stats() SearchStats {
	s.pmu.Lock()
	published := len(s.items)
	s.pmu.Unlock()
	return SearchStats{
		Algorithm: s.algorithm, Service: s.svc.Stats(), Published: published,
		Found: s.found.Load(), NotFound: s.notFound.Load(), Expired: s.expired.Load(),
	}
}

// Leave stops the service and releases its streams and goroutines; the data published
// here is no longer found, and Search calls in progress return ErrClosed. The overlay
// stays. Calling it again returns nil.
func (s *Search) Leave() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.stopNeigh != nil {
		s.stopNeigh()
	}
	close(s.stop)
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err := s.svc.Close(ctx)
	s.wg.Wait()
	return err
}
