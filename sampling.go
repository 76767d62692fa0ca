package unsserv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
)

// ErrSampleFailed is wrapped by the errors of Sample when the service gave up on a
// sample before the context ended (see SamplingWalkTimeout and WithRWD/WithMRWB's
// MaxAttempts and MaxPending).
var ErrSampleFailed = errors.New("no sample")

// samplingOptions holds the options of NewSampling.
type samplingOptions struct {
	walkLength  int
	walkTimeout time.Duration
	rwd         sampling.RWDConfig
	mrwb        sampling.MRWBConfig
}

// SamplingWalkLength sets the number of steps of the sampling walks, whichever the
// algorithm (defaults: 40 for RWD, 25 for MRWB). Longer walks cost more messages and
// time per sample and are closer to uniform on overlays that mix slowly (few links per
// node, clusters joined by few links).
func SamplingWalkLength(steps int) Option {
	return optionFunc(func(o *options) error {
		if steps < 1 || steps > 10000 {
			return fmt.Errorf("SamplingWalkLength(%d): give between 1 and 10,000 steps", steps)
		}
		o.sampling.walkLength = steps
		return nil
	})
}

// SamplingWalkTimeout sets how long a node waits for a walk it started to come back
// before it starts another one for the same sample (default 10 s). Sample itself waits
// as long as its context allows.
func SamplingWalkTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < time.Millisecond || d > time.Hour {
			return fmt.Errorf("SamplingWalkTimeout(%v): give a duration between 1 ms and 1 h", d)
		}
		o.sampling.walkTimeout = d
		return nil
	})
}

// WithRWD sets every parameter of RWD, the Stable profile's sampling (walk, bounds,
// MaxDegree and Quantum, which every node of a sampling id must share); its zero value
// means the defaults. SamplingWalkLength and SamplingWalkTimeout, when given, override
// its walk length and timeout.
func WithRWD(cfg sampling.RWDConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.sampling.rwd = cfg
		return nil
	})
}

// WithMRWB sets every parameter of MRWB, the Extreme profile's sampling; its zero value
// means the defaults. SamplingWalkLength and SamplingWalkTimeout, when given, override
// its walk length and timeout.
func WithMRWB(cfg sampling.MRWBConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.sampling.mrwb = cfg
		return nil
	})
}

// SamplingProtocol returns the stream protocol of a sampling service.
func SamplingProtocol(id string) protocol.ID {
	return protocol.ID("/unsserv/sampling/" + id)
}

// SamplingStats are a sampling service's counters since it started.
type SamplingStats struct {
	Algorithm string     // "rwd" or "mrwb"
	Service   host.Stats // messages and bytes on the wire, violations
	Samples   uint64     // Sample calls answered with a node
	Failed    uint64     // Sample calls the service gave up on (ErrSampleFailed)
	Expired   uint64     // Sample calls whose context ended first
}

// Sampling draws peers uniformly at random from an overlay: each sample is the end of
// a random walk that corrects for the overlay's irregular degrees.
type Sampling struct {
	o         Overlay
	h         p2phost.Host
	id        string
	algorithm string
	svc       *host.Service

	next    atomic.Uint64
	samples atomic.Uint64
	failed  atomic.Uint64
	expired atomic.Uint64

	mu      sync.Mutex
	closed  bool
	waiters map[uint64]chan sampleAnswer

	nmu       sync.Mutex // serialises neighbour updates to the core
	stopNeigh func()
	stop      chan struct{} // closed by Leave
	wg        sync.WaitGroup
}

type sampleAnswer struct {
	node   *sampling.Peer
	reason string // the core's reason, when it gave up
}

