package aggregation

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

// PushPull is the aggregation protocol of Jelasity, Montresor and Babaoglu, "Gossip-based
// aggregation in large dynamic networks", ACM Transactions on Computer Systems 23(3),
// 2005.
//
// Every node holds an estimate. Once per cycle (Cycle) it picks a random neighbour and
// sends it its estimate (push); the neighbour answers with its own (pull), and both set
// their estimate to the pair's aggregate: the average for Mean, the minimum or maximum
// for Min and Max. Averaging conserves the sum of the estimates (the paper's mass
// conservation), so every estimate converges to the mean of the initial values; with
// neighbours drawn uniformly at random the variance across the nodes shrinks by about
// 1/(2*sqrt(e)) ~= 0.303 per cycle (the paper's convergence factor). Count is built the
// paper's way: at the start of an epoch each node elects itself leader with probability
// Leaders / N', N' its previous estimate of the size, and a leader starts an averaging
// instance of its own, holding 1 where every other node holds 0; an instance converges to
// 1/N, and the node's count is the inverse of its mean over the instances it holds. Sum
// is the mean times the count, computed in the same exchanges.
//
// Restarting: time is cut into epochs of EpochCycles cycles. At the start of an epoch a
// node throws its estimate away and starts again from its local value (SetValue takes
// effect there), so the aggregate follows changing values and nodes that come and go,
// and the mass of crashed nodes or lost messages is forgotten. Messages carry the epoch;
// a node that hears of the epoch after its own starts it at once, so the epochs of the
// nodes keep in step. A node that joins (or falls behind by more than one epoch) takes no
// part in the running epoch: it learns the schedule from the first message it gets
// (waiting nodes probe a neighbour each cycle) and starts with the next epoch.
//
// Exchanges are atomic per pair: while a node waits for the answer to its own request it
// refuses every other request (Refuse BUSY) instead of applying a half-finished update,
// so that concurrent exchanges cannot create or destroy mass.
//
// Deviations from the paper (see docs/aggregation.md):
//   - The paper's model has no message loss inside an exchange. Here a request that gets
//     no answer within Timeout is sent again, at most Retries times, under the same
//     exchange number; the passive node decides an exchange once (applies it, or refuses
//     it) and answers repeats from a small cache of its recent answers. A lost request or
//     answer then only delays the exchange; mass is lost only when every answer of an
//     applied exchange is lost or comes after the initiator gave up (it counts the
//     exchange as failed).
//   - Joining nodes learn the epoch schedule from messages rather than from their
//     contact node, and a node that hears of no epoch for StartAfter cycles (a new
//     network) starts epoch 1 itself; a waiting node that hears of an epoch in its first
//     cycle joins it; a node that hears of an epoch more than one ahead of its own leaves
//     its epoch and waits for the next one.
//   - Cycle counts are kept in step: a node pulled into an epoch by a message takes over
//     the sender's cycle less one, and a node more than a cycle behind a peer of its epoch
//     catches up to the peer's less one, so that all nodes end an epoch within about two
//     cycles of each other and start the next one on their own timers.
//   - A node refused as busy does not try another neighbour in that cycle.
//   - Peer selection is uniform over the membership's current neighbours, not a peer
//     sampling service: over a small, nearly fixed neighbour set convergence is slower
//     than the paper's factor.
//   - With no size estimate yet (the first epoch, or an epoch in which no instance
//     reached the node) every node is a leader; at most MaxInstances counting instances
//     are kept, the ones with the smallest ids, which every node keeps alike, so the kept
//     instances never lose mass.
//   - A node that leaves or crashes takes its mass along until the next epoch, as in the
//     paper; there is no hand-over.
type PushPull struct {
	cfg  PushPullConfig
	rng  *rand.Rand
	self peer.ID

	started, left bool
	neigh         []peer.ID
	value         float64 // the local value, for the next epoch

	// The epoch the node takes part in (0: none, it waits).
	epoch      uint64
	cycle      int
	st         state
	startValue float64

	// Waiting: the epoch waited for (0: unknown), cycles until it starts, and cycles
	// waited without any sign of an epoch.
	next  uint64
	ticks int
	idle  int

	size float64 // the last size estimate (count and sum), 0 if none

	final      float64
	finalEpoch uint64

	ex         exchange // the exchange this node initiated, if active
	restartDue bool     // start epoch+1 once the exchange in flight ends,
	dueCycle   int      // that many cycles into it
	nextEx     uint64

	replies []cachedReply

	stats Stats
	out   []protocols.Output
}

