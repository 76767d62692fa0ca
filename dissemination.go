package unsserv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/crypto"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/dissemination"
)

var log = logging.Logger("unsserv")

// DefaultMaxPayload is the default limit on a broadcast's payload (1 MiB).
const DefaultMaxPayload = 1 << 20

// ErrDeliveryOverflow is reported (see OnError) when broadcasts arrive faster than the
// handler takes them and the delivery queue is full: those broadcasts are not handed to
// the handler. Stats counts them.
var ErrDeliveryOverflow = errors.New("delivery queue full: the broadcast handler is too slow")

// Broadcast is a broadcast as the application receives it.
type Broadcast struct {
	// From is the peer that broadcast it (its signature was checked).
	From peer.ID
	// Seq is the origin's sequence number for it.
	Seq uint64
	// Data is the payload as broadcast.
	Data []byte
	// Hops is how many links it crossed to get here.
	Hops int
}

// OneToMany picks the one-to-many dissemination algorithm of the profile (Brisa for
// Stable, Mon for Extreme), for a network where one node (or a few) broadcasts a stream
// to the others. Without it the many-to-many one runs (Plumtree, LPBCast).
var OneToMany Option = optionFunc(func(o *options) error {
	o.dissemination.oneToMany = true
	return nil
})

type disseminationOptions struct {
	set         bool // some dissemination option was given
	oneToMany   bool
	maxPayload  int
	queue       int
	onBroadcast func(Broadcast)
	onError     func(error)
	trace       func(MessageTrace)
	plumtree    dissemination.PlumtreeConfig
	lpbcast     dissemination.LPBCastConfig
	mon         dissemination.MonConfig
	brisa       dissemination.BrisaConfig
}

func dissOpt(f func(*disseminationOptions) error) Option {
	return optionFunc(func(o *options) error {
		o.dissemination.set = true
		return f(&o.dissemination)
	})
}

// MaxPayload sets the largest payload Broadcast accepts and receivers take, in bytes
// (default DefaultMaxPayload). Every member of a network should use the same limit.
func MaxPayload(n int) Option {
	return dissOpt(func(d *disseminationOptions) error {
		if n <= 0 || n > 64<<20 {
			return fmt.Errorf("MaxPayload(%d): give a size between 1 byte and 64 MiB", n)
		}
		d.maxPayload = n
		return nil
	})
}

// DeliveryQueue sets how many received broadcasts may wait for the handler (default
// 1024). Beyond that they are dropped, counted and reported to OnError.
func DeliveryQueue(n int) Option {
	return dissOpt(func(d *disseminationOptions) error {
		if n <= 0 {
			return fmt.Errorf("DeliveryQueue(%d): give a positive queue length", n)
		}
		d.queue = n
		return nil
	})
}

// OnBroadcast calls f for every broadcast received, with its origin, after the handler
// given to NewDissemination (which may be nil when this is used).
func OnBroadcast(f func(Broadcast)) Option {
	return dissOpt(func(d *disseminationOptions) error {
		d.onBroadcast = f
		return nil
	})
}

// OnError calls f with errors the service meets in the background: ErrDeliveryOverflow
// (wrapped, with the count), and rejected broadcasts (forged, altered or oversized).
// f must not block.
func OnError(f func(error)) Option {
	return dissOpt(func(d *disseminationOptions) error {
		d.onError = f
		return nil
	})
}

// MessageTrace describes one message of a service on the wire, for TraceMessages.
type MessageTrace struct {
	Out  bool          // written to Peer (else read from Peer)
	Peer peer.ID       // the other end
	Msg  proto.Message // the decoded message: do not change or keep it
	Size int           // framed bytes on the stream
}

// TraceMessages calls f for every message the service writes or reads, from the
// stream goroutines, concurrently. f must be quick. For experiments and debugging.
func TraceMessages(f func(MessageTrace)) Option {
	return dissOpt(func(d *disseminationOptions) error {
		d.trace = f
		return nil
	})
}

// WithPlumtree sets Plumtree's parameters (Stable, many-to-many); its zero value means
// the defaults.
func WithPlumtree(cfg dissemination.PlumtreeConfig) Option {
	return dissOpt(func(d *disseminationOptions) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		d.plumtree = cfg
		return nil
	})
}

