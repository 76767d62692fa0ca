// Package sim is a deterministic discrete-event simulator for protocol cores.
//
// It drives the very cores the libp2p runtime drives (package protocols) over a virtual
// network: a virtual clock, a heap of events, per-message latency drawn from a model,
// message loss, partitions that can be set and healed, crashes, and nodes that join at
// any time. Messages are encoded on send and decoded on delivery, as on the wire, so every
// message is counted by kind with its encoded size, and no state is shared between nodes.
//
// One seed fixes the whole run: the same seed, nodes and schedule give the same trace,
// bit for bit (TraceHash). Nothing here reads the wall clock or iterates over a map in
// an order that matters.
//
// Transport semantics, chosen to match what the runtime gives a core:
//   - Messages between two nodes arrive in the order they were sent (a stream), after the
//     latency the model draws; a lost message simply never arrives.
//   - A message to a node that has crashed, left, never existed, or sits across a
//     partition is not delivered, and the sender gets PeerDown for that node after
//     DetectDelay (a failed dial or write). Several failed sends to the same node before
//     that produce one PeerDown.
//   - Links that a partition cuts break at both ends (PeerDown after DetectDelay).
//   - With NotifyLinksOnCrash, the nodes linked to a crashing node (Link outputs) also get
//     PeerDown after DetectDelay, as a closed connection reports it in the runtime.
//     Without it, a crash is discovered only by sending, as in the HyParView paper's
//     simulations.
package sim

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// Epoch is the virtual time at which every simulation starts.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Config describes the virtual network.
type Config struct {
	// Seed fixes every random draw of the network (latency, loss).
	Seed uint64
	// Latency draws the one-way delay of each message. nil means Fixed(10 ms).
	Latency Latency
	// Loss is the probability that a message is lost, in [0, 1).
	Loss float64
	// DetectDelay is how long a sender takes to learn that a destination is unreachable.
	// 0 means 1 s.
	DetectDelay time.Duration
	// NotifyLinksOnCrash: see the package doc.
	NotifyLinksOnCrash bool
	// NewMessage returns an empty wire message to decode deliveries into. Required.
	NewMessage func() proto.Message
	// Kind names a message's kind for the counters (e.g. "SHUFFLE"). nil counts every
	// message under its protobuf type name.
	Kind func(proto.Message) string
	// OnEvent receives the service events of the cores (outputs that are not for the
	// transport), with the node that emitted them and the virtual time.
	OnEvent func(now time.Time, node peer.ID, ev protocols.Output)
	// OnDeliver, if set, sees each delivered message just before the core does.
	OnDeliver func(now time.Time, from, to peer.ID, msg proto.Message)
}

// Latency draws a message's one-way delay.
type Latency interface {
	Sample(r *rand.Rand) time.Duration
}

// Fixed is a constant latency.
type Fixed time.Duration

// Sample returns the constant.
func (f Fixed) Sample(*rand.Rand) time.Duration { return time.Duration(f) }

// Uniform draws latencies uniformly in [Min, Max].
type Uniform struct{ Min, Max time.Duration }

// Sample draws one latency.
func (u Uniform) Sample(r *rand.Rand) time.Duration {
	if u.Max <= u.Min {
		return u.Min
	}
	return u.Min + time.Duration(r.Int64N(int64(u.Max-u.Min)+1))
}

// Counter counts messages and their encoded bytes.
type Counter struct {
	Msgs  uint64
	Bytes uint64
}

// Stats are the network's counters since the start.
type Stats struct {
	Sent       Counter            // messages handed to the network
	Delivered  Counter            // messages that reached a live core
	Lost       uint64             // dropped by the loss model
	Undeliv    uint64             // to crashed, absent or partitioned nodes
	ByKind     map[string]Counter // sent, by kind
	Events     uint64             // events processed
	PeerDowns  uint64             // PeerDown inputs generated
	TimerFires uint64
}

type eventKind uint8

const (
	evDeliver eventKind = iota + 1
	evTimer
	evPeerDown
	evInput
	evAction
)