// state is a node's estimate in an epoch: x for mean, min, max and sum, and its shares
// of the counting instances (count and sum), sorted by id.
type state struct {
	x    float64
	inst []instance
}

type instance struct {
	id uint64
	v  float64
}

type exchange struct {
	active   bool
	peer     peer.ID
	id       uint64
	sent     state
	attempts int
}

// cachedReply is the answer given to one exchange: a reply, or a refusal (refused not
// UNKNOWN). A repeat of the exchange's request gets the same answer.
type cachedReply struct {
	from    peer.ID
	id      uint64
	at      time.Time
	epoch   uint64
	st      state
	refused Refuse_Reason
}

// Stats are a core's counters since it started.
type Stats struct {
	Epochs      uint64 // epochs started
	Initiated   uint64 // exchanges this node initiated
	Completed   uint64 // of those, answered and applied
	Served      uint64 // exchanges applied as the passive side
	Retransmits uint64 // requests sent again after a timeout
	Failed      uint64 // exchanges given up: no answer after every attempt, or the peer went down
	Refused     uint64 // own requests refused (busy, other epoch, waiting, other function)
	Busy        uint64 // of those, refused because the peer was in an exchange
	OtherEpoch  uint64 // of those, refused because the peer was in another epoch
	Waiting     uint64 // of those, refused because the peer waited for an epoch
	Skipped     uint64 // cycles without an exchange: no neighbour, or the last one still in flight
	Late        uint64 // answers that came after the exchange had ended
	Ignored     uint64 // malformed messages
}

// PushPullConfig holds the protocol's parameters; a zero field means its default.
type PushPullConfig struct {
	// Function is the aggregate computed (zero value: Mean).
	Function Function
	// Value is the node's local value at the start (SetValue changes it).
	Value float64
	// Cycle is the paper's cycle length (Delta): how often a node initiates an exchange.
	// 0 means 1 s.
	Cycle time.Duration
	// EpochCycles is the epoch length in cycles (the paper's gamma): every so many cycles
	// the estimates restart from the local values. 0 means 30.
	EpochCycles int
	// Timeout is how long an initiator waits for the answer before sending its request
	// again. 0 means Cycle/8. Timeout*(Retries+1) should exceed the worst round trip:
	// an answer that comes after the initiator gave up is lost mass.
	Timeout time.Duration
	// Retries bounds the repeats of a request that gets no answer. 0 means 4; negative
	// means none (the paper's single attempt).
	Retries int
	// StartAfter is how many cycles a node that hears of no epoch waits before it starts
	// epoch 1 itself (a new network). 0 means 3.
	StartAfter int
	// Leaders is the expected number of counting instances per epoch (count and sum):
	// a node elects itself leader with probability Leaders / (its size estimate). 0 means 8.
	Leaders int
	// MaxInstances bounds the counting instances a node keeps (the smallest ids win).
	// 0 means 32.
	MaxInstances int
	// MaxNeighbours bounds the neighbours kept from a Neighbours input. 0 means 1,024.
	MaxNeighbours int
	// ReplyCache bounds the recent answers (replies and refusals) kept to answer repeated
	// requests alike. 0 means 64.
	ReplyCache int
}

