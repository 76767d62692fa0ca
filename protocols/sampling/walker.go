package sampling

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// policy is what tells the cores apart: how a walk takes its steps from a node, and any
// upkeep of its own (RWD's link weights).
type policy interface {
	// accept decides whether a walk that from moved here (FORWARD) stays here. Only
	// MRWB may refuse, which bounces the walk back to from.
	accept(from peer.ID, w *Walk) bool
	// advance takes the walk's next steps from this node, which has at least one usable
	// neighbour and ttl > 0 left: it forwards the walk (walker.forward) or ends it here
	// (walker.finish).
	advance(w *Walk)
	// usableChanged is called after the set of usable neighbours changed.
	usableChanged()
	// peerDown is called when p became unreachable, after p left the usable set.
	peerDown(p peer.ID)
	// receive handles the policy's own messages.
	receive(from peer.ID, m *Message)
	// timer handles the policy's own timers.
	timer(t protocols.Timer)
	// leave returns the policy's pending timers, to cancel.
	leave() []protocols.Timer
}

const (
	timerWalk    uint8 = iota + 40 // a sample's current walk timed out (Key: sample ID)
	timerRetry                     // RWD: a weight proposal or request to a peer (Peer)
	timerRefresh                   // RWD: clear the refusal marks and distribute again
)

// walker is the machinery every sampling core shares: the undirected neighbour set,
// the samples this node asked for, and the walks passing through.
//
// The undirected view: a node tells each peer its membership lists that it does (Link
// up) and when it no longer does (Link down). A peer is usable, i.e. a neighbour for
// the walks, when this node lists it and that peer did not refuse the link, or when the
// peer lists this node; and when no send to it has failed since it last spoke.
type walker struct {
	cfg  WalkConfig
	rng  *rand.Rand
	self peer.ID
	rec  []byte // this node's signed peer record (SelfUpdated)
	meta []byte // this node's metadata (SelfUpdated)
	pol  policy

	out     []peer.ID         // the membership's neighbours, in its order
	in      []peer.ID         // peers that said they list us, in arrival order
	refused map[peer.ID]bool  // peers of out that do not count us (their in-set is full)
	down    map[peer.ID]bool  // a send failed since the peer last spoke
	usable  []peer.ID         // neighbours for the walks: out first, then in
	pending map[uint64]*ask   // samples this node asked for, by request ID
	order   []uint64          // their IDs in arrival order
	walks   map[uint64]uint64 // current walk ID -> request ID

	flight  map[walkKey]*inflight // walks passed on recently, by walk
	flightQ []*inflight           // the same, oldest first (with stale entries)

	stats Stats
	now   time.Time
	left  bool
	outs  []protocols.Output
}

// ask is a sample request in progress.
type ask struct {
	id       uint64
	walk     uint64 // current walk ID; 0 while waiting for a neighbour
	attempts int
}

type walkKey struct {
	origin peer.ID
	id     uint64
}

// inflight is a walk this node passed on, kept to take it back if the next hop turns
// out to be unreachable.
type inflight struct {
	key  walkKey
	to   peer.ID
	kind Walk_Kind
	w    *Walk // the message sent (owned by the driver: read only)
	at   time.Time
}

func newWalker(self peer.ID, cfg WalkConfig, rng *rand.Rand, pol policy) *walker {
	return &walker{
		cfg: cfg, rng: rng, self: self, pol: pol,
		refused: map[peer.ID]bool{}, down: map[peer.ID]bool{},
		pending: map[uint64]*ask{}, walks: map[uint64]uint64{},
		flight: map[walkKey]*inflight{},
	}
}

func validSelf(self peer.ID, rng *rand.Rand) error {
	if err := self.Validate(); err != nil {
		return &protocols.ConfigError{Field: "self", Reason: "is not a valid peer ID"}
	}
	if rng == nil {
		return &protocols.ConfigError{Field: "rng", Reason: "is nil"}
	}
	return nil
}

// Usable returns the neighbours the walks use now (see walker).
func (e *walker) Usable() []peer.ID { return slices.Clone(e.usable) }

// Stats returns the core's counters.
func (e *walker) Stats() Stats { return e.stats }

// Pending returns the number of sample requests in progress.
func (e *walker) Pending() int { return len(e.pending) }

