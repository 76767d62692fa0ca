package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// peerWriter owns the one outgoing stream of a service to one peer. It opens the stream
// on the first message, writes messages in queue order, and reports a failure to the
// loop once (the loop then closes the queue; messages still queued are counted as
// dropped). When the queue is closed it writes what is left and closes the stream
// gracefully, or resets it if the service is shutting down.
type peerWriter struct {
	s     *Service
	peer  peer.ID
	queue chan queued

	queuedBytes atomic.Int64 // encoded sizes of the queued messages (with QueueBytes)

	mu sync.Mutex
	st network.Stream // the open stream, for reset by Close
}

// queued is a message waiting in a writer's queue, with its size as counted against
// QueueBytes (0 when not counted).
type queued struct {
	msg  proto.Message
	size int
}

// reset aborts the writer's stream, if open.
func (w *peerWriter) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.st != nil {
		w.st.Reset()
	}
}

func (w *peerWriter) setStream(st network.Stream) {
	w.mu.Lock()
	w.st = st
	w.mu.Unlock()
}

func newPeerWriter(s *Service, p peer.ID) *peerWriter {
	return &peerWriter{s: s, peer: p, queue: make(chan queued, s.cfg.QueueSize)}
}

func (w *peerWriter) run() {
	s := w.s
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.outs, w)
		s.mu.Unlock()
		_ = s.post(context.Background(), loopMsg{from: w, exited: true})
	}()

	var st network.Stream
	var failed bool
	var buf []byte
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
	fail := func(err error) {
		failed = true
		if st != nil {
			st.Reset()
			st = nil
			w.setStream(nil)
		}
		if s.ctx.Err() != nil {
			return // shutting down: nobody to tell
		}
		log.Debugw("peer unreachable", "protocol", s.cfg.Protocol, "peer", w.peer, "err", err)
		_ = s.post(s.ctx, loopMsg{from: w, in: protocols.PeerDown{Peer: w.peer, Err: err}})
	}
	for {
		var q queued
		var ok bool
		select {
		case q, ok = <-w.queue:
		case <-idle.C:
			_ = s.post(s.ctx, loopMsg{from: w, idle: true})
			idle.Reset(s.cfg.IdleTimeout)
			continue
		}
		if !ok {
			break
		}
		msg := q.msg
		w.queuedBytes.Add(-int64(q.size))
		if failed || s.ctx.Err() != nil {
			s.dropped.Add(1)
			continue
		}
		if st == nil {
			var err error
			if st, err = w.open(); err != nil {
				s.dropped.Add(1)
				fail(err)
				continue
			}
			w.setStream(st)
			if s.ctx.Err() != nil { // Close may have missed it
				st.Reset()
			}
		}
		var err error
		if buf, err = appendFrame(buf[:0], msg); err != nil {
			log.Errorw("cannot encode message; dropped", "protocol", s.cfg.Protocol, "err", err)
			s.dropped.Add(1)
			continue
		}
		_ = st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := st.Write(buf); err != nil {
			// The stream's connection may have closed while another one to the peer
			// remains: a relayed connection replaced by a direct one after hole
			// punching, or a relay circuit cut at its limit and dialled again. Reopen
			// once on what is left before calling the peer unreachable.
			st.Reset()
			st = nil
			w.setStream(nil)
			if s.ctx.Err() == nil && s.h.Network().Connectedness(w.peer) != network.NotConnected {
				if st, err = w.reopen(buf); err == nil {
					w.setStream(st)
				}
			}
			if err != nil {
				s.dropped.Add(1)
				fail(fmt.Errorf("write to %s: %w", w.peer, err))
				continue
			}
		}
		s.msgsOut.Add(1)
		s.bytesOut.Add(uint64(len(buf)))
		if s.cfg.Trace != nil {
			s.cfg.Trace(true, w.peer, msg, len(buf))
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(s.cfg.IdleTimeout)
	}
	if st != nil {
		if s.ctx.Err() != nil {
			st.Reset()
		} else {
			_ = st.Close()
		}
	}
}

// reopen opens a new stream and writes buf on it.
func (w *peerWriter) reopen(buf []byte) (network.Stream, error) {
	st, err := w.open()
	if err != nil {
		return nil, err
	}
	_ = st.SetWriteDeadline(time.Now().Add(w.s.cfg.WriteTimeout))
	if _, err := st.Write(buf); err != nil {
		st.Reset()
		return nil, err
	}
	log.Debugw("stream reopened after a write failed on a closed connection", "protocol", w.s.cfg.Protocol, "peer", w.peer)
	return st, nil
}

// open opens the stream, over a relayed (limited) connection too: overlay links between
// peers behind NATs may have nothing else.
func (w *peerWriter) open() (network.Stream, error) {
	s := w.s
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	ctx = network.WithAllowLimitedConn(ctx, "unsserv overlay")
	st, err := s.h.NewStream(ctx, w.peer, s.cfg.Protocol)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("open %s to %s: no answer within %v: %w", s.cfg.Protocol, w.peer, s.cfg.DialTimeout, err)
		}
		return nil, fmt.Errorf("open %s to %s: %w", s.cfg.Protocol, w.peer, err)
	}
	if err := st.Scope().SetService(s.cfg.Name); err != nil {
		st.Reset()
		return nil, fmt.Errorf("open %s to %s: resource limit of service %s: %w", s.cfg.Protocol, w.peer, s.cfg.Name, err)
	}
	return st, nil
}