// WithDefaults returns the config with every zero field set to its default.
func (c PushPullConfig) WithDefaults() PushPullConfig {
	if c.Cycle == 0 {
		c.Cycle = time.Second
	}
	if c.EpochCycles == 0 {
		c.EpochCycles = 30
	}
	if c.Timeout == 0 {
		c.Timeout = max(c.Cycle/8, 1)
	}
	if c.Retries == 0 {
		c.Retries = 4
	} else if c.Retries < 0 {
		c.Retries = -1
	}
	if c.StartAfter == 0 {
		c.StartAfter = 3
	}
	if c.Leaders == 0 {
		c.Leaders = 8
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = 32
	}
	if c.MaxNeighbours == 0 {
		c.MaxNeighbours = 1024
	}
	if c.ReplyCache == 0 {
		c.ReplyCache = 64
	}
	return c
}

// maxEpochCycles bounds EpochCycles (cycles travel as uint32 and count down in ints).
const maxEpochCycles = 1 << 20

// Validate says which field is wrong, if any.
func (c PushPullConfig) Validate() error {
	bad := func(field, reason string) error {
		return &protocols.ConfigError{Field: "PushPullConfig." + field, Reason: reason}
	}
	switch {
	case !c.Function.Valid():
		return bad("Function", "is not one of Mean, Min, Max, Sum, Count")
	case math.IsNaN(c.Value) || math.IsInf(c.Value, 0):
		return bad("Value", "must be a finite number")
	case c.Cycle < 0:
		return bad("Cycle", "must not be negative")
	case c.EpochCycles < 0 || c.EpochCycles > maxEpochCycles:
		return bad("EpochCycles", "must be between 0 (the default) and 1,048,576")
	case c.Timeout < 0:
		return bad("Timeout", "must not be negative")
	case c.StartAfter < 0:
		return bad("StartAfter", "must not be negative")
	case c.Leaders < 0:
		return bad("Leaders", "must not be negative")
	case c.MaxInstances < 0:
		return bad("MaxInstances", "must not be negative")
	case c.MaxNeighbours < 0:
		return bad("MaxNeighbours", "must not be negative")
	case c.ReplyCache < 0:
		return bad("ReplyCache", "must not be negative")
	}
	if d := c.WithDefaults(); d.MaxInstances < d.Leaders {
		return bad("MaxInstances", "must be at least Leaders")
	}
	return nil
}

const (
	timerCycle uint8 = iota + 40
	timerTimeout
)

// NewPushPull returns a push-pull aggregation core for node self.
func NewPushPull(self peer.ID, cfg PushPullConfig, rng *rand.Rand) (*PushPull, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.Validate(); err != nil {
		return nil, &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return nil, &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	cfg = cfg.WithDefaults()
	return &PushPull{cfg: cfg, rng: rng, self: self, value: cfg.Value}, nil
}

// Config returns the core's config, defaults filled in.
func (p *PushPull) Config() PushPullConfig { return p.cfg }

// Stats returns the core's counters.
func (p *PushPull) Stats() Stats { return p.stats }

// Neighbours returns the neighbours the core draws exchange partners from.
func (p *PushPull) Neighbours() []peer.ID { return slices.Clone(p.neigh) }

// Estimate returns the node's current estimate.
func (p *PushPull) Estimate() Estimate {
	e := Estimate{Epoch: p.epoch, Cycle: p.cycle, Cycles: p.cfg.EpochCycles, Final: p.final, FinalEpoch: p.finalEpoch}
	if p.epoch == 0 {
		return e
	}
	e.Value, e.Known = p.st.estimate(p.cfg.Function)
	return e
}

// EpochValue returns the local value the node started its current epoch with, and
// whether it takes part in one (for experiments: the true aggregate of an epoch is the
// aggregate of these).
func (p *PushPull) EpochValue() (float64, bool) { return p.startValue, p.epoch != 0 }

// Instances returns the node's shares of the counting instances (count and sum), by
// instance id.
func (p *PushPull) Instances() map[uint64]float64 {
	m := make(map[uint64]float64, len(p.st.inst))
	for _, in := range p.st.inst {
		m[in.id] = in.v
	}
	return m
}

// Handle implements protocols.Core.
func (p *PushPull) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if p.left {
		return nil
	}
	p.out = p.out[:0]
	switch v := in.(type) {
	case protocols.Start:
		if !p.started {
			p.started = true
			p.setTimer(timerCycle, time.Duration(p.rng.Int64N(int64(p.cfg.Cycle)))+1)
		}
	case protocols.Neighbours:
		p.setNeighbours(v.Peers)
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && p.started && v.From != p.self && v.From != "" {
			p.receive(now, v.From, m)
		}
	case protocols.TimerFired:
		switch v.Timer.Kind {
		case timerCycle:
			p.tick()
		case timerTimeout:
			p.timeout()
		}
	case protocols.PeerDown:
		p.peerDown(v.Peer)
	case protocols.Call:
		if sv, ok := v.Req.(SetValue); ok && !math.IsNaN(sv.Value) && !math.IsInf(sv.Value, 0) {
			p.value = sv.Value
		}
	case protocols.Leave:
		p.left = true
		p.out = append(p.out,
			protocols.CancelTimer{Timer: protocols.Timer{Kind: timerCycle}},
			protocols.CancelTimer{Timer: protocols.Timer{Kind: timerTimeout}})
	}
	return p.out
}

