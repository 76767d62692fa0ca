package host

import (
	"fmt"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// SelfRecord returns the host's current addresses as a signed peer record (a marshalled
// record.Envelope holding a peer.PeerRecord), sealed with the host's own key. Node
// descriptors carry it so that nobody can hand out addresses in another peer's name.
func SelfRecord(h p2phost.Host) ([]byte, error) {
	key := h.Peerstore().PrivKey(h.ID())
	if key == nil {
		return nil, fmt.Errorf("signed peer record: the peerstore has no private key for %s", h.ID())
	}
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	env, err := record.Seal(rec, key)
	if err != nil {
		return nil, fmt.Errorf("signed peer record: %w", err)
	}
	b, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("signed peer record: %w", err)
	}
	return b, nil
}
