package sim

import (
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PeerIDs returns n distinct peer IDs of Ed25519 keys derived from the seed: the same
// seed gives the same IDs.
func PeerIDs(seed uint64, n int) ([]peer.ID, error) {
	src := rand.NewChaCha8(seedBytes(seed, 0x1d5))
	ids := make([]peer.ID, n)
	var ks [ed25519.SeedSize]byte
	for i := range ids {
		_, _ = src.Read(ks[:])
		priv, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(ks[:]))
		if err != nil {
			return nil, fmt.Errorf("sim: key %d: %w", i, err)
		}
		if ids[i], err = peer.IDFromPrivateKey(priv); err != nil {
			return nil, fmt.Errorf("sim: peer ID %d: %w", i, err)
		}
	}
	return ids, nil
}