func (p *PushPull) setTimer(kind uint8, after time.Duration) {
	p.out = append(p.out, protocols.SetTimer{Timer: protocols.Timer{Kind: kind}, After: after})
}

func (p *PushPull) send(to peer.ID, m *Message) {
	p.out = append(p.out, protocols.Send{To: to, Msg: m})
}

func (p *PushPull) emit() {
	p.out = append(p.out, Updated{Estimate: p.Estimate(), Stats: p.stats})
}

func (p *PushPull) setNeighbours(peers []peer.ID) {
	p.neigh = p.neigh[:0]
	for _, q := range peers {
		if len(p.neigh) >= p.cfg.MaxNeighbours {
			break
		}
		if q != p.self && q != "" && !slices.Contains(p.neigh, q) {
			p.neigh = append(p.neigh, q)
		}
	}
}

func (p *PushPull) peerDown(q peer.ID) {
	if i := slices.Index(p.neigh, q); i >= 0 {
		p.neigh = slices.Delete(p.neigh, i, i+1)
	}
	if p.ex.active && p.ex.peer == q {
		p.stats.Failed++
		p.endExchange()
	}
}

// tick is the start of a cycle: the paper's active thread.
func (p *PushPull) tick() {
	p.setTimer(timerCycle, p.cfg.Cycle)
	if p.epoch == 0 {
		p.waitTick()
		return
	}
	if p.cycle >= p.cfg.EpochCycles {
		if p.ex.active {
			// The epoch ends once the exchange in flight does, so that its mass stays
			// in the epoch it belongs to.
			if !p.restartDue {
				p.restartDue, p.dueCycle = true, 0
			}
			p.stats.Skipped++
			return
		}
		p.restart(p.epoch+1, 0)
	}
	p.cycle++
	p.initiate()
}

// waitTick is a cycle of a node that takes part in no epoch.
func (p *PushPull) waitTick() {
	if p.next != 0 {
		if p.ticks--; p.ticks > 0 {
			return
		}
		p.restart(p.next, 0)
		p.cycle++
		p.initiate()
		return
	}
	p.idle++
	if p.idle > p.cfg.StartAfter {
		// Nobody around is in an epoch: a new network.
		p.restart(1, 0)
		p.cycle++
		p.initiate()
		return
	}
	// Ask a neighbour for the schedule; its refusal carries it. No answer is awaited.
	if len(p.neigh) > 0 {
		q := p.neigh[p.rng.IntN(len(p.neigh))]
		p.send(q, &Message{Body: &Message_Request{Request: &Request{Function: uint32(p.cfg.Function), Size: p.size}}})
	}
}