// NewSampling starts the sampling service id over overlay o (a *Membership, or any
// Overlay). Every member that runs the service can then be sampled, and can sample.
//
// The algorithm follows the profile: RWD (Stable) or MRWB (Extreme). Without a profile
// option it is the overlay's profile. The walks travel over the overlay's neighbours
// (taken as undirected links) on the stream protocol /unsserv/sampling/<id>; a sample's
// answer comes straight from the sampled peer.
func NewSampling(ctx context.Context, o Overlay, id string, opts ...Option) (*Sampling, error) {
	opt, profile, h, err := stackedSetup("sampling", o, id, opts, false)
	if err != nil {
		return nil, err
	}
	so := opt.sampling
	rng := newRand(opt.seed)
	var (
		core      protocols.Core
		algorithm string
	)
	switch profile {
	case Stable:
		algorithm = "rwd"
		cfg := so.rwd
		if so.walkLength > 0 {
			cfg.WalkLength = so.walkLength
		}
		if so.walkTimeout > 0 {
			cfg.WalkTimeout = so.walkTimeout
		}
		core, err = sampling.NewRWD(h.ID(), cfg, rng)
	case Extreme:
		algorithm = "mrwb"
		cfg := so.mrwb
		if so.walkLength > 0 {
			cfg.WalkLength = so.walkLength
		}
		if so.walkTimeout > 0 {
			cfg.WalkTimeout = so.walkTimeout
		}
		core, err = sampling.NewMRWB(h.ID(), cfg, rng)
	default:
		return nil, fmt.Errorf("new sampling %s: unknown profile %s", id, profile)
	}
	if err != nil {
		return nil, fmt.Errorf("new sampling %s: %w", id, err)
	}
	sa := &Sampling{
		o: o, h: h, id: id, algorithm: algorithm,
		waiters: map[uint64]chan sampleAnswer{},
		stop:    make(chan struct{}),
	}
	sa.svc, err = host.NewService(h, core, host.ServiceConfig{
		Protocol:       SamplingProtocol(id),
		Name:           "unsserv.sampling",
		NewMessage:     func() proto.Message { return new(sampling.Message) },
		OnEvent:        sa.onEvent,
		MaxMessageSize: 64 << 10,
		// Walks come in bursts through hubs: a longer queue than the default.
		QueueSize: 1024,
	})
	if err != nil {
		return nil, fmt.Errorf("new sampling %s: %w", id, err)
	}
	fail := func(err error) (*Sampling, error) {
		_ = sa.Leave()
		return nil, fmt.Errorf("new sampling %s: %w", id, err)
	}
	// Our descriptor, which walks and answers carry: the signed record lets the origin
	// of a walk, and the peer that asked for a sample, reach us.
	if sa.stopNeigh, err = feed(ctx, h, o, SamplingProtocol(id), sa.stop, &sa.wg, sa.updateNeighbours, sa.updateSelf); err != nil {
		return fail(err)
	}
	return sa, nil
}

func (sa *Sampling) updateSelf(ctx context.Context) error {
	rec, err := host.SelfRecord(sa.h)
	if err != nil {
		return err
	}
	var meta []byte
	if m, ok := sa.o.(interface{ Meta() []byte }); ok {
		meta = m.Meta()
	}
	return sa.svc.Post(ctx, protocols.SelfUpdated{Record: rec, Meta: meta})
}

func (sa *Sampling) updateNeighbours(ctx context.Context) error {
	sa.nmu.Lock()
	defer sa.nmu.Unlock()
	return sa.svc.Post(ctx, protocols.Neighbours{Peers: neighbourIDs(sa.o)})
}

// onEvent runs on the service loop: it must not block.
func (sa *Sampling) onEvent(out protocols.Output) {
	var (
		id uint64
		a  sampleAnswer
	)
	switch ev := out.(type) {
	case sampling.Sampled:
		id, a.node = ev.ID, ev.Node
	case sampling.SampleFailed:
		id, a.reason = ev.ID, ev.Reason
	default:
		return
	}
	sa.mu.Lock()
	ch, ok := sa.waiters[id]
	delete(sa.waiters, id)
	sa.mu.Unlock()
	if ok {
		ch <- a // buffered, and each request is answered once
	}
}

