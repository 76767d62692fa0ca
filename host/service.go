package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/event"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

var log = logging.Logger("unsserv/runtime")

// ErrClosed is returned by calls on a service that has stopped.
var ErrClosed = errors.New("service closed")

// ServiceConfig says how to run one core as one stream protocol.
type ServiceConfig struct {
	// Protocol is the stream protocol, /unsserv/<service>/<id>. Required.
	Protocol protocol.ID
	// Name is the resource manager's service name for the streams (e.g.
	// "unsserv.membership"), so that limits can apply across ids. Required.
	Name string
	// NewMessage returns an empty wire message to decode into. Required.
	NewMessage func() proto.Message
	// OnEvent receives every output of the core that is not for the runtime (service
	// events). It runs on the service loop: it must return quickly and not call back
	// into the service.
	OnEvent func(protocols.Output)

	// Check, if set, vets every decoded message before the core sees it (for example
	// signatures). It runs on the stream's reader goroutine, so it may be slow and run
	// concurrently with itself. An error counts as a protocol violation: the stream is
	// reset and the sender dropped.
	Check func(from peer.ID, msg proto.Message) error

	// Trace, if set, sees every message read (out false, after Check) and every message
	// written (out true), with its framed size. It is called from the stream goroutines,
	// concurrently: it must be quick and must not change the message.
	Trace func(out bool, p peer.ID, msg proto.Message, size int)

	// MaxMessageSize is the largest message accepted; a bigger one resets the stream and
	// drops its sender. 0 means 1 MiB.
	MaxMessageSize int
	// QueueSize bounds the messages waiting to be written to one peer; a message that
	// finds the queue full is dropped and counted. 0 means 128.
	QueueSize int
	// QueueBytes, if positive, also bounds the encoded bytes waiting for one peer (for
	// services whose messages can be large, such as broadcasts); a message that would
	// pass it is dropped and counted like one that finds the queue full.
	QueueBytes int
	// DialTimeout bounds opening a stream to a peer (connect, identify, negotiate).
	// 0 means 10 s.
	DialTimeout time.Duration
	// WriteTimeout bounds writing one message. 0 means 30 s.
	WriteTimeout time.Duration
	// IdleTimeout closes an outgoing stream to a peer that is not a neighbour after this
	// long without traffic. 0 means 1 min.
	IdleTimeout time.Duration
	// FlushTimeout bounds how long Close waits for queued messages (the core's
	// goodbyes) to be written, whatever the context given to Close. 0 means 5 s.
	FlushTimeout time.Duration
}

func (c ServiceConfig) withDefaults() ServiceConfig {
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.QueueSize == 0 {
		c.QueueSize = 128
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Minute
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = 5 * time.Second
	}
	return c
}

func (c ServiceConfig) validate() error {
	switch {
	case c.Protocol == "":
		return &protocols.ConfigError{Field: "Protocol", Reason: "is empty: give the stream protocol, e.g. /unsserv/membership/network.id"}
	case c.Name == "":
		return &protocols.ConfigError{Field: "Name", Reason: "is empty: give the resource manager service name, e.g. unsserv.membership"}
	case c.NewMessage == nil:
		return &protocols.ConfigError{Field: "NewMessage", Reason: "is nil: give a constructor of the wire message"}
	case c.MaxMessageSize < 0, c.QueueSize < 0, c.QueueBytes < 0, c.DialTimeout < 0, c.WriteTimeout < 0, c.IdleTimeout < 0, c.FlushTimeout < 0:
		return &protocols.ConfigError{Field: "MaxMessageSize/QueueSize/timeouts", Reason: "must not be negative"}
	}
	return nil
}

// Stats are a service's counters since it started.
type Stats struct {
	MsgsIn, MsgsOut   uint64 // messages read and written
	BytesIn, BytesOut uint64 // their framed sizes
	Dropped           uint64 // messages not written: queue full, or the peer failed
	Violations        uint64 // streams reset because the peer broke the protocol
	Neighbours        int    // peers the core calls neighbours (Link up)
}

// Service runs one protocol core over a libp2p host.
//
// Goroutines and ownership: one loop goroutine owns the core, its timers, the set of
// linked peers and the map of writers; it is the only one that calls the core. Each
// inbound stream has a reader goroutine (libp2p's handler goroutine) that decodes,
// checks and posts messages to the loop through a bounded channel (so a busy core pushes
// back on the readers, and the transport's flow control pushes back on senders). Each
// peer we send to has one writer goroutine with a bounded queue that owns one outgoing
// stream; the loop never waits for a writer: a full queue drops the message and counts
// it. A watcher goroutine turns libp2p connectedness events into PeerDown inputs for
// linked peers. Close stops them all and waits for them.
type Service struct {
	h    p2phost.Host
	core protocols.Core
	cfg  ServiceConfig
	tag  string // connection manager protection tag

	inputs chan loopMsg
	done   chan struct{} // closed when the loop has stopped
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine but the loop

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	closed  bool
	streams map[network.Stream]struct{} // inbound streams being read
	outs    map[*peerWriter]struct{}    // writers whose goroutine is running

	msgsIn, msgsOut, bytesIn, bytesOut, dropped, violations atomic.Uint64
	neighbours                                              atomic.Int64

	// loop state
	timers      *timerQueue
	links       map[peer.ID]bool
	writers     map[peer.ID]*peerWriter // the current writer of each peer
	liveWriters int                     // writer goroutines not yet exited
	leaving     bool
}

