// Package sampling holds the peer sampling cores and their wire messages:
//
//   - RWD, Random Weight Distribution (Awan, Ferreira, Jagannathan, Grama, HICSS 2006):
//     stable profile. A random walk over link weights made symmetric, so that the walk's
//     stationary distribution is uniform over the nodes whatever their degrees.
//   - MRWB, Metropolized Random Walk with Backtracking (Stutzbach, Rejaie, Duffield, Sen,
//     Willinger, IMC 2006 / IEEE/ACM ToN 2009): extreme profile. A Metropolis-Hastings
//     walk, uniform over the nodes, that steps back when the next hop has gone.
//   - RandomWalk: a plain random walk, biased towards high-degree nodes, kept as the
//     baseline the other two are measured against.
//
// Every core runs over the neighbours of a membership: the driver passes them in as
// protocols.Neighbours at start and at every change. The application asks for a sample
// with protocols.Call{Req: Sample{ID: n}} (IDs chosen by the driver, unique per node);
// the core starts a walk of WalkLength steps from this node, and the node where it ends
// sends its descriptor straight back to the origin, which emits Sampled{ID: n, ...}. A
// walk that ends at the origin itself is discarded and another one started, so a sample
// is never the asking node. A walk that does not come back within WalkTimeout is
// replaced by a new one; after MaxAttempts walks the core emits SampleFailed.
// Cancel{ID: n} forgets a sample the application no longer waits for.
//
// The three cores share the walk machinery of this file and walker.go: an undirected
// view of the overlay (each node tells the peers it lists that it lists them, since a
// membership's views need not be symmetric and both uniform walks need an undirected
// graph), the walks' bounded memory of their latest hops, and backtracking: a node
// that learns (protocols.PeerDown) that the peer it just passed a walk to is
// unreachable takes the walk back and sends it elsewhere, and a node left with no live
// neighbour passes the walk back to the hop it came from.
package sampling

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Sample is the Call that asks for one sample. ID is the driver's name for the request,
// unique among the requests it has in progress; the answer carries it.
type Sample struct {
	ID uint64
}

// Cancel is the Call that forgets a sample request (its caller stopped waiting).
type Cancel struct {
	ID uint64
}

// Sampled answers a Sample: Node is the peer the walk ended at (never this node). Its
// ID parses as a peer ID; Record and Meta are what that peer sent about itself.
type Sampled struct {
	protocols.Event
	ID       uint64
	Node     *Peer
	Attempts int // walks started for this sample, this one included
}

// SampleFailed answers a Sample that could not be served: too many requests in
// progress, or MaxAttempts walks that did not come back.
type SampleFailed struct {
	protocols.Event
	ID     uint64
	Reason string
}

// PeerID returns the peer's ID, or "" if its bytes do not parse.
func (p *Peer) PeerID() peer.ID {
	id, err := peer.IDFromBytes(p.GetId())
	if err != nil {
		return ""
	}
	return id
}

// WalkConfig holds the parameters every sampling core shares; a zero field means its
// default.
type WalkConfig struct {
	// WalkLength is the number of steps of a walk (a step that stays at a node counts);
	// 0 means the algorithm's default (MRWB 25, RWD 40, RandomWalk 25).
	WalkLength int
	// WalkTimeout is how long the origin waits for a walk's result before it starts
	// another walk; 0 means 10 s.
	WalkTimeout time.Duration
	// MaxAttempts bounds the walks started for one sample (walks that time out, get
	// stuck, or end at the origin); 0 means 32.
	MaxAttempts int
	// MaxPending bounds the sample requests in progress at this node; 0 means 1,024.
	MaxPending int
	// HopTimeout is how long a node remembers a walk it passed on, to send it elsewhere
	// if it then learns that the next hop is unreachable; 0 means 15 s.
	HopTimeout time.Duration
	// MaxInFlight bounds the walks a node remembers that way (the oldest forgotten
	// first); 0 means 1,024.
	MaxInFlight int
	// PathLength bounds the hops a walk remembers to backtrack along; 0 means 8.
	PathLength int
	// MaxInLinks bounds the peers that list this node and that it counts as neighbours
	// besides those its membership lists; 0 means 256.
	MaxInLinks int
}

// maxWalkLength bounds WalkLength (a walk's ttl is a uint32 on the wire; this keeps the
// work a single input can cause small).
const maxWalkLength = 10000