func (e *walker) handle(now time.Time, in protocols.Input) []protocols.Output {
	if e.left {
		return nil
	}
	e.now = now
	e.outs = e.outs[:0]
	switch v := in.(type) {
	case protocols.Neighbours:
		e.setOut(v.Peers)
	case protocols.SelfUpdated:
		e.rec = slices.Clone(v.Record)
		e.meta = slices.Clone(v.Meta)
	case protocols.Call:
		switch r := v.Req.(type) {
		case Sample:
			e.request(r.ID)
		case Cancel:
			e.done(r.ID)
		}
	case protocols.Receive:
		if m, ok := v.Msg.(*Message); ok && m != nil && v.From != e.self && v.From != "" {
			e.receive(v.From, m)
		}
	case protocols.TimerFired:
		if v.Timer.Kind == timerWalk {
			e.walkTimeout(v.Timer.Key)
		} else {
			e.pol.timer(v.Timer)
		}
	case protocols.PeerDown:
		e.peerDown(v.Peer)
	case protocols.Leave:
		for _, id := range e.order {
			e.cancelTimer(id)
		}
		for _, t := range e.pol.leave() {
			e.outs = append(e.outs, protocols.CancelTimer{Timer: t})
		}
		for _, p := range e.out {
			e.send(p, &Message{Body: &Message_Link{Link: &Link{}}})
		}
		e.left = true
	}
	return e.outs
}

func (e *walker) send(to peer.ID, m *Message) {
	e.outs = append(e.outs, protocols.Send{To: to, Msg: m})
}

func (e *walker) emit(ev protocols.Output) { e.outs = append(e.outs, ev) }

func (e *walker) setTimer(t protocols.Timer, after time.Duration) {
	e.outs = append(e.outs, protocols.SetTimer{Timer: t, After: after})
}

func (e *walker) cancel(t protocols.Timer) {
	e.outs = append(e.outs, protocols.CancelTimer{Timer: t})
}

// ---- the undirected neighbour set ----

func (e *walker) setOut(peers []peer.ID) {
	var next []peer.ID
	for _, p := range peers {
		if p != e.self && p != "" && !slices.Contains(next, p) {
			next = append(next, p)
		}
	}
	for _, p := range e.out {
		if !slices.Contains(next, p) {
			delete(e.refused, p)
			e.send(p, &Message{Body: &Message_Link{Link: &Link{}}})
		}
	}
	for _, p := range next {
		// New neighbours are told they are listed. So are listed ones that a send
		// failed to (they may have started the service since) or that refused the link
		// (they may have room now): the driver passes the neighbours again from time to
		// time for this.
		if !slices.Contains(e.out, p) || e.down[p] || e.refused[p] {
			delete(e.down, p)
			delete(e.refused, p)
			e.send(p, &Message{Body: &Message_Link{Link: &Link{Up: true}}})
		}
	}
	e.out = next
	e.recompute()
}

func (e *walker) onLink(from peer.ID, l *Link) {
	switch {
	case l.GetUp():
		if !slices.Contains(e.in, from) {
			if len(e.in) >= e.cfg.MaxInLinks {
				e.send(from, &Message{Body: &Message_Link{Link: &Link{Refused: true}}})
				return
			}
			e.in = append(e.in, from)
		}
	case l.GetRefused():
		if slices.Contains(e.out, from) {
			e.refused[from] = true
		}
	default:
		e.in = slices.DeleteFunc(e.in, func(p peer.ID) bool { return p == from })
	}
	e.recompute()
}

// recompute derives the usable set and tells the policy when it changed.
func (e *walker) recompute() {
	var u []peer.ID
	for _, p := range e.out {
		if !e.down[p] && (!e.refused[p] || slices.Contains(e.in, p)) {
			u = append(u, p)
		}
	}
	for _, p := range e.in {
		if !e.down[p] && !slices.Contains(e.out, p) {
			u = append(u, p)
		}
	}
	for p := range e.down {
		if !slices.Contains(e.out, p) && !slices.Contains(e.in, p) {
			delete(e.down, p)
		}
	}
	if slices.Equal(u, e.usable) {
		return
	}
	was := len(e.usable)
	e.usable = u
	e.pol.usableChanged()
	if was == 0 && len(u) > 0 {
		for _, id := range slices.Clone(e.order) {
			if a, ok := e.pending[id]; ok && a.walk == 0 {
				e.attempt(a)
			}
		}
	}
}

func (e *walker) receive(from peer.ID, m *Message) {
	if e.down[from] {
		delete(e.down, from) // it spoke: it is reachable again
		e.recompute()
	}
	switch b := m.GetBody().(type) {
	case *Message_Walk:
		if b.Walk != nil {
			e.onWalk(from, b.Walk)
		}
	case *Message_Result:
		if b.Result != nil {
			e.onResult(from, b.Result)
		}
	case *Message_Link:
		if b.Link != nil {
			e.onLink(from, b.Link)
		}
	default:
		e.pol.receive(from, m)
	}
}