// WithLPBCast sets LPBCast's parameters (Extreme, many-to-many); its zero value means
// the defaults.
func WithLPBCast(cfg dissemination.LPBCastConfig) Option {
	return dissOpt(func(d *disseminationOptions) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		d.lpbcast = cfg
		return nil
	})
}

// WithBrisa sets Brisa's parameters (Stable, one-to-many); its zero value means the
// defaults.
func WithBrisa(cfg dissemination.BrisaConfig) Option {
	return dissOpt(func(d *disseminationOptions) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		d.brisa = cfg
		return nil
	})
}

// WithMon sets Mon's parameters (Extreme, one-to-many); its zero value means the
// defaults.
func WithMon(cfg dissemination.MonConfig) Option {
	return dissOpt(func(d *disseminationOptions) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		d.mon = cfg
		return nil
	})
}

// DisseminationProtocol returns the stream protocol of a dissemination service.
func DisseminationProtocol(id string) protocol.ID {
	return protocol.ID("/unsserv/dissemination/" + id)
}

// DisseminationStats are a dissemination service's counters since it started.
type DisseminationStats struct {
	Algorithm  string     // "plumtree", "brisa", "lpbcast" or "mon"
	Service    host.Stats // messages and bytes on the wire, violations
	Broadcasts uint64     // broadcasts this node published
	Delivered  uint64     // broadcasts handed to the application
	Overflow   uint64     // broadcasts dropped because the delivery queue was full
	Duplicates uint64     // deliveries suppressed as already handed over
	PayloadsIn uint64     // broadcast copies received over the network
	Rejected   uint64     // broadcasts refused: bad signature, oversized
}

// Dissemination broadcasts data to every member of an overlay.
type Dissemination struct {
	o         Overlay
	h         p2phost.Host
	id        string
	algorithm string
	priv      crypto.PrivKey
	svc       *host.Service
	opts      disseminationOptions
	handler   func([]byte)

	seq        atomic.Uint64
	broadcasts atomic.Uint64
	delivered  atomic.Uint64
	overflow   atomic.Uint64
	duplicates atomic.Uint64
	payloadsIn atomic.Uint64
	rejected   atomic.Uint64

	dedup *originWindows // loop goroutine only

	queue chan Broadcast
	stop  chan struct{}
	wg    sync.WaitGroup

	nmu       sync.Mutex // serialises neighbour updates to the core
	stopNeigh func()

	mu     sync.Mutex
	closed bool
}