// restart ends the current epoch (its estimate becomes the final one) and starts epoch
// e from the local value, cycle cycles into it: 0 when this node starts the epoch on its
// own, the sender's cycle less one when a message pulls it in (see joinCycle).
func (p *PushPull) restart(e uint64, cycle int) {
	if p.epoch != 0 {
		v, known := p.st.estimate(p.cfg.Function)
		if known {
			p.final, p.finalEpoch = v, p.epoch
		}
		if p.cfg.Function.counts() {
			p.size = 0
			if c, ok := p.st.count(); ok {
				p.size = c
			}
		}
	}
	p.epoch, p.cycle = e, cycle
	p.next, p.ticks, p.idle = 0, 0, 0
	p.restartDue, p.dueCycle = false, 0
	p.startValue = p.value
	p.st = state{x: p.value}
	if p.cfg.Function.counts() {
		lead := 1.0
		if p.size > 0 {
			lead = float64(p.cfg.Leaders) / p.size
		}
		if p.rng.Float64() < lead {
			id := p.rng.Uint64()
			for id == 0 {
				id = p.rng.Uint64()
			}
			p.st.inst = []instance{{id: id, v: 1}}
		}
	}
	p.stats.Epochs++
	p.emit()
}

// wait leaves the current epoch (the node fell behind) to wait for a later one.
func (p *PushPull) wait() {
	if p.ex.active {
		p.stats.Failed++
		p.ex = exchange{}
		p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerTimeout}})
	}
	p.epoch, p.cycle, p.restartDue, p.dueCycle = 0, 0, false, 0
	p.st = state{}
	p.emit()
}

// hear records the schedule a message revealed to a waiting node: the sender is in
// epoch e at cycle c, so epoch e+1 starts in about EpochCycles-c cycles (one more is
// waited, so as not to start it before the sender; the sender's messages pull the node
// in as soon as it does).
func (p *PushPull) hear(e uint64, c uint32, size float64) {
	if e == 0 || e == math.MaxUint64 {
		return
	}
	p.hearNext(e+1, p.cfg.EpochCycles-int(min(c, uint32(p.cfg.EpochCycles)))+1, size)
}

func (p *PushPull) hearNext(next uint64, ticks int, size float64) {
	if next <= p.next {
		return
	}
	p.next, p.ticks = next, max(1, min(ticks, p.cfg.EpochCycles))
	p.adoptSize(size)
}

// adoptSize takes a peer's size estimate, for a node that has none of its own.
func (p *PushPull) adoptSize(size float64) {
	if size > 0 && !math.IsInf(size, 0) && !math.IsNaN(size) && p.epoch == 0 {
		p.size = size
	}
}

// joinCycle is the cycle a node pulled into an epoch by a peer at cycle c starts at:
// one less than the peer's, so that it ends the epoch with the peer but never before it
// (its cycle timer may fire before the peer's does).
func (p *PushPull) joinCycle(c uint32) int {
	return max(0, int(min(c, uint32(p.cfg.EpochCycles)))-1)
}

// catchUp keeps the cycle counts of an epoch in step: a node more than one cycle behind
// a peer of its epoch takes over the peer's count less one, so that the nodes end the
// epoch, and start the next one on their own timers, within about two cycles of its
// first node. (Taking over the peer's count itself would let counts leapfrog each other
// and shorten the epochs.)
func (p *PushPull) catchUp(e uint64, c uint32) {
	if e != 0 && e == p.epoch {
		p.cycle = max(p.cycle, p.joinCycle(c))
	}
}

// due notes that epoch+1 has begun at a peer at cycle c, to be started once the exchange
// in flight ends.
func (p *PushPull) due(c uint32) {
	if !p.restartDue || p.joinCycle(c) > p.dueCycle {
		p.dueCycle = p.joinCycle(c)
	}
	p.restartDue = true
}

// mayJoin says whether a waiting node may take part in epoch e, which a peer is in at
// cycle c: if it is the epoch the node waits for, or if it has just begun (c <= 1) and
// is not older than the one waited for (a new network, or a join right at an epoch's
// start).
func (p *PushPull) mayJoin(e uint64, c uint32) bool {
	return e == p.next || (c <= 1 && e > p.next)
}

