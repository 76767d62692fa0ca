package unsserv

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
)

func TestRelaySourceOffersRelayingMembers(t *testing.T) {
	ctx := context.Background()
	mn, err := mocknet.FullMeshLinked(1)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	h := mn.Hosts()[0]
	m, err := JoinNetwork(ctx, h, "relays.net")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	rs := NewRelaySource()
	if got := drain(rs.PeerSource(ctx, 4)); len(got) != 0 {
		t.Fatalf("offered %v before Set", got)
	}
	rs.Set(m)
	// Three known peers: a relay, a plain peer, a relay without addresses.
	ids := []peer.ID{"relay-a", "plain-b", "relay-c"}
	addr := ma.StringCast("/ip4/1.2.3.4/tcp/7771")
	for i, id := range ids {
		if i < 2 {
			h.Peerstore().AddAddr(id, addr, peerstore.PermanentAddrTTL)
		}
		if i != 1 {
			_ = h.Peerstore().AddProtocols(id, proto.ProtoIDv2Hop)
		}
	}
	got := drain(rs.PeerSource(ctx, 4))
	if len(got) != 1 || got[0].ID != "relay-a" || len(got[0].Addrs) != 1 {
		t.Fatalf("offered %v, want only relay-a with its address", got)
	}
	if got := drain(rs.PeerSource(ctx, 0)); len(got) != 0 {
		t.Fatalf("offered %v for num 0", got)
	}
}

func drain(ch <-chan peer.AddrInfo) []peer.AddrInfo {
	var out []peer.AddrInfo
	for ai := range ch {
		out = append(out, ai)
	}
	return out
}