// NewDissemination starts the dissemination service id over overlay o (a *Membership,
// or any Overlay) and calls handler with the payload of every broadcast this node
// receives, one at a time, in the order they arrive (never with its own broadcasts).
//
// The algorithm follows the profile: Plumtree (Stable) or LPBCast (Extreme), or with
// OneToMany, Brisa or Mon. Without a profile option it is the overlay's profile.
// Every broadcast is signed with the host's key and checked on arrival; a forged or
// altered one is dropped, counted, and its sender treated as broken.
func NewDissemination(ctx context.Context, o Overlay, id string, handler func([]byte), opts ...Option) (*Dissemination, error) {
	opt, profile, h, err := stackedSetup("dissemination", o, id, opts, false)
	if err != nil {
		return nil, err
	}
	d := opt.dissemination
	if handler == nil && d.onBroadcast == nil {
		return nil, fmt.Errorf("new dissemination %s: no handler: pass a func([]byte) or the OnBroadcast option", id)
	}
	if d.maxPayload == 0 {
		d.maxPayload = DefaultMaxPayload
	}
	if d.queue == 0 {
		d.queue = 1024
	}
	priv := h.Peerstore().PrivKey(h.ID())
	if priv == nil {
		return nil, fmt.Errorf("new dissemination %s: the host's peerstore holds no private key for %s, so broadcasts cannot be signed", id, h.ID())
	}

	rng := newRand(opt.seed)
	var (
		core      protocols.Core
		algorithm string
		newMsg    func() proto.Message
	)
	if profile != Stable && profile != Extreme {
		return nil, fmt.Errorf("new dissemination %s: unknown profile %s", id, profile)
	}
	switch {
	case profile == Stable && !d.oneToMany:
		algorithm, newMsg = "plumtree", func() proto.Message { return new(dissemination.Message) }
		core, err = dissemination.NewPlumtree(h.ID(), d.plumtree, rng)
	case profile == Stable && d.oneToMany:
		algorithm, newMsg = "brisa", func() proto.Message { return new(dissemination.BrisaMessage) }
		core, err = dissemination.NewBrisa(h.ID(), d.brisa, rng)
	case profile == Extreme && !d.oneToMany:
		algorithm, newMsg = "lpbcast", func() proto.Message { return new(dissemination.LPBCastMessage) }
		cfg := d.lpbcast
		if cfg.MaxBytes == 0 {
			cfg.MaxBytes = d.maxPayload
		}
		core, err = dissemination.NewLPBCast(h.ID(), cfg, rng)
	case profile == Extreme && d.oneToMany:
		algorithm, newMsg = "mon", func() proto.Message { return new(dissemination.MonMessage) }
		cfg := d.mon
		if cfg.MaxBytes == 0 {
			cfg.MaxBytes = d.maxPayload
		}
		core, err = dissemination.NewMon(h.ID(), cfg, rng)
	}
	if err != nil {
		return nil, fmt.Errorf("new dissemination %s: %w", id, err)
	}

	di := &Dissemination{
		o: o, h: h, id: id, algorithm: algorithm, priv: priv, opts: d, handler: handler,
		dedup: newOriginWindows(4096, 4096),
		queue: make(chan Broadcast, d.queue),
		stop:  make(chan struct{}),
	}
	// Sequence numbers start at the clock, so a restarted node (same key) never reuses
	// one that receivers still remember.
	di.seq.Store(uint64(time.Now().UnixNano()))
	di.svc, err = host.NewService(h, core, host.ServiceConfig{
		Protocol:       DisseminationProtocol(id),
		Name:           "unsserv.dissemination",
		NewMessage:     newMsg,
		OnEvent:        di.onEvent,
		Check:          di.check,
		Trace:          traceFunc(d.trace),
		MaxMessageSize: 4*d.maxPayload + 64<<10,
		// Broadcasts come in bursts (every broadcast is a message to each neighbour):
		// a long queue, bounded in bytes too.
		QueueSize:  4096,
		QueueBytes: max(32<<20, 8*d.maxPayload),
	})
	if err != nil {
		return nil, fmt.Errorf("new dissemination %s: %w", id, err)
	}
	di.wg.Add(1)
	go di.deliver()
	// A neighbour the runtime reported down (its service was not running yet, or a
	// stream broke) is dropped by the core until the overlay's neighbours are passed
	// again: feed passes them when it starts the service and every resyncPeriod.
	if di.stopNeigh, err = feed(ctx, h, o, DisseminationProtocol(id), di.stop, &di.wg, di.updateNeighbours, nil); err != nil {
		_ = di.Leave()
		return nil, fmt.Errorf("new dissemination %s: %w", id, err)
	}
	return di, nil
}

func traceFunc(f func(MessageTrace)) func(bool, peer.ID, proto.Message, int) {
	if f == nil {
		return nil
	}
	return func(out bool, p peer.ID, msg proto.Message, size int) {
		f(MessageTrace{Out: out, Peer: p, Msg: msg, Size: size})
	}
}

func (di *Dissemination) updateNeighbours(ctx context.Context) error {
	di.nmu.Lock()
	defer di.nmu.Unlock()
	return di.svc.Post(ctx, protocols.Neighbours{Peers: neighbourIDs(di.o)})
}

// check runs on stream reader goroutines: it verifies every broadcast a message carries.
func (di *Dissemination) check(from peer.ID, msg proto.Message) error {
	c, ok := msg.(dissemination.Carrier)
	if !ok {
		return fmt.Errorf("unexpected message type %T", msg)
	}
	for _, b := range c.Broadcasts() {
		di.payloadsIn.Add(1)
		var err error
		if len(b.GetPayload()) > di.opts.maxPayload {
			err = fmt.Errorf("broadcast payload of %d bytes over the limit of %d", len(b.GetPayload()), di.opts.maxPayload)
		} else {
			err = dissemination.Verify(b)
		}
		if err != nil {
			di.rejected.Add(1)
			di.report(fmt.Errorf("dissemination %s: from %s: %w", di.id, from, err))
			return err
		}
	}
	return nil
}