func (p *PushPull) initiate() {
	if p.ex.active || len(p.neigh) == 0 {
		p.stats.Skipped++
		return
	}
	q := p.neigh[p.rng.IntN(len(p.neigh))]
	p.nextEx++
	p.ex = exchange{active: true, peer: q, id: p.nextEx, sent: p.st.clone(), attempts: 1}
	p.stats.Initiated++
	p.sendRequest()
}

func (p *PushPull) sendRequest() {
	p.send(p.ex.peer, &Message{Body: &Message_Request{Request: &Request{
		Exchange: p.ex.id, Epoch: p.epoch, Cycle: uint32(p.cycle), Function: uint32(p.cfg.Function),
		State: p.ex.sent.wire(), Size: p.size,
	}}})
	p.setTimer(timerTimeout, p.cfg.Timeout)
}

func (p *PushPull) timeout() {
	if !p.ex.active {
		return
	}
	if p.ex.attempts <= p.cfg.Retries {
		p.ex.attempts++
		p.stats.Retransmits++
		p.sendRequest()
		return
	}
	p.stats.Failed++
	p.endExchange()
}

// endExchange unlocks the node after its exchange ended, and starts the next epoch if
// it became due meanwhile.
func (p *PushPull) endExchange() {
	p.ex = exchange{}
	p.out = append(p.out, protocols.CancelTimer{Timer: protocols.Timer{Kind: timerTimeout}})
	if p.restartDue && p.epoch != 0 {
		p.restart(p.epoch+1, p.dueCycle)
	}
}

func (p *PushPull) receive(now time.Time, from peer.ID, m *Message) {
	switch b := m.GetBody().(type) {
	case *Message_Request:
		if b.Request != nil {
			p.request(now, from, b.Request)
			return
		}
	case *Message_Reply:
		if b.Reply != nil {
			p.reply(from, b.Reply)
			return
		}
	case *Message_Refuse:
		if b.Refuse != nil {
			p.refused(from, b.Refuse)
			return
		}
	}
	p.stats.Ignored++
}

// request is the paper's passive thread.
func (p *PushPull) request(now time.Time, from peer.ID, r *Request) {
	if r.GetFunction() != uint32(p.cfg.Function) {
		p.refuse(from, r.GetExchange(), Refuse_FUNCTION)
		return
	}
	if r.GetExchange() != 0 {
		if c := p.cachedReply(from, r.GetExchange()); c != nil {
			// A repeat of an exchange answered already (its answer was lost or is
			// slow): the same answer again, and nothing applied twice. A refusal stands
			// too, even if this node could take the exchange now: the initiator may
			// have the first answer already.
			if c.refused != Refuse_UNKNOWN {
				p.refuse(from, c.id, c.refused)
				return
			}
			p.send(from, &Message{Body: &Message_Reply{Reply: &Reply{Exchange: c.id, Epoch: c.epoch, State: c.st.wire(), Cycle: uint32(p.cycle)}}})
			return
		}
	}
	if r.GetEpoch() == 0 {
		// A probe from a waiting node: the refusal carries the schedule.
		reason := Refuse_EPOCH
		if p.epoch == 0 {
			reason = Refuse_WAITING
		}
		p.refuse(from, 0, reason)
		return
	}
	theirs, ok := p.decode(r.GetState())
	if !ok || r.GetExchange() == 0 {
		p.stats.Ignored++
		return
	}
	e := r.GetEpoch()
	switch {
	case p.epoch == 0:
		if !p.mayJoin(e, r.GetCycle()) {
			p.hear(e, r.GetCycle(), r.GetSize())
			p.refuseOnce(now, from, r.GetExchange(), Refuse_WAITING)
			return
		}
		p.adoptSize(r.GetSize())
		p.restart(e, p.joinCycle(r.GetCycle())) // the epoch this node waited for has begun
	case e < p.epoch:
		p.refuseOnce(now, from, r.GetExchange(), Refuse_EPOCH)
		return
	case e == p.epoch+1:
		if p.ex.active {
			p.due(r.GetCycle())
			p.refuseOnce(now, from, r.GetExchange(), Refuse_BUSY)
			return
		}
		p.restart(e, p.joinCycle(r.GetCycle()))
	case e > p.epoch+1:
		p.wait()
		p.hear(e, r.GetCycle(), r.GetSize())
		p.refuseOnce(now, from, r.GetExchange(), Refuse_WAITING)
		return
	}
	if p.ex.active {
		p.refuseOnce(now, from, r.GetExchange(), Refuse_BUSY)
		return
	}
	mine := p.st
	p.st = merge(p.cfg.Function, mine, theirs, p.cfg.MaxInstances)
	p.cacheReply(now, from, r.GetExchange(), mine, Refuse_UNKNOWN)
	p.catchUp(e, r.GetCycle())
	p.send(from, &Message{Body: &Message_Reply{Reply: &Reply{Exchange: r.GetExchange(), Epoch: p.epoch, State: mine.wire(), Cycle: uint32(p.cycle)}}})
	p.stats.Served++
	p.emit()
}

