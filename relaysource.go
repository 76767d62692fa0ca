package unsserv

import (
	"context"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
)

// RelaySource feeds libp2p's auto-relay with candidate relays taken from an overlay:
// the neighbours (and other peers the host knows) that offer circuit relay v2. A node
// behind a NAT that was given no static relay finds relays among the members this way.
//
//	rs := unsserv.NewRelaySource()
//	h, err := host.New(ctx, host.RelayPeerSource(rs.PeerSource))
//	m, err := unsserv.JoinNetwork(ctx, h, "network.id", ...)
//	rs.Set(m)
type RelaySource struct {
	o atomic.Pointer[Overlay]
}

// NewRelaySource returns a source with no overlay yet: it offers no candidate until Set.
func NewRelaySource() *RelaySource { return &RelaySource{} }

// Set names the overlay whose members are offered.
func (r *RelaySource) Set(o Overlay) { r.o.Store(&o) }

// PeerSource is an autorelay.PeerSource: it sends up to num known peers that support
// the relay v2 hop protocol, the overlay's neighbours first, then closes the channel.
func (r *RelaySource) PeerSource(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, max(num, 0))
	defer close(out)
	op := r.o.Load()
	if op == nil || num <= 0 {
		return out
	}
	o := *op
	h := o.Host()
	seen := map[peer.ID]bool{h.ID(): true}
	offer := func(id peer.ID) bool {
		if seen[id] {
			return true
		}
		seen[id] = true
		if ok, _ := h.Peerstore().SupportsProtocols(id, proto.ProtoIDv2Hop); len(ok) == 0 {
			return true
		}
		ai := h.Peerstore().PeerInfo(id)
		if len(ai.Addrs) == 0 {
			return true
		}
		out <- ai
		return len(out) < num
	}
	for _, n := range o.Neighbours() {
		if !offer(n.ID) {
			return out
		}
	}
	for _, id := range h.Peerstore().PeersWithAddrs() {
		if ctx.Err() != nil || !offer(id) {
			return out
		}
	}
	return out
}