func (di *Dissemination) report(err error) {
	log.Debugw("dissemination", "id", di.id, "err", err)
	if di.opts.onError != nil {
		di.opts.onError(err)
	}
}

// onEvent runs on the service loop: it must not block.
func (di *Dissemination) onEvent(out protocols.Output) {
	ev, ok := out.(dissemination.Delivered)
	if !ok || ev.Broadcast == nil {
		return
	}
	b := ev.Broadcast
	origin, err := peer.IDFromBytes(b.GetOrigin())
	if err != nil || origin == di.h.ID() {
		return
	}
	if !di.dedup.first(origin, b.GetSeq()) {
		di.duplicates.Add(1)
		return
	}
	select {
	case di.queue <- Broadcast{From: origin, Seq: b.GetSeq(), Data: b.GetPayload(), Hops: int(ev.Round)}:
	default:
		n := di.overflow.Add(1)
		di.report(fmt.Errorf("dissemination %s: broadcast %d from %s dropped (%d so far): %w", di.id, b.GetSeq(), origin.ShortString(), n, ErrDeliveryOverflow))
	}
}

// deliver hands queued broadcasts to the application, one at a time.
func (di *Dissemination) deliver() {
	defer di.wg.Done()
	for {
		select {
		case <-di.stop:
			return
		case b := <-di.queue:
			di.delivered.Add(1)
			if di.handler != nil {
				di.handler(b.Data)
			}
			if di.opts.onBroadcast != nil {
				di.opts.onBroadcast(b)
			}
		}
	}
}

// Broadcast sends data to every member of the overlay. It returns once the broadcast is
// signed and handed to the protocol (which then spreads it in the background), or with
// an error: the payload is over the limit (MaxPayload), the service has left, or ctx
// ended first. The same data broadcast twice is two broadcasts.
func (di *Dissemination) Broadcast(ctx context.Context, data []byte) error {
	di.mu.Lock()
	closed := di.closed
	di.mu.Unlock()
	if closed {
		return fmt.Errorf("broadcast on %s: %w", di.id, ErrClosed)
	}
	if len(data) > di.opts.maxPayload {
		return fmt.Errorf("broadcast on %s: payload is %d bytes; the limit is %d (raise it with unsserv.MaxPayload on every member)", di.id, len(data), di.opts.maxPayload)
	}
	b := &dissemination.Broadcast{Seq: di.seq.Add(1), Payload: append([]byte(nil), data...)}
	if err := dissemination.Sign(di.priv, b); err != nil {
		return fmt.Errorf("broadcast on %s: %w", di.id, err)
	}
	if err := di.svc.Post(ctx, protocols.Call{Req: dissemination.Publish{Broadcast: b}}); err != nil {
		return fmt.Errorf("broadcast on %s: %w", di.id, err)
	}
	di.broadcasts.Add(1)
	return nil
}

// Algorithm names the algorithm running: "plumtree", "brisa", "lpbcast" or "mon".
func (di *Dissemination) Algorithm() string { return di.algorithm }

// Stats returns the service's counters.
func (di *Dissemination) Stats() DisseminationStats {
	return DisseminationStats{
		Algorithm: di.algorithm, Service: di.svc.Stats(),
		Broadcasts: di.broadcasts.Load(), Delivered: di.delivered.Load(),
		Overflow: di.overflow.Load(), Duplicates: di.duplicates.Load(),
		PayloadsIn: di.payloadsIn.Load(), Rejected: di.rejected.Load(),
	}
}

// Leave stops the service and releases its streams and goroutines; broadcasts still
// queued for the handler are not delivered. The overlay stays. Calling it again returns
// nil.
func (di *Dissemination) Leave() error {
	di.mu.Lock()
	if di.closed {
		di.mu.Unlock()
		return nil
	}
	di.closed = true
	di.mu.Unlock()
	if di.stopNeigh != nil {
		di.stopNeigh()
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err := di.svc.Close(ctx)
	close(di.stop)
	di.wg.Wait()
	return err
}