type event struct {
	at    time.Time
	seq   uint64
	kind  eventKind
	node  int32 // receiving node
	from  int32 // evDeliver: sender; evPeerDown: the unreachable node
	msg   []byte
	timer protocols.Timer
	gen   uint64
	in    protocols.Input
	act   func(*Sim)
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

type node struct {
	id      peer.ID
	core    protocols.Core
	alive   bool
	group   int // partition group; messages cross only within a group
	timers  map[protocols.Timer]uint64
	links   []int32        // peers this node declared Link up to, in order
	pending map[int32]bool // PeerDown already scheduled for these destinations
}

type linkKey struct{ from, to int32 }

// Sim is one simulated network. It is not safe for concurrent use.
type Sim struct {
	cfg    Config
	rng    *rand.Rand
	now    time.Time
	seq    uint64
	gen    uint64
	events eventHeap
	nodes  []*node
	index  map[peer.ID]int32
	last   map[linkKey]time.Time // latest delivery time scheduled per directed link
	stats  Stats
	trace  uint64 // running FNV-1a over the trace
	buf    []byte
}

// New returns an empty network at virtual time Epoch.
func New(cfg Config) (*Sim, error) {
	if cfg.NewMessage == nil {
		return nil, &protocols.ConfigError{Field: "NewMessage", Reason: "is nil: give a constructor of the wire message"}
	}
	if cfg.Loss < 0 || cfg.Loss >= 1 {
		return nil, &protocols.ConfigError{Field: "Loss", Reason: fmt.Sprintf("is %v; it must be in [0, 1)", cfg.Loss)}
	}
	if cfg.DetectDelay < 0 {
		return nil, &protocols.ConfigError{Field: "DetectDelay", Reason: "must not be negative"}
	}
	if cfg.Latency == nil {
		cfg.Latency = Fixed(10 * time.Millisecond)
	}
	if cfg.DetectDelay == 0 {
		cfg.DetectDelay = time.Second
	}
	h := fnv.New64a()
	return &Sim{
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5851f42d4c957f2d)),
		now:   Epoch,
		index: make(map[peer.ID]int32),
		last:  make(map[linkKey]time.Time),
		stats: Stats{ByKind: map[string]Counter{}},
		trace: h.Sum64(),
	}, nil
}

// Now returns the virtual time.
func (s *Sim) Now() time.Time { return s.now }

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	st := s.stats
	st.ByKind = make(map[string]Counter, len(s.stats.ByKind))
	for k, v := range s.stats.ByKind {
		st.ByKind[k] = v
	}
	return st
}

// TraceHash summarises everything that happened so far: every event processed, with its
// time, node and content, and every message sent. Equal hashes mean equal runs.
func (s *Sim) TraceHash() uint64 { return s.trace }

// Add puts a node on the network, alive, at the current time. Its core receives
// nothing until Input is called for it (usually with protocols.Start).
func (s *Sim) Add(id peer.ID, core protocols.Core) error {
	if _, dup := s.index[id]; dup {
		return fmt.Errorf("sim: node %s added twice", id)
	}
	s.index[id] = int32(len(s.nodes))
	s.nodes = append(s.nodes, &node{
		id: id, core: core, alive: true,
		timers:  make(map[protocols.Timer]uint64),
		pending: make(map[int32]bool),
	})
	return nil
}

// Input schedules an input for a node at the current time (after the events already
// due now).
func (s *Sim) Input(id peer.ID, in protocols.Input) error {
	i, ok := s.index[id]
	if !ok {
		return fmt.Errorf("sim: no node %s", id)
	}
	s.push(&event{at: s.now, kind: evInput, node: i, in: in})
	return nil
}

// Alive reports whether a node is on the network and has not crashed.
func (s *Sim) Alive(id peer.ID) bool {
	i, ok := s.index[id]
	return ok && s.nodes[i].alive
}

// Core returns a node's core (to read its state in experiments and tests).
func (s *Sim) Core(id peer.ID) protocols.Core {
	if i, ok := s.index[id]; ok {
		return s.nodes[i].core
	}
	return nil
}

// IDs returns every node ever added, in the order added.
func (s *Sim) IDs() []peer.ID {
	out := make([]peer.ID, len(s.nodes))
	for i, n := range s.nodes {
		out[i] = n.id
	}
	return out
}

// Crash stops a node at once: it handles nothing more and messages to it are
// undeliverable. See NotifyLinksOnCrash for what its neighbours learn.
func (s *Sim) Crash(id peer.ID) {
	i, ok := s.index[id]
	if !ok || !s.nodes[i].alive {
		return
	}
	n := s.nodes[i]
	n.alive = false
	n.timers = map[protocols.Timer]uint64{}
	s.mix(0xc4, uint64(i))
	if s.cfg.NotifyLinksOnCrash {
		for j, m := range s.nodes {
			if m.alive && slices.Contains(m.links, i) {
				s.scheduleDown(int32(j), i)
			}
		}
	}
}

