package sampling

import (
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// MRWB is the Metropolized Random Walk with Backtracking of Stutzbach, Rejaie, Duffield,
// Sen and Willinger, "On Unbiased Sampling for Unstructured Peer-to-Peer Networks",
// ACM IMC 2006 and IEEE/ACM Transactions on Networking 17(2), 2009.
//
// A plain random walk ends at a node with probability proportional to its degree. The
// Metropolis-Hastings walk corrects that: at node x of degree d(x) it picks a neighbour
// y uniformly and moves there with probability min(1, d(x)/d(y)), else stays at x for
// this step. The transition probability between two neighbours is then min(1/d(x),
// 1/d(y)) both ways, the chain is symmetric, and its stationary distribution uniform.
// After WalkLength steps (the paper finds 25 enough even for large Gnutella snapshots)
// the node the walk is at is the sample. Backtracking handles peers that leave: when
// the chosen next hop cannot be reached, the walk goes back to where it was and picks
// again, instead of being lost; a node left with no live neighbour at all passes the
// walk back to the previous peer of its path.
//
// Deviations (see docs/sampling.md):
//   - The paper's walker is one crawler that queries peers for their neighbour lists.
//     Here the walk travels: x proposes the move by sending the walk to y with d(x);
//     y, which knows its own degree, accepts (the walk is at y) or rejects, bouncing
//     the walk back to x, where the step counts as a stay. A rejected move costs a
//     second message, and no degree needs to be known in advance.
//   - The degree is that of the undirected view (see the package doc): the peers the
//     node's membership lists plus those that list it. Newscast's views are directed;
//     the paper's Gnutella overlay is not.
//   - The path kept to backtrack along is bounded (PathLength latest hops).
//   - A walk that ends at its origin, or gets stuck, or does not come back within
//     WalkTimeout, is replaced by a new walk from the origin (at most MaxAttempts).
type MRWB struct {
	*walker
}

// MRWBConfig holds MRWB's parameters; a zero field means its default (WalkLength 25).
type MRWBConfig struct {
	WalkConfig
}

// WithDefaults returns the config with every zero field set to its default.
func (c MRWBConfig) WithDefaults() MRWBConfig {
	c.WalkConfig = c.WalkConfig.withDefaults(25)
	return c
}

// Validate says which field is wrong, if any.
func (c MRWBConfig) Validate() error { return c.WalkConfig.validate("MRWBConfig") }

// NewMRWB returns an MRWB core for node self.
func NewMRWB(self peer.ID, cfg MRWBConfig, rng *rand.Rand) (*MRWB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validSelf(self, rng); err != nil {
		return nil, err
	}
	m := &MRWB{}
	m.walker = newWalker(self, cfg.WithDefaults().WalkConfig, rng, mrwbPolicy{m})
	return m, nil
}

// Handle implements protocols.Core.
func (m *MRWB) Handle(now time.Time, in protocols.Input) []protocols.Output {
	return m.handle(now, in)
}

type mrwbPolicy struct{ m *MRWB }

// accept is the Metropolis-Hastings test, run at the proposed node y: accept with
// probability min(1, d(x)/d(y)).
func (p mrwbPolicy) accept(_ peer.ID, w *Walk) bool {
	dy := len(p.m.usable)
	if dy == 0 {
		return false // an isolated node is not part of the graph
	}
	dx := max(int(w.GetDegree()), 1)
	return dx >= dy || p.m.rng.IntN(dy) < dx
}

// advance proposes a uniformly chosen neighbour; the step is taken whatever the answer.
func (p mrwbPolicy) advance(w *Walk) {
	e := p.m.walker
	to := e.uniform()
	w.Ttl--
	w.Degree = uint32(len(e.usable))
	e.forward(to, w)
}

func (mrwbPolicy) usableChanged()            {}
func (mrwbPolicy) peerDown(peer.ID)          {}
func (mrwbPolicy) receive(peer.ID, *Message) {}
func (mrwbPolicy) timer(protocols.Timer)     {}
func (mrwbPolicy) leave() []protocols.Timer  { return nil }
