package dissemination

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// signPrefix separates broadcast signatures from every other use of a libp2p key.
const signPrefix = "unsserv/dissemination/sig/v1:"

// Sign fills in b's origin (the key's peer ID) and signature over the broadcast's id,
// and its key field when the peer ID does not embed the public key.
func Sign(priv crypto.PrivKey, b *Broadcast) error {
	if priv == nil {
		return errors.New("sign broadcast: no private key (is the host's peerstore holding its own key?)")
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("sign broadcast: %w", err)
	}
	b.Origin = []byte(id)
	b.Key = nil
	if _, err := id.ExtractPublicKey(); err != nil {
		if b.Key, err = crypto.MarshalPublicKey(priv.GetPublic()); err != nil {
			return fmt.Errorf("sign broadcast: %w", err)
		}
	}
	b.Signature, err = priv.Sign(signedBytes(b))
	if err != nil {
		return fmt.Errorf("sign broadcast: %w", err)
	}
	return nil
}

func signedBytes(b *Broadcast) []byte {
	return append([]byte(signPrefix), BroadcastID(b)...)
}

// Verify checks that b was signed by its origin and not altered since.
func Verify(b *Broadcast) error {
	origin, err := peer.IDFromBytes(b.GetOrigin())
	if err != nil {
		return fmt.Errorf("broadcast with a bad origin: %w", err)
	}
	pub, err := origin.ExtractPublicKey()
	if err != nil {
		if len(b.GetKey()) == 0 {
			return fmt.Errorf("broadcast from %s: no public key to check its signature", origin)
		}
		if pub, err = crypto.UnmarshalPublicKey(b.GetKey()); err != nil {
			return fmt.Errorf("broadcast from %s: bad public key: %w", origin, err)
		}
		if !origin.MatchesPublicKey(pub) {
			return fmt.Errorf("broadcast from %s carries another peer's key", origin)
		}
	}
	ok, err := pub.Verify(signedBytes(b), b.GetSignature())
	if err != nil || !ok {
		return fmt.Errorf("broadcast from %s seq %d: bad signature (forged or altered)", origin, b.GetSeq())
	}
	return nil
}