func (e *walker) peerDown(p peer.ID) {
	if p == "" || p == e.self {
		return
	}
	if slices.Contains(e.out, p) || slices.Contains(e.in, p) {
		e.down[p] = true
		e.recompute()
	}
	e.pol.peerDown(p)
	// Take back the walks recently passed to p and send them elsewhere: the failed move
	// is undone (a failed step is not a step).
	for _, f := range slices.Clone(e.flightQ) {
		if e.flight[f.key] != f || f.to != p {
			continue
		}
		delete(e.flight, f.key)
		if e.now.Sub(f.at) > e.cfg.HopTimeout {
			continue
		}
		// The record shares the message sent, which the driver owns: copy, never change.
		w := &Walk{Id: f.w.Id, Origin: f.w.Origin, Ttl: f.w.Ttl, Path: slices.Clone(f.w.Path)}
		if f.kind == Walk_FORWARD {
			w.Ttl++
			if n := len(w.Path); n > 0 && peer.ID(w.Path[n-1]) == e.self {
				w.Path = w.Path[:n-1]
			}
		}
		e.stats.Rerouted++
		e.resume(w)
	}
}

// ---- walks passing through ----

func (e *walker) onWalk(from peer.ID, w *Walk) {
	origin := w.GetOrigin().PeerID()
	if origin == "" || w.GetTtl() > maxWalkLength || w.GetId() == 0 {
		return
	}
	if len(w.Path) > e.cfg.PathLength {
		w.Path = w.Path[len(w.Path)-e.cfg.PathLength:]
	}
	e.forget(walkKey{origin, w.Id})
	switch w.GetKind() {
	case Walk_FORWARD:
		if !e.pol.accept(from, w) {
			e.stats.Bounces++
			e.send(from, &Message{Body: &Message_Walk{Walk: &Walk{
				Id: w.Id, Origin: w.Origin, Ttl: w.Ttl, Path: w.Path, Kind: Walk_BOUNCE,
			}}})
			return
		}
	case Walk_BOUNCE:
		// Our proposal was refused: the walk is back here; we pushed ourselves on its
		// path when we proposed.
		if n := len(w.Path); n > 0 && peer.ID(w.Path[n-1]) == e.self {
			w.Path = w.Path[:n-1]
		}
	case Walk_BACKTRACK:
	default:
		return
	}
	w.Kind, w.Degree = Walk_FORWARD, 0
	e.resume(w)
}

// resume goes on with a walk that is at this node.
func (e *walker) resume(w *Walk) {
	switch {
	case w.Ttl == 0:
		e.finish(w)
	case len(e.usable) == 0:
		e.backtrack(w)
	default:
		e.pol.advance(w)
	}
}

// forward passes the walk to a usable neighbour. The policy has taken the step (ttl).
func (e *walker) forward(to peer.ID, w *Walk) {
	w.Path = append(w.Path, []byte(e.self))
	if len(w.Path) > e.cfg.PathLength {
		w.Path = w.Path[len(w.Path)-e.cfg.PathLength:]
	}
	e.stats.Hops++
	e.remember(to, w)
	e.send(to, &Message{Body: &Message_Walk{Walk: w}})
}

// backtrack passes the walk back along its path: this node has no usable neighbour.
func (e *walker) backtrack(w *Walk) {
	for len(w.Path) > 0 {
		p := peer.ID(w.Path[len(w.Path)-1])
		w.Path = w.Path[:len(w.Path)-1]
		if p == e.self || p == "" || e.down[p] || p.Validate() != nil {
			continue
		}
		e.stats.Backtracked++
		w.Kind, w.Degree = Walk_BACKTRACK, 0
		e.remember(p, w)
		e.send(p, &Message{Body: &Message_Walk{Walk: w}})
		return
	}
	// Nowhere to go back to: the origin starts another walk.
	origin := w.GetOrigin().PeerID()
	if origin == e.self {
		e.ownEnded(w.Id, &e.stats.Stuck)
		return
	}
	e.send(origin, &Message{Body: &Message_Result{Result: &Result{Walk: w.Id, Failed: true}}})
}

// finish ends a walk at this node: this node is the sample.
func (e *walker) finish(w *Walk) {
	origin := w.GetOrigin().PeerID()
	if origin == e.self {
		e.ownEnded(w.Id, &e.stats.AtOrigin)
		return
	}
	e.send(origin, &Message{Body: &Message_Result{Result: &Result{
		Walk: w.Id, Node: &Peer{Id: []byte(e.self), Record: e.rec, Meta: e.meta},
	}}})
}

