package sampling

import (
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// RandomWalk is a plain random walk: each step moves to a neighbour chosen uniformly.
// Its stationary distribution is proportional to the degree, so on an overlay whose
// degrees differ its samples are biased towards the well-connected nodes. It is the
// baseline that RWD and MRWB are measured against (lab sampling -protocol naive), and
// shares their walk machinery (backtracking, retries, the undirected view).
type RandomWalk struct {
	*walker
}

// RandomWalkConfig holds the plain walk's parameters; a zero field means its default
// (WalkLength 25).
type RandomWalkConfig struct {
	WalkConfig
}

// WithDefaults returns the config with every zero field set to its default.
func (c RandomWalkConfig) WithDefaults() RandomWalkConfig {
	c.WalkConfig = c.WalkConfig.withDefaults(25)
	return c
}

// Validate says which field is wrong, if any.
func (c RandomWalkConfig) Validate() error { return c.WalkConfig.validate("RandomWalkConfig") }

// NewRandomWalk returns a plain random walk core for node self.
func NewRandomWalk(self peer.ID, cfg RandomWalkConfig, rng *rand.Rand) (*RandomWalk, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validSelf(self, rng); err != nil {
		return nil, err
	}
	r := &RandomWalk{}
	r.walker = newWalker(self, cfg.WithDefaults().WalkConfig, rng, randomPolicy{r})
	return r, nil
}

// Handle implements protocols.Core.
func (r *RandomWalk) Handle(now time.Time, in protocols.Input) []protocols.Output {
	return r.handle(now, in)
}

type randomPolicy struct{ r *RandomWalk }

func (randomPolicy) accept(peer.ID, *Walk) bool { return true }

func (p randomPolicy) advance(w *Walk) {
	e := p.r.walker
	w.Ttl--
	e.forward(e.uniform(), w)
}

func (randomPolicy) usableChanged()            {}
func (randomPolicy) peerDown(peer.ID)          {}
func (randomPolicy) receive(peer.ID, *Message) {}
func (randomPolicy) timer(protocols.Timer)     {}
func (randomPolicy) leave() []protocols.Timer  { return nil }