// Partition splits the network: nodes in different groups cannot exchange messages;
// nodes named in no group form one more group together. Links (Link outputs) that now
// cross groups break: both ends get PeerDown after DetectDelay, as keep-alives time out
// on a real connection. Heal undoes the partition (broken links stay broken).
func (s *Sim) Partition(groups ...[]peer.ID) {
	for _, n := range s.nodes {
		n.group = 0
	}
	for g, ids := range groups {
		for _, id := range ids {
			if i, ok := s.index[id]; ok {
				s.nodes[i].group = g + 1
			}
		}
	}
	s.mix(0xa7, uint64(len(groups)))
	for i, n := range s.nodes {
		if !n.alive {
			continue
		}
		for _, j := range n.links {
			if s.nodes[j].group != n.group {
				s.scheduleDown(int32(i), j)
			}
		}
	}
}

// Heal removes every partition.
func (s *Sim) Heal() { s.Partition() }

// RunFor processes events for d of virtual time.
func (s *Sim) RunFor(d time.Duration) { s.RunUntil(s.now.Add(d)) }

// RunUntil processes every event due up to t, then sets the clock to t.
func (s *Sim) RunUntil(t time.Time) {
	for len(s.events) > 0 && !s.events[0].at.After(t) {
		e := heap.Pop(&s.events).(*event)
		s.now = e.at
		s.process(e)
	}
	if t.After(s.now) {
		s.now = t
	}
}

// At schedules f to run at virtual time t (now if t is past), in order with the other
// events: churn schedules, partitions that come and go, joins at given times.
func (s *Sim) At(t time.Time, f func(*Sim)) {
	if t.Before(s.now) {
		t = s.now
	}
	s.push(&event{at: t, kind: evAction, act: f})
}

// Churn schedules, from now until end, one crash of a random live node and one join of
// a new node every period: join(s) adds and starts the new node and returns its ID (or
// "" to add none). Victims are drawn with the network's seeded random source.
func (s *Sim) Churn(period time.Duration, end time.Time, join func(*Sim) peer.ID) {
	if period <= 0 {
		return
	}
	for t := s.now.Add(period); !t.After(end); t = t.Add(period) {
		s.At(t, func(s *Sim) {
			var live []int32
			for i, n := range s.nodes {
				if n.alive {
					live = append(live, int32(i))
				}
			}
			if len(live) > 1 {
				s.Crash(s.nodes[live[s.rng.IntN(len(live))]].id)
			}
			if join != nil {
				join(s)
			}
		})
	}
}

// Pending returns the number of events waiting.
func (s *Sim) Pending() int { return len(s.events) }

func (s *Sim) push(e *event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.events, e)
}

// mix folds values into the trace hash (FNV-1a, 8 bytes at a time).
func (s *Sim) mix(vs ...uint64) {
	const prime = 1099511628211
	for _, v := range vs {
		for k := 0; k < 8; k++ {
			s.trace ^= v & 0xff
			s.trace *= prime
			v >>= 8
		}
	}
}

func (s *Sim) mixBytes(b []byte) {
	const prime = 1099511628211
	for _, c := range b {
		s.trace ^= uint64(c)
		s.trace *= prime
	}
}

func (s *Sim) process(e *event) {
	if e.kind == evAction {
		s.mix(uint64(e.at.UnixNano()), uint64(evAction))
		e.act(s)
		return
	}
	n := s.nodes[e.node]
	if !n.alive {
		if e.kind == evDeliver {
			s.stats.Undeliv++
			s.scheduleDown(e.from, e.node)
		}
		return
	}
	s.stats.Events++
	s.mix(uint64(e.at.UnixNano()), uint64(e.kind), uint64(e.node))
	var in protocols.Input
	switch e.kind {
	case evDeliver:
		msg := s.cfg.NewMessage()
		if err := proto.Unmarshal(e.msg, msg); err != nil {
			panic(fmt.Sprintf("sim: a message the simulator encoded does not decode: %v", err))
		}
		s.mix(uint64(e.from))
		s.mixBytes(e.msg)
		s.stats.Delivered.Msgs++
		s.stats.Delivered.Bytes += uint64(len(e.msg))
		from := s.nodes[e.from].id
		if s.cfg.OnDeliver != nil {
			s.cfg.OnDeliver(s.now, from, n.id, msg)
		}
		in = protocols.Receive{From: from, Msg: msg}
	case evTimer:
		if g, ok := n.timers[e.timer]; !ok || g != e.gen {
			return
		}
		delete(n.timers, e.timer)
		s.stats.TimerFires++
		s.mix(uint64(e.timer.Kind))
		in = protocols.TimerFired{Timer: e.timer}
	case evPeerDown:
		delete(n.pending, e.from)
		s.stats.PeerDowns++
		s.mix(uint64(e.from))
		in = protocols.PeerDown{Peer: s.nodes[e.from].id, Err: errUnreachable}
	case evInput:
		in = e.in
	}
	for _, out := range n.core.Handle(s.now, in) {
		s.output(e.node, out)
	}
}