// refuseOnce refuses an exchange and remembers it, so that a repeat of the request is
// refused too.
func (p *PushPull) refuseOnce(now time.Time, to peer.ID, exchange uint64, reason Refuse_Reason) {
	p.cacheReply(now, to, exchange, state{}, reason)
	p.refuse(to, exchange, reason)
}

func (p *PushPull) refuse(to peer.ID, exchange uint64, reason Refuse_Reason) {
	r := &Refuse{Exchange: exchange, Reason: reason, Epoch: p.epoch, Cycle: uint32(p.cycle), Size: p.size}
	if p.epoch == 0 && p.next != 0 {
		r.Next, r.Ticks = p.next, uint32(p.ticks)
	}
	p.send(to, &Message{Body: &Message_Refuse{Refuse: r}})
}

func (p *PushPull) reply(from peer.ID, r *Reply) {
	if !p.ex.active || from != p.ex.peer || r.GetExchange() != p.ex.id {
		p.stats.Late++
		return
	}
	theirs, ok := p.decode(r.GetState())
	if !ok || r.GetEpoch() != p.epoch {
		p.stats.Ignored++
		return
	}
	p.st = merge(p.cfg.Function, p.ex.sent, theirs, p.cfg.MaxInstances)
	p.catchUp(r.GetEpoch(), r.GetCycle())
	p.stats.Completed++
	p.emit()
	p.endExchange()
}

func (p *PushPull) refused(from peer.ID, r *Refuse) {
	ours := p.ex.active && from == p.ex.peer && r.GetExchange() == p.ex.id && r.GetExchange() != 0
	if ours {
		p.stats.Refused++
		switch r.GetReason() {
		case Refuse_BUSY:
			p.stats.Busy++
		case Refuse_EPOCH:
			p.stats.OtherEpoch++
		case Refuse_WAITING:
			p.stats.Waiting++
		}
	}
	e := r.GetEpoch()
	p.catchUp(e, r.GetCycle())
	switch {
	case p.epoch == 0:
		if e != 0 && p.mayJoin(e, r.GetCycle()) {
			p.adoptSize(r.GetSize())
			p.restart(e, p.joinCycle(r.GetCycle()))
		} else if e != 0 {
			p.hear(e, r.GetCycle(), r.GetSize())
		} else if r.GetNext() != 0 && r.GetNext() != math.MaxUint64 {
			p.hearNext(r.GetNext(), int(min(r.GetTicks(), maxEpochCycles)), r.GetSize())
		}
	case e == p.epoch+1:
		p.due(r.GetCycle())
	case e > p.epoch+1:
		p.wait()
		p.hear(e, r.GetCycle(), r.GetSize())
		return
	}
	if ours {
		p.endExchange()
	} else if p.restartDue && !p.ex.active && p.epoch != 0 {
		p.restart(p.epoch+1, p.dueCycle)
	}
}