func (c WalkConfig) withDefaults(walkLength int) WalkConfig {
	if c.WalkLength == 0 {
		c.WalkLength = walkLength
	}
	if c.WalkTimeout == 0 {
		c.WalkTimeout = 10 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 32
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1024
	}
	if c.HopTimeout == 0 {
		c.HopTimeout = 15 * time.Second
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1024
	}
	if c.PathLength == 0 {
		c.PathLength = 8
	}
	if c.MaxInLinks == 0 {
		c.MaxInLinks = 256
	}
	return c
}

func (c WalkConfig) validate(prefix string) error {
	switch {
	case c.WalkLength < 0 || c.WalkLength > maxWalkLength:
		return &protocols.ConfigError{Field: prefix + ".WalkLength", Reason: "must be between 1 and 10000 (0 for the default)"}
	case c.WalkTimeout < 0:
		return &protocols.ConfigError{Field: prefix + ".WalkTimeout", Reason: "must not be negative"}
	case c.HopTimeout < 0:
		return &protocols.ConfigError{Field: prefix + ".HopTimeout", Reason: "must not be negative"}
	case c.MaxAttempts < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxAttempts", Reason: "must not be negative"}
	case c.MaxPending < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxPending", Reason: "must not be negative"}
	case c.MaxInFlight < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxInFlight", Reason: "must not be negative"}
	case c.PathLength < 0 || c.PathLength > 64:
		return &protocols.ConfigError{Field: prefix + ".PathLength", Reason: "must be between 1 and 64 (0 for the default)"}
	case c.MaxInLinks < 0:
		return &protocols.ConfigError{Field: prefix + ".MaxInLinks", Reason: "must not be negative"}
	}
	return nil
}

// Stats are a core's counters since it started.
type Stats struct {
	Requests    uint64 // Sample calls taken
	Walks       uint64 // walks started (attempts)
	Samples     uint64 // Sampled events
	Failed      uint64 // SampleFailed events
	Timeouts    uint64 // walks replaced after WalkTimeout
	AtOrigin    uint64 // walks that ended at their origin and were replaced
	Stuck       uint64 // walks reported stuck (no live neighbour along the remembered path)
	Hops        uint64 // walk messages this node sent forward (moves and MRWB proposals)
	Bounces     uint64 // MRWB proposals this node rejected
	Rerouted    uint64 // walks taken back because their next hop was unreachable
	Backtracked uint64 // walks this node passed back to an earlier hop
	Overfull    uint64 // RWD: walk steps taken with weights over the total (degree >= MaxDegree)
}

// Kind names a message's kind for counters, e.g. "WALK" or "WEIGHT".
func (m *Message) Kind() string {
	switch b := m.GetBody().(type) {
	case *Message_Walk:
		switch b.Walk.GetKind() {
		case Walk_BOUNCE:
			return "BOUNCE"
		case Walk_BACKTRACK:
			return "BACKTRACK"
		}
		return "WALK"
	case *Message_Result:
		return "RESULT"
	case *Message_Link:
		return "LINK"
	case *Message_Weight:
		return "WEIGHT"
	case *Message_WeightAck:
		return "WEIGHT_ACK"
	case *Message_Ask:
		return "ASK"
	case *Message_AskRefused:
		return "ASK_REFUSED"
	}
	return "UNKNOWN"
}

// WalkKind reports whether a message of the given kind belongs to a walk (moves,
// bounces, backtracks, results) rather than to overlay upkeep (links, weights).
func WalkKind(kind string) bool {
	switch kind {
	case "WALK", "BOUNCE", "BACKTRACK", "RESULT":
		return true
	}
	return false
}

// Descriptors lists the node descriptors the message carries (see
// protocols.DescriptorCarrier): a walk's origin, a result's sampled node.
func (m *Message) Descriptors() []protocols.Descriptor {
	switch b := m.GetBody().(type) {
	case *Message_Walk:
		if o := b.Walk.GetOrigin(); o != nil {
			return []protocols.Descriptor{o}
		}
	case *Message_Result:
		if n := b.Result.GetNode(); n != nil {
			return []protocols.Descriptor{n}
		}
	}
	return nil
}

var _ protocols.DescriptorCarrier = (*Message)(nil)