var errUnreachable = fmt.Errorf("sim: peer unreachable")

func (s *Sim) output(from int32, out protocols.Output) {
	n := s.nodes[from]
	switch o := out.(type) {
	case protocols.Send:
		s.send(from, o.To, o.Msg)
	case protocols.Close:
	case protocols.Link:
		j, ok := s.index[o.Peer]
		if !ok {
			return
		}
		k := slices.Index(n.links, j)
		if o.Up && k < 0 {
			n.links = append(n.links, j)
		} else if !o.Up && k >= 0 {
			n.links = slices.Delete(n.links, k, k+1)
		}
	case protocols.SetTimer:
		s.gen++
		n.timers[o.Timer] = s.gen
		s.push(&event{at: s.now.Add(o.After), kind: evTimer, node: from, timer: o.Timer, gen: s.gen})
	case protocols.CancelTimer:
		delete(n.timers, o.Timer)
	default:
		if s.cfg.OnEvent != nil {
			s.cfg.OnEvent(s.now, n.id, out)
		}
	}
}

func (s *Sim) send(from int32, to peer.ID, msg proto.Message) {
	var err error
	s.buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(s.buf[:0], msg)
	if err != nil {
		panic(fmt.Sprintf("sim: core produced a message that does not encode: %v", err))
	}
	size := uint64(len(s.buf))
	kind := ""
	if s.cfg.Kind != nil {
		kind = s.cfg.Kind(msg)
	} else {
		kind = string(proto.MessageName(msg))
	}
	c := s.stats.ByKind[kind]
	c.Msgs++
	c.Bytes += size
	s.stats.ByKind[kind] = c
	s.stats.Sent.Msgs++
	s.stats.Sent.Bytes += size

	j, ok := s.index[to]
	s.mix(0x5e, uint64(from), size)
	if !ok {
		s.stats.Undeliv++
		s.mix(0xdead)
		// A node never seen: no index to report against, so nothing comes back.
		return
	}
	s.mix(uint64(j))
	dst := s.nodes[j]
	if !dst.alive || dst.group != s.nodes[from].group {
		s.stats.Undeliv++
		s.scheduleDown(from, j)
		return
	}
	if s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss {
		s.stats.Lost++
		return
	}
	at := s.now.Add(s.cfg.Latency.Sample(s.rng))
	key := linkKey{from, j}
	if last, ok := s.last[key]; ok && last.After(at) {
		at = last // FIFO per link, as on a stream
	}
	s.last[key] = at
	s.push(&event{at: at, kind: evDeliver, node: j, from: from, msg: slices.Clone(s.buf)})
}

// scheduleDown tells node who, after DetectDelay, that node gone is unreachable (once
// until that PeerDown is processed).
func (s *Sim) scheduleDown(who, gone int32) {
	n := s.nodes[who]
	if !n.alive || n.pending[gone] {
		return
	}
	n.pending[gone] = true
	s.push(&event{at: s.now.Add(s.cfg.DetectDelay), kind: evPeerDown, node: who, from: gone})
}

// seedBytes expands a seed for a ChaCha8 source.
func seedBytes(seed uint64, salt uint64) [32]byte {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[0:], seed)
	binary.LittleEndian.PutUint64(b[8:], salt)
	binary.LittleEndian.PutUint64(b[16:], seed^salt^0x9e3779b97f4a7c15)
	return b
}

// NodeRand returns the random source for node i of a run with the given seed, so that
// every core's choices are fixed by the run's seed.
func NodeRand(seed uint64, i int) *rand.Rand {
	return rand.New(rand.NewChaCha8(seedBytes(seed, uint64(i)+1)))
}
