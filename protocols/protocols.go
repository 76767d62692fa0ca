// Package protocols holds the contract between a protocol core and whatever drives it.
//
// A core is a deterministic state machine: it owns no goroutine, reads no clock, opens no
// socket and draws randomness only from the *rand.Rand it was built with. Something else,
// the libp2p runtime in package host or the simulator in package sim, feeds it one Input
// at a time together with the current time, and carries out the Outputs it returns:
//
//	for in := range inputs {
//		for _, out := range core.Handle(now(), in) {
//			switch o := out.(type) {
//			case protocols.Send:      // deliver o.Msg to o.To over the service's stream
//			case protocols.Close:     // no long-lived link to o.Peer is needed any more
//			case protocols.Link:      // o.Peer is (or stops being) an overlay neighbour
//			case protocols.SetTimer:  // fire TimerFired{o.Timer} after o.After
//			case protocols.CancelTimer:
//			default:                  // a service event for the application
//			}
//		}
//	}
//
// The same core runs unchanged over real libp2p streams and in the simulator, so a
// behaviour measured in one is the behaviour of the other.
package protocols

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// Core is one protocol instance of one node.
//
// Handle is called with inputs one at a time, never concurrently, with a non-decreasing
// now. The returned slice is only valid until the next call. Messages in a Receive input
// are owned by the core from then on; messages in a Send output are owned by the driver.
type Core interface {
	Handle(now time.Time, in Input) []Output
}

// Input is something that happened to a core.
type Input interface{ isInput() }

// Output is something a core wants done, or an event for the application.
type Output interface{ isOutput() }

// Start begins the protocol. Bootstrap lists the peers to contact first; it is empty for
// the first node of a network.
type Start struct {
	Bootstrap []peer.ID
}

// Receive is a message that arrived from a peer over the service's protocol. From is
// authenticated by the transport.
type Receive struct {
	From peer.ID
	Msg  proto.Message
}

// TimerFired reports that a timer set with SetTimer elapsed (and was not cancelled or
// replaced in the meantime).
type TimerFired struct {
	Timer Timer
}

// PeerDown reports that a peer can no longer be reached: a dial failed, a write failed,
// the last connection closed, or a message was sent to a crashed node in the simulator.
// Misbehaved is set when the peer broke the protocol (malformed or oversized message,
// forged record); such a peer is dropped from every view.
type PeerDown struct {
	Peer       peer.ID
	Err        error
	Misbehaved bool
}

// Leave asks the core to leave gracefully: say goodbye to its neighbours and stop.
// After Leave the core emits nothing further.
type Leave struct{}

// SelfUpdated gives the core a new descriptor of its own node (new addresses, a new
// signed record, new metadata), to hand out from then on.
type SelfUpdated struct {
	Record []byte
	Meta   []byte
}

// Neighbours gives a core stacked on an overlay (dissemination, aggregation, ...) the
// overlay's current neighbours; drivers pass it at start and at every change.
type Neighbours struct {
	Peers []peer.ID
}

// Call is a request from the application, of a type the service defines (publish a
// broadcast, start a search, ...).
type Call struct {
	Req any
}

func (Neighbours) isInput() {}
func (Call) isInput()       {}

func (Start) isInput()       {}
func (Receive) isInput()     {}
func (TimerFired) isInput()  {}
func (PeerDown) isInput()    {}
func (Leave) isInput()       {}
func (SelfUpdated) isInput() {}

// Send asks the driver to deliver Msg to To. Delivery is best effort and in order per
// destination; a failure comes back as a PeerDown input.
type Send struct {
	To  peer.ID
	Msg proto.Message
}

// Close says the core needs no long-lived link to Peer any more; messages already sent
// to it are still delivered first.
type Close struct {
	Peer peer.ID
}

// Link says whether Peer is an overlay neighbour of this node. The runtime protects
// neighbours' connections from trimming, and watches them for failure.
type Link struct {
	Peer peer.ID
	Up   bool
}

// Timer names a timer of a core. Setting a timer that is already pending replaces it.
type Timer struct {
	Kind uint8
	Peer peer.ID // optional: one timer of this kind per peer
	Key  string  // optional: one timer of this kind per key (e.g. a message id)
}

// SetTimer asks for a TimerFired input after the given delay.
type SetTimer struct {
	Timer Timer
	After time.Duration
}

// CancelTimer cancels a pending timer; cancelling one that is not pending does nothing.
type CancelTimer struct {
	Timer Timer
}

func (Send) isOutput()        {}
func (Close) isOutput()       {}
func (Link) isOutput()        {}
func (SetTimer) isOutput()    {}
func (CancelTimer) isOutput() {}

// Event is embedded by service events (neighbours changed, broadcast delivered, ...) to
// make them Outputs. Drivers pass events they do not know on to the application.
type Event struct{}

func (Event) isOutput() {}

// ConfigError is returned by a config's Validate: it names the field and what is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid config: %s %s", e.Field, e.Reason)
}

// Descriptor is a node descriptor on the wire: a peer ID and, optionally, the peer's
// signed peer record.
type Descriptor interface {
	GetId() []byte
	GetRecord() []byte
}

// DescriptorCarrier is implemented by wire messages that carry node descriptors. The
// runtime checks every descriptor before the core sees the message: the ID must parse,
// and a record must be a valid signed peer record of that very ID (else the sender
// misbehaved). Valid records feed the host's peerstore, so the core can later send to
// any node it learnt of by ID alone.
type DescriptorCarrier interface {
	Descriptors() []Descriptor
}