// loopMsg is what goroutines hand to the loop: an input for the core, or a runtime
// notice.
type loopMsg struct {
	in      protocols.Input
	from    *peerWriter   // set when a writer reports its own failure or idleness
	idle    bool          // the writer from has been idle for IdleTimeout
	exited  bool          // the writer from has returned
	gone    peer.ID       // a peer's last connection closed
	leave   chan struct{} // Close: leave, then close this channel once flushed
	flushed chan struct{}
}

// NewService registers the stream handler and starts the loop. The core receives no
// input until the caller posts one (usually protocols.Start) with Post.
func NewService(h p2phost.Host, core protocols.Core, cfg ServiceConfig) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		h: h, core: core, cfg: cfg,
		tag:     "unsserv:" + string(cfg.Protocol),
		inputs:  make(chan loopMsg, 256),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		streams: make(map[network.Stream]struct{}),
		outs:    make(map[*peerWriter]struct{}),
		timers:  newTimerQueue(),
		links:   make(map[peer.ID]bool),
		writers: make(map[peer.ID]*peerWriter),
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged), eventbus.BufSize(256), eventbus.Name("unsserv:"+string(cfg.Protocol)))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to connectedness events: %w", err)
	}
	s.wg.Add(1)
	go s.watch(sub)
	h.SetStreamHandler(cfg.Protocol, s.handleStream)
	go s.loop()
	return s, nil
}

// Protocol returns the stream protocol the service runs as.
func (s *Service) Protocol() protocol.ID { return s.cfg.Protocol }

// Host returns the host the service runs on.
func (s *Service) Host() p2phost.Host { return s.h }

// Post hands an input to the core. It waits while the loop is busy, until ctx ends.
func (s *Service) Post(ctx context.Context, in protocols.Input) error {
	return s.post(ctx, loopMsg{in: in})
}

func (s *Service) post(ctx context.Context, m loopMsg) error {
	select {
	case <-s.done:
		return ErrClosed
	default:
	}
	select {
	case s.inputs <- m:
		return nil
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	return Stats{
		MsgsIn: s.msgsIn.Load(), MsgsOut: s.msgsOut.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
		Dropped: s.dropped.Load(), Violations: s.violations.Load(),
		Neighbours: int(s.neighbours.Load()),
	}
}

// Done is closed once the service has stopped.
func (s *Service) Done() <-chan struct{} { return s.done }

// Close leaves gracefully: the core gets protocols.Leave (and says goodbye to its
// neighbours), queued messages are flushed until ctx ends or FlushTimeout passes, then
// every stream is closed or reset and every goroutine of the service has returned.
// Closing twice returns the first result.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Service) close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FlushTimeout)
	defer cancel()
	flushed := make(chan struct{})
	var err error
	if perr := s.post(ctx, loopMsg{leave: make(chan struct{}), flushed: flushed}); perr != nil {
		if !errors.Is(perr, ErrClosed) {
			err = fmt.Errorf("leave %s: %w", s.cfg.Protocol, perr)
		}
		close(flushed)
	}
	select {
	case <-flushed:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("leave %s: messages not flushed: %w", s.cfg.Protocol, ctx.Err())
		}
	}
	s.h.RemoveStreamHandler(s.cfg.Protocol)
	s.cancel() // stops the loop, aborts dials, and makes writers reset their streams
	<-s.done
	s.mu.Lock()
	s.closed = true
	for st := range s.streams {
		st.Reset()
	}
	for w := range s.outs {
		w.reset() // unblocks a Write stuck on a peer that does not read
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// loop owns the core. It ends when the service's context is cancelled.
func (s *Service) loop() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var flushed chan struct{}
	for {
		var timerC <-chan time.Time
		if at, ok := s.timers.next(); ok && !s.leaving {
			timer.Reset(time.Until(at))
			timerC = timer.C
		}
		select {
		case <-s.ctx.Done():
			s.shutdownWriters()
			if flushed != nil {
				close(flushed)
			}
			return
		case m := <-s.inputs:
			s.loopMsg(m)
			if m.flushed != nil {
				flushed = m.flushed
			}
		case <-timerC:
			now := time.Now()
			for {
				t, ok := s.timers.due(now)
				if !ok {
					break
				}
				s.handle(now, protocols.TimerFired{Timer: t})
			}
		}
		if flushed != nil && s.liveWriters == 0 {
			close(flushed)
			flushed = nil
		}
	}
}

