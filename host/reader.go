package host

import (
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/unsserv/go-unsserv/protocols"
)

// recordTTL is how long addresses learnt from a verified peer record stay in the
// peerstore; the core keeps the descriptor itself as long as it wants the peer.
var recordTTL = peerstore.RecentlyConnectedAddrTTL

// handleStream reads one inbound stream until it ends. It runs on libp2p's handler
// goroutine.
func (s *Service) handleStream(st network.Stream) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Reset()
		return
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
		s.wg.Done()
	}()

	if err := st.Scope().SetService(s.cfg.Name); err != nil {
		log.Debugw("inbound stream refused by resource limits", "protocol", s.cfg.Protocol, "service", s.cfg.Name, "err", err)
		st.Reset()
		return
	}
	from := st.Conn().RemotePeer()
	mr := newMsgReader(st, s.cfg.MaxMessageSize)
	for {
		msg := s.cfg.NewMessage()
		n, err := mr.next(msg)
		if err == nil {
			err = s.checkDescriptors(from, msg)
		}
		if err == nil && s.cfg.Check != nil {
			if cerr := s.cfg.Check(from, msg); cerr != nil {
				err = fmt.Errorf("%w: %v", errMalformed, cerr)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = st.Close()
				return
			}
			if isViolation(err) {
				s.violations.Add(1) // before the reset, which the peer may observe at once
			}
			st.Reset()
			if isViolation(err) {
				log.Warnw("peer broke the protocol; stream reset and peer dropped", "protocol", s.cfg.Protocol, "peer", from, "err", err)
				_ = s.post(s.ctx, loopMsg{in: protocols.PeerDown{Peer: from, Err: err, Misbehaved: true}})
			}
			return
		}
		s.msgsIn.Add(1)
		s.bytesIn.Add(uint64(n))
		if s.cfg.Trace != nil {
			s.cfg.Trace(false, from, msg, n)
		}
		if s.post(s.ctx, loopMsg{in: protocols.Receive{From: from, Msg: msg}}) != nil {
			st.Reset()
			return
		}
	}
}

// checkDescriptors verifies the node descriptors a message carries (see
// protocols.DescriptorCarrier) and stores the addresses of valid records.
func (s *Service) checkDescriptors(from peer.ID, msg any) error {
	dc, ok := msg.(protocols.DescriptorCarrier)
	if !ok {
		return nil
	}
	cab, _ := peerstore.GetCertifiedAddrBook(s.h.Peerstore())
	for _, d := range dc.Descriptors() {
		id, err := peer.IDFromBytes(d.GetId())
		if err != nil {
			return fmt.Errorf("%w: node descriptor with a bad peer ID: %v", errMalformed, err)
		}
		rec := d.GetRecord()
		if len(rec) == 0 {
			continue
		}
		env, r, err := record.ConsumeEnvelope(rec, peer.PeerRecordEnvelopeDomain)
		if err != nil {
			return fmt.Errorf("%w: node %s: bad signed peer record: %v", errMalformed, id, err)
		}
		pr, ok := r.(*peer.PeerRecord)
		if !ok || pr.PeerID != id {
			return fmt.Errorf("%w: node %s carries a peer record of another peer", errMalformed, id)
		}
		if id == s.h.ID() || cab == nil {
			continue
		}
		if _, err := cab.ConsumePeerRecord(env, recordTTL); err != nil {
			log.Debugw("peer record not stored", "peer", id, "from", from, "err", err)
		}
	}
	return nil
}
