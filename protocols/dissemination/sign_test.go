package dissemination_test

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/unsserv/go-unsserv/protocols/dissemination"
)

func TestSignVerify(t *testing.T) {
	for _, typ := range []int{crypto.Ed25519, crypto.ECDSA} {
		priv, _, err := crypto.GenerateKeyPairWithReader(typ, 256, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		other, _, _ := crypto.GenerateKeyPairWithReader(typ, 256, rand.Reader)
		b := &dissemination.Broadcast{Seq: 7, Payload: []byte("hello")}
		if err := dissemination.Sign(priv, b); err != nil {
			t.Fatal(err)
		}
		if err := dissemination.Verify(b); err != nil {
			t.Fatalf("key type %d: a good broadcast fails: %v", typ, err)
		}
		if typ == crypto.Ed25519 && len(b.Key) != 0 {
			t.Fatal("Ed25519 IDs embed the key; none should be sent")
		}
		if typ == crypto.ECDSA && len(b.Key) == 0 {
			t.Fatal("ECDSA IDs do not embed the key; it must be sent")
		}
		altered := []func(*dissemination.Broadcast){
			func(b *dissemination.Broadcast) { b.Payload = []byte("hellO") },
			func(b *dissemination.Broadcast) { b.Seq++ },
			func(b *dissemination.Broadcast) { b.Signature[3] ^= 1 },
			func(b *dissemination.Broadcast) { b.Origin = []byte("nonsense") },
			func(b *dissemination.Broadcast) {
				// Signed by another key, claiming the first one's origin.
				o := b.Origin
				_ = dissemination.Sign(other, b)
				b.Origin = o
			},
		}
		for i, alter := range altered {
			c := &dissemination.Broadcast{Origin: b.Origin, Seq: b.Seq, Payload: b.Payload, Signature: append([]byte(nil), b.Signature...), Key: b.Key}
			alter(c)
			if err := dissemination.Verify(c); err == nil {
				t.Fatalf("key type %d: alteration %d passes verification", typ, i)
			}
		}
	}
}