// Sample returns a peer of the overlay drawn uniformly at random, never this node. It
// waits until a walk brings one back, or ctx ends: then the error wraps ctx's error and
// says why no sample came (no neighbour, or walks that did not return in time). It
// returns an error wrapping ErrSampleFailed if the service gave up first, and ErrClosed
// after Leave. Any number of Sample calls may run at once.
func (sa *Sampling) Sample(ctx context.Context) (Node, error) {
	sa.mu.Lock()
	if sa.closed {
		sa.mu.Unlock()
		return Node{}, fmt.Errorf("sample on %s: %w", sa.id, ErrClosed)
	}
	id := sa.next.Add(1)
	ch := make(chan sampleAnswer, 1)
	sa.waiters[id] = ch
	sa.mu.Unlock()

	if err := sa.svc.Post(ctx, protocols.Call{Req: sampling.Sample{ID: id}}); err != nil {
		sa.forget(id)
		if errors.Is(err, host.ErrClosed) {
			return Node{}, fmt.Errorf("sample on %s: %w", sa.id, ErrClosed)
		}
		sa.expired.Add(1)
		return Node{}, sa.noSample(err)
	}
	select {
	case a := <-ch:
		if a.node == nil {
			sa.failed.Add(1)
			return Node{}, fmt.Errorf("sample on %s: %w: %s", sa.id, ErrSampleFailed, a.reason)
		}
		sa.samples.Add(1)
		return sa.toNode(a.node), nil
	case <-ctx.Done():
		sa.forget(id)
		sa.expired.Add(1)
		// Tell the core to stop: a short wait at most, the loop is rarely busy.
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = sa.svc.Post(cctx, protocols.Call{Req: sampling.Cancel{ID: id}})
		cancel()
		return Node{}, sa.noSample(ctx.Err())
	case <-sa.stop:
		return Node{}, fmt.Errorf("sample on %s: %w", sa.id, ErrClosed)
	}
}

// noSample explains a sample that did not come before the context ended.
func (sa *Sampling) noSample(err error) error {
	if n := len(sa.o.Neighbours()); n == 0 {
		return fmt.Errorf("sample on %s: no sample: this node has no neighbours in the overlay (isolated, or still joining: see WaitReady): %w", sa.id, err)
	}
	return fmt.Errorf("sample on %s: no walk came back in time (the overlay gives this node %d neighbours; each walk takes up to a few dozen hops): %w",
		sa.id, len(sa.o.Neighbours()), err)
}

func (sa *Sampling) forget(id uint64) {
	sa.mu.Lock()
	delete(sa.waiters, id)
	sa.mu.Unlock()
}

// toNode turns the descriptor the sampled peer sent (its record checked by the
// runtime) into a Node.
func (sa *Sampling) toNode(p *sampling.Peer) Node {
	n := Node{ID: p.PeerID(), Meta: p.GetMeta()}
	n.Addrs = recordAddrs(n.ID, p.GetRecord())
	if len(n.Addrs) == 0 {
		n.Addrs = sa.h.Peerstore().Addrs(n.ID)
	}
	if len(n.Meta) == 0 {
		for _, nb := range sa.o.Neighbours() {
			if nb.ID == n.ID {
				n.Meta = nb.Meta
				break
			}
		}
	}
	return n
}

// Algorithm names the algorithm running: "rwd" or "mrwb".
func (sa *Sampling) Algorithm() string { return sa.algorithm }

// Stats returns the service's counters.
func (sa *Sampling) Stats() SamplingStats {
	return SamplingStats{
		Algorithm: sa.algorithm, Service: sa.svc.Stats(),
		Samples: sa.samples.Load(), Failed: sa.failed.Load(), Expired: sa.expired.Load(),
	}
}

// Leave stops the service and releases its streams and goroutines; Sample calls in
// progress return ErrClosed. The overlay stays. Calling it again returns nil.
func (sa *Sampling) Leave() error {
	sa.mu.Lock()
	if sa.closed {
		sa.mu.Unlock()
		return nil
	}
	sa.closed = true
	sa.mu.Unlock()
	if sa.stopNeigh != nil {
		sa.stopNeigh()
	}
	close(sa.stop)
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err := sa.svc.Close(ctx)
	sa.wg.Wait()
	return err
}