func (e *walker) remember(to peer.ID, w *Walk) {
	origin := w.GetOrigin().PeerID()
	f := &inflight{key: walkKey{origin, w.Id}, to: to, kind: w.Kind, w: w, at: e.now}
	for len(e.flightQ) > 0 {
		g := e.flightQ[0]
		live := e.flight[g.key] == g
		if live && e.now.Sub(g.at) <= e.cfg.HopTimeout && len(e.flight) < e.cfg.MaxInFlight {
			break
		}
		if live {
			delete(e.flight, g.key)
		}
		e.flightQ[0] = nil
		e.flightQ = e.flightQ[1:]
	}
	if len(e.flightQ) > 2*e.cfg.MaxInFlight {
		e.flightQ = slices.DeleteFunc(e.flightQ, func(g *inflight) bool { return e.flight[g.key] != g })
	}
	e.flight[f.key] = f
	e.flightQ = append(e.flightQ, f)
}

// forget drops the record of a walk that came back to this node.
func (e *walker) forget(k walkKey) { delete(e.flight, k) }

// ---- samples this node asked for ----

func (e *walker) request(id uint64) {
	e.stats.Requests++
	if _, dup := e.pending[id]; dup {
		return
	}
	if len(e.pending) >= e.cfg.MaxPending {
		e.stats.Failed++
		e.emit(SampleFailed{ID: id, Reason: fmt.Sprintf("too many samples in progress (%d)", len(e.pending))})
		return
	}
	a := &ask{id: id}
	e.pending[id] = a
	e.order = append(e.order, id)
	e.attempt(a)
}

// attempt starts a new walk for a, unless the node has no neighbour yet (it then starts
// when one comes).
func (e *walker) attempt(a *ask) {
	if a.walk != 0 {
		delete(e.walks, a.walk)
		a.walk = 0
	}
	if len(e.usable) == 0 {
		e.cancelTimer(a.id)
		return
	}
	if a.attempts >= e.cfg.MaxAttempts {
		e.stats.Failed++
		e.emit(SampleFailed{ID: a.id, Reason: fmt.Sprintf("no walk came back after %d attempts", a.attempts)})
		e.done(a.id)
		return
	}
	a.attempts++
	var wid uint64
	for wid == 0 || e.walks[wid] != 0 {
		wid = e.rng.Uint64()
	}
	a.walk = wid
	e.walks[wid] = a.id
	e.stats.Walks++
	e.setTimer(protocols.Timer{Kind: timerWalk, Key: strconv.FormatUint(a.id, 10)}, e.cfg.WalkTimeout)
	e.resume(&Walk{Id: wid, Origin: &Peer{Id: []byte(e.self), Record: e.rec}, Ttl: uint32(e.cfg.WalkLength)})
}

// ownEnded: one of this node's walks ended here (or got stuck here); try again.
func (e *walker) ownEnded(wid uint64, counter *uint64) {
	id, ok := e.walks[wid]
	if !ok {
		return
	}
	*counter++
	e.attempt(e.pending[id])
}

func (e *walker) onResult(from peer.ID, r *Result) {
	id, ok := e.walks[r.GetWalk()]
	if !ok {
		return // an earlier attempt's, or not ours
	}
	a := e.pending[id]
	if r.GetFailed() {
		e.stats.Stuck++
		e.attempt(a)
		return
	}
	n := r.GetNode()
	if n.PeerID() != from || from == e.self {
		return // a result names the node that sends it
	}
	e.stats.Samples++
	e.emit(Sampled{ID: id, Node: proto.Clone(n).(*Peer), Attempts: a.attempts})
	e.done(id)
}

func (e *walker) walkTimeout(key string) {
	id, err := strconv.ParseUint(key, 10, 64)
	if err != nil {
		return
	}
	if a, ok := e.pending[id]; ok && a.walk != 0 {
		e.stats.Timeouts++
		e.attempt(a)
	}
}

func (e *walker) cancelTimer(id uint64) {
	e.cancel(protocols.Timer{Kind: timerWalk, Key: strconv.FormatUint(id, 10)})
}

// done forgets a request.
func (e *walker) done(id uint64) {
	a, ok := e.pending[id]
	if !ok {
		return
	}
	if a.walk != 0 {
		delete(e.walks, a.walk)
	}
	e.cancelTimer(id)
	delete(e.pending, id)
	e.order = slices.DeleteFunc(e.order, func(x uint64) bool { return x == id })
}

// uniform picks a usable neighbour uniformly at random.
func (e *walker) uniform() peer.ID { return e.usable[e.rng.IntN(len(e.usable))] }
