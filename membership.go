package unsserv

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// leaveTimeout bounds how long Leave waits for goodbyes to be written.
const leaveTimeout = 5 * time.Second

// Membership is this node's membership of one network: HyParView (Stable) or Newscast
// (Extreme) running as the stream protocol /unsserv/membership/<network id>. Its
// neighbours are HyParView's active view, or Newscast's cache.
type Membership struct {
	h       p2phost.Host
	id      string
	profile Profile
	meta    []byte
	svc     *host.Service

	neighbourSet // Neighbours, OnNeighboursChanged, WaitReady

	stop chan struct{} // closed by Leave
	wg   sync.WaitGroup
}

var _ Overlay = (*Membership)(nil)

// MembershipProtocol returns the stream protocol of a network's membership.
func MembershipProtocol(networkID string) protocol.ID {
	return protocol.ID("/unsserv/membership/" + networkID)
}

// JoinNetwork joins the network networkID on host h, or starts it when no Bootstrap
// option is given. It returns once the join request is on its way to a bootstrap peer
// that runs this network; WaitReady waits for neighbours.
//
// If no bootstrap peer can be reached, or none of them runs this network, the error
// names every address tried and why, no later than ctx's deadline.
func JoinNetwork(ctx context.Context, h p2phost.Host, networkID string, opts ...Option) (*Membership, error) {
	if h == nil {
		return nil, errors.New("join network: host is nil: build one with host.New")
	}
	if networkID == "" || strings.ContainsAny(networkID, " \t\n") {
		return nil, fmt.Errorf("join network: network id %q must be non-empty and without spaces", networkID)
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}
	for _, b := range o.bootstrap {
		if b.ID == h.ID() {
			return nil, fmt.Errorf("join network %s: bootstrap peer %s is this host itself", networkID, b.ID)
		}
	}

	rec, err := host.SelfRecord(h)
	if err != nil {
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}
	self := membership.NewNode(h.ID(), rec, o.meta)
	rng := newRand(o.seed)
	var core protocols.Core
	switch o.profile {
	case Stable:
		core, err = membership.NewHyParView(self, o.hyparview, rng)
	case Extreme:
		core, err = membership.NewNewscast(self, o.newscast, rng)
	}
	if err != nil {
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}

	m := &Membership{
		h: h, id: networkID, profile: o.profile, meta: o.meta,
		stop: make(chan struct{}),
	}
	m.neighbourSet.init("neighbours in " + networkID)
	pid := MembershipProtocol(networkID)
	m.svc, err = host.NewService(h, core, host.ServiceConfig{
		Protocol:       pid,
		Name:           "unsserv.membership",
		NewMessage:     func() proto.Message { return new(membership.Message) },
		OnEvent:        m.onEvent,
		MaxMessageSize: 64 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}

	contacts, err := reachBootstrap(ctx, h, pid, o.bootstrap)
	if err != nil {
		_ = m.svc.Close(ctx)
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}
	if err := m.svc.Post(ctx, protocols.Start{Bootstrap: contacts}); err != nil {
		_ = m.svc.Close(context.Background())
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}
	addrSub, err := h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		_ = m.svc.Close(context.Background())
		return nil, fmt.Errorf("join network %s: %w", networkID, err)
	}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.notifier(m.stop)
	}()
	go m.watchAddrs(addrSub)
	return m, nil
}

// reachBootstrap connects to every bootstrap peer at once and returns, in the order
// given, those that answered and run protocol pid.
func reachBootstrap(ctx context.Context, h p2phost.Host, pid protocol.ID, infos []peer.AddrInfo) ([]peer.ID, error) {
	if len(infos) == 0 {
		return nil, nil
	}
	errs := make([]error, len(infos))
	var wg sync.WaitGroup
	for i, ai := range infos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Connect(ctx, ai); err != nil {
				errs[i] = fmt.Errorf("%s: %w", describe(ai), err)
				return
			}
			if ok, _ := h.Peerstore().SupportsProtocols(ai.ID, pid); len(ok) == 0 {
				errs[i] = fmt.Errorf("%s: reachable, but it does not run %s (is the network id right?)", describe(ai), pid)
			}
		}()
	}
	wg.Wait()
	var ids []peer.ID
	for i, ai := range infos {
		if errs[i] == nil {
			ids = append(ids, ai.ID)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no bootstrap peer could be joined: %w", errors.Join(errs...))
	}
	return ids, nil
}

func describe(ai peer.AddrInfo) string {
	if len(ai.Addrs) == 0 {
		return ai.ID.String()
	}
	addrs := make([]string, len(ai.Addrs))
	for i, a := range ai.Addrs {
		addrs[i] = a.String() + "/p2p/" + ai.ID.String()
	}
	return strings.Join(addrs, ", ")
}

func newRand(seed *uint64) *rand.Rand {
	var s1, s2 uint64
	if seed != nil {
		s1, s2 = *seed, *seed^0x9e3779b97f4a7c15
	} else {
		var b [16]byte
		_, _ = crand.Read(b[:])
		s1, s2 = binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
	}
	return rand.New(rand.NewPCG(s1, s2))
}

// onEvent runs on the service loop.
func (m *Membership) onEvent(out protocols.Output) {
	ev, ok := out.(membership.NeighboursChanged)
	if !ok {
		return
	}
	ns := make([]Node, 0, len(ev.Nodes))
	for _, d := range ev.Nodes {
		ns = append(ns, m.toNode(d))
	}
	m.set(ns)
}

// toNode turns a descriptor (already verified by the runtime) into a Node.
func (m *Membership) toNode(d *membership.Node) Node {
	n := Node{ID: d.PeerID(), Meta: d.GetMeta()}
	n.Addrs = recordAddrs(n.ID, d.GetRecord())
	if len(n.Addrs) == 0 {
		n.Addrs = m.h.Peerstore().Addrs(n.ID)
	}
	return n
}

// watchAddrs hands the core a new signed record whenever the host's addresses change.
func (m *Membership) watchAddrs(sub event.Subscription) {
	defer m.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-m.stop:
			return
		case _, ok := <-sub.Out():
			if !ok {
				return
			}
			rec, err := host.SelfRecord(m.h)
			if err != nil {
				continue
			}
			_ = m.svc.Post(context.Background(), protocols.SelfUpdated{Record: rec, Meta: m.meta})
		}
	}
}

// Leave says goodbye to the neighbours, stops the protocol and releases its streams and
// goroutines. The host stays up. Calling Leave again returns nil.
func (m *Membership) Leave() error {
	if !m.close() {
		return nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err := m.svc.Close(ctx)
	close(m.stop)
	m.wg.Wait()
	m.clear()
	return err
}

// Host returns the libp2p host the membership runs on.
func (m *Membership) Host() p2phost.Host { return m.h }

// NetworkID returns the network's id.
func (m *Membership) NetworkID() string { return m.id }

// Profile returns the profile the membership runs.
func (m *Membership) Profile() Profile { return m.profile }

// Stats returns the protocol's message counters.
func (m *Membership) Stats() host.Stats { return m.svc.Stats() }