func (s *Service) loopMsg(m loopMsg) {
	now := time.Now()
	switch {
	case m.leave != nil:
		s.handle(now, protocols.Leave{})
		s.leaving = true
		for p, w := range s.writers {
			delete(s.writers, p)
			close(w.queue)
		}
		for p := range s.links {
			s.unlink(p)
		}
	case m.exited:
		s.liveWriters--
	case m.from != nil && m.idle:
		if s.writers[m.from.peer] == m.from && !s.links[m.from.peer] {
			delete(s.writers, m.from.peer)
			close(m.from.queue)
		}
	case m.from != nil:
		w := m.from
		current := s.writers[w.peer] == w
		if current {
			delete(s.writers, w.peer)
			close(w.queue)
		}
		if current || s.writers[w.peer] == nil {
			s.handle(now, m.in)
		}
	case m.gone != "":
		if s.links[m.gone] || s.writers[m.gone] != nil {
			// A relayed connection replaced by a direct one also ends with a close; only
			// a peer with no connection left at all is down.
			if s.h.Network().Connectedness(m.gone) == network.NotConnected {
				s.handle(now, protocols.PeerDown{Peer: m.gone, Err: errors.New("connection closed")})
			}
		}
	default:
		s.handle(now, m.in)
	}
}

// handle feeds one input to the core and carries out what it asks.
func (s *Service) handle(now time.Time, in protocols.Input) {
	if s.leaving {
		return
	}
	for _, out := range s.core.Handle(now, in) {
		switch o := out.(type) {
		case protocols.Send:
			s.send(o.To, o.Msg)
		case protocols.Close:
			// A hint only: the writer and its stream stay until they idle (IdleTimeout,
			// for peers that are not neighbours), so that a message sent to the peer
			// right after a Close still travels behind the earlier ones on the same
			// stream. Closing here and opening a new stream could reorder them.
		case protocols.Link:
			if o.Up {
				s.link(o.Peer)
			} else {
				s.unlink(o.Peer)
			}
		case protocols.SetTimer:
			s.timers.set(now, o.Timer, o.After)
		case protocols.CancelTimer:
			s.timers.cancel(o.Timer)
		default:
			if s.cfg.OnEvent != nil {
				s.cfg.OnEvent(out)
			}
		}
	}
}

func (s *Service) link(p peer.ID) {
	if s.links[p] {
		return
	}
	s.links[p] = true
	s.neighbours.Store(int64(len(s.links)))
	s.h.ConnManager().Protect(p, s.tag)
}

func (s *Service) unlink(p peer.ID) {
	if !s.links[p] {
		return
	}
	delete(s.links, p)
	s.neighbours.Store(int64(len(s.links)))
	s.h.ConnManager().Unprotect(p, s.tag)
}

func (s *Service) send(to peer.ID, msg proto.Message) {
	if to == s.h.ID() {
		log.Errorw("core sent a message to itself; dropped", "protocol", s.cfg.Protocol)
		s.dropped.Add(1)
		return
	}
	w := s.writers[to]
	if w == nil {
		w = newPeerWriter(s, to)
		s.writers[to] = w
		s.liveWriters++
		s.mu.Lock()
		s.outs[w] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go w.run()
	}
	size := 0
	if s.cfg.QueueBytes > 0 {
		size = proto.Size(msg)
		if w.queuedBytes.Add(int64(size)) > int64(s.cfg.QueueBytes) {
			w.queuedBytes.Add(-int64(size))
			s.dropped.Add(1)
			log.Warnw("outgoing queue full (bytes); message dropped", "protocol", s.cfg.Protocol, "peer", to, "queue_bytes", s.cfg.QueueBytes)
			return
		}
	}
	select {
	case w.queue <- queued{msg, size}:
	default:
		w.queuedBytes.Add(-int64(size))
		s.dropped.Add(1)
		log.Warnw("outgoing queue full; message dropped", "protocol", s.cfg.Protocol, "peer", to, "queue", s.cfg.QueueSize)
	}
}

// shutdownWriters closes every writer's queue; their goroutines reset their streams
// since the service context is cancelled.
func (s *Service) shutdownWriters() {
	for p, w := range s.writers {
		delete(s.writers, p)
		close(w.queue)
	}
	for p := range s.links {
		s.unlink(p)
	}
}

// watch turns "no connection left to p" into a loop notice.
func (s *Service) watch(sub event.Subscription) {
	defer s.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-sub.Out():
			if !ok {
				return
			}
			e := ev.(event.EvtPeerConnectednessChanged)
			if e.Connectedness == network.NotConnected {
				if s.post(s.ctx, loopMsg{gone: e.Peer}) != nil {
					return
				}
			}
		}
	}
}
