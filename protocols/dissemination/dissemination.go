// Package dissemination holds the broadcast cores and their wire messages:
//
//   - Plumtree (Leitão, Pereira, Rodrigues, SRDS 2007): stable profile, many-to-many.
//   - Brisa (Matos et al., IPDPS 2012): stable profile, one-to-many.
//   - LPBCast (Eugster et al., ACM TOCS 2003): extreme profile, many-to-many.
//   - Mon (Liang et al. 2005): extreme profile, one-to-many.
//
// Every core runs over the neighbours of a membership: the driver passes them in as
// protocols.Neighbours at start and at every change. The application's broadcasts come in
// as protocols.Call{Req: Publish{...}}, already signed by the driver; every broadcast the
// node receives for the first time comes out as a Delivered event. Each core has its own
// top-level wire message (Message for Plumtree, BrisaMessage, LPBCastMessage,
// MonMessage), and each of them implements Carrier, so a driver can check the signature
// of every broadcast before the core sees it, and count payloads and message kinds.
package dissemination

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/unsserv/go-unsserv/protocols"
)

// Publish is the Call that broadcasts b, which the caller has filled in and signed.
type Publish struct {
	Broadcast *Broadcast
}

// Delivered is emitted once for every broadcast the node receives for the first time
// (never for the node's own broadcasts).
type Delivered struct {
	protocols.Event
	ID        []byte
	Broadcast *Broadcast
	Round     uint32 // hops from the origin: 1 for a broadcast received from its origin
}

// Carrier is implemented by every top-level wire message of this package.
type Carrier interface {
	// Broadcasts returns the broadcasts the message carries in full (payloads), so
	// drivers can verify them and count payload copies for relative message redundancy.
	Broadcasts() []*Broadcast
	// Kind names the message's kind for counters, e.g. "GOSSIP" or "IHAVE".
	Kind() string
}

// ID returns a broadcast's id: a hash of its origin, sequence number and payload.
func ID(origin []byte, seq uint64, payload []byte) []byte {
	ph := sha256.Sum256(payload)
	h := sha256.New()
	h.Write([]byte("unsserv/dissemination/v1"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(origin)))
	h.Write(n[:])
	h.Write(origin)
	binary.BigEndian.PutUint64(n[:], seq)
	h.Write(n[:])
	h.Write(ph[:])
	return h.Sum(nil)
}

// BroadcastID returns the id of b.
func BroadcastID(b *Broadcast) []byte { return ID(b.GetOrigin(), b.GetSeq(), b.GetPayload()) }

// Plumtree's wire message.
var _ Carrier = (*Message)(nil)

// Broadcasts implements Carrier.
func (m *Message) Broadcasts() []*Broadcast {
	if g := m.GetGossip(); g != nil && g.GetBroadcast() != nil {
		return []*Broadcast{g.GetBroadcast()}
	}
	return nil
}

// Kind implements Carrier.
func (m *Message) Kind() string {
	switch m.GetBody().(type) {
	case *Message_Gossip:
		return "GOSSIP"
	case *Message_Ihave:
		return "IHAVE"
	case *Message_Graft:
		return "GRAFT"
	case *Message_Prune:
		return "PRUNE"
	}
	return "UNKNOWN"
}