// cachedReply finds the reply given to exchange id of from, if still kept.
func (p *PushPull) cachedReply(from peer.ID, id uint64) *cachedReply {
	for i := range p.replies {
		if p.replies[i].id == id && p.replies[i].from == from {
			return &p.replies[i]
		}
	}
	return nil
}

// cacheReply keeps an answer for as long as its initiator may repeat the request, and
// at most ReplyCache answers.
func (p *PushPull) cacheReply(now time.Time, from peer.ID, id uint64, st state, refused Refuse_Reason) {
	keep := p.cfg.Timeout*time.Duration(p.cfg.Retries+2) + p.cfg.Cycle
	drop := 0
	for drop < len(p.replies) && (now.Sub(p.replies[drop].at) > keep || len(p.replies)-drop >= p.cfg.ReplyCache) {
		drop++
	}
	p.replies = append(p.replies[:0], p.replies[drop:]...)
	p.replies = append(p.replies, cachedReply{from: from, id: id, at: now, epoch: p.epoch, st: st, refused: refused})
}

// decode checks a state from the wire: finite numbers, instance shares in [0, 1], ids
// strictly increasing and not 0, at most 4*MaxInstances of them.
func (p *PushPull) decode(w *State) (state, bool) {
	x := w.GetValue()
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return state{}, false
	}
	ins := w.GetInstances()
	if len(ins) > 4*p.cfg.MaxInstances {
		return state{}, false
	}
	st := state{x: x}
	if !p.cfg.Function.counts() {
		return st, len(ins) == 0
	}
	st.inst = make([]instance, 0, len(ins))
	var last uint64
	for _, in := range ins {
		v := in.GetValue()
		if in.GetId() <= last || !(v >= 0 && v <= 1) {
			return state{}, false
		}
		last = in.GetId()
		st.inst = append(st.inst, instance{id: in.GetId(), v: v})
	}
	return st, true
}

func (s state) clone() state {
	return state{x: s.x, inst: slices.Clone(s.inst)}
}

func (s state) wire() *State {
	w := &State{Value: s.x}
	if len(s.inst) > 0 {
		w.Instances = make([]*Instance, len(s.inst))
		for i, in := range s.inst {
			w.Instances[i] = &Instance{Id: in.id, Value: in.v}
		}
	}
	return w
}

// count is the size estimate: the inverse of the mean share over the instances held.
func (s state) count() (float64, bool) {
	if len(s.inst) == 0 {
		return 0, false
	}
	var sum float64
	for _, in := range s.inst {
		sum += in.v
	}
	if !(sum > 0) {
		return 0, false
	}
	return float64(len(s.inst)) / sum, true
}

func (s state) estimate(f Function) (float64, bool) {
	switch f {
	case Count:
		return s.count()
	case Sum:
		c, ok := s.count()
		return s.x * c, ok
	}
	return s.x, true
}

// merge is the paper's UPDATE: the new state of both ends of an exchange (the same
// numbers at both ends: IEEE addition commutes and halving is exact).
func merge(f Function, a, b state, maxInst int) state {
	var out state
	switch f {
	case Min:
		out.x = min(a.x, b.x)
	case Max:
		out.x = max(a.x, b.x)
	default:
		out.x = (a.x + b.x) / 2
	}
	if !f.counts() {
		return out
	}
	out.inst = make([]instance, 0, min(len(a.inst)+len(b.inst), maxInst))
	i, j := 0, 0
	for len(out.inst) < maxInst && (i < len(a.inst) || j < len(b.inst)) {
		switch {
		case j >= len(b.inst) || (i < len(a.inst) && a.inst[i].id < b.inst[j].id):
			out.inst = append(out.inst, instance{id: a.inst[i].id, v: a.inst[i].v / 2})
			i++
		case i >= len(a.inst) || b.inst[j].id < a.inst[i].id:
			out.inst = append(out.inst, instance{id: b.inst[j].id, v: b.inst[j].v / 2})
			j++
		default:
			out.inst = append(out.inst, instance{id: a.inst[i].id, v: (a.inst[i].v + b.inst[j].v) / 2})
			i++
			j++
		}
	}
	return out
}
