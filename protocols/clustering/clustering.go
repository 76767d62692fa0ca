// Package clustering holds the cores of the clustering service: overlays whose
// neighbours are biased by a rank the application gives (lower is better).
//
// T-Man (tman.go) serves the Extreme profile and X-BOT (xbot.go) the Stable one. Both
// are stacked on a membership: they get its neighbours as protocols.Neighbours (their
// source of unbiased, random peers) and build their own view over their own stream
// protocol. What they share is in this file: the node a rank is computed on, the rank,
// and the event that reports the clustered neighbours.
package clustering

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// Node is a peer as a clustering core knows it: its ID and, once learnt from the
// peer's own messages or from other nodes' views, its signed peer record and the
// application metadata it published.
type Node struct {
	ID     peer.ID
	Record []byte // the peer's signed peer record (may be empty)
	Meta   []byte // the application metadata the peer published (may be empty)
}

// Rank is the application's cost of a node, seen from this node: lower is better.
// It is called on the core's goroutine and must not block. Cores call it afresh each
// cycle rather than keep its values, since a rank may change (a measured round-trip
// time, for instance). A NaN is taken as +Inf (the worst).
type Rank func(Node) float64

// ViewChanged is the event a clustering core emits whenever its clustered neighbours
// change: the new neighbours, best ranked first.
type ViewChanged struct {
	protocols.Event
	Nodes []Node
}
