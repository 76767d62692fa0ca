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
//
// Layers: a node may run a stack of cores (AddStack), as UnsServ stacks services, e.g. a
// dissemination core over a membership core. Config.Layers describes each layer's wire
// message. Each layer is its own service with its own stream: a message travels on the
// layer of the core that sent it, is decoded with that layer's NewMessage and handed to
// the same layer's core at the destination, in order per (sender, destination, layer).
// Timers, Link outputs and PeerDown are per layer: a failed send on layer L, or a crash
// of a node that layer L linked to, reaches layer L's core only. A crash stops every
// layer of the node. The simulator never passes anything between layers by itself: the
// driver feeds a layer the events of the one below (e.g. the membership's neighbour
// changes as protocols.Neighbours) with InputLayer, as the runtime does.
package sim

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
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
	// NewMessage returns an empty wire message of layer 0 to decode deliveries into.
	// Required unless Layers[0].NewMessage is set.
	NewMessage func() proto.Message
	// Kind names a layer-0 message's kind for the counters (e.g. "SHUFFLE"). nil counts
	// every message under its protobuf type name.
	Kind func(proto.Message) string
	// Layers describes the wire of each layer of the stacks the nodes run (AddStack):
	// Layers[i] for layer i. nil means one layer, described by NewMessage and Kind; a nil
	// field of Layers[0] also defaults to NewMessage or Kind.
	Layers []Layer
	// OnEvent receives the service events of the cores of every layer (outputs that are
	// not for the transport), with the node that emitted them and the virtual time. Events
	// of different layers are told apart by their type; OnLayerEvent also gives the layer.
	OnEvent func(now time.Time, node peer.ID, ev protocols.Output)
	// OnLayerEvent, if set, receives the same events as OnEvent with the layer of the core
	// that emitted them, just before OnEvent does.
	OnLayerEvent func(now time.Time, node peer.ID, layer int, ev protocols.Output)
	// OnDeliver, if set, sees each delivered message (of every layer) just before the
	// core does.
	OnDeliver func(now time.Time, from, to peer.ID, msg proto.Message)
	// OnSend, if set, sees each message a core sends, with its layer, when the core sends
	// it: before loss, failure or delivery is decided. The message is the core's own (read
	// it, do not keep or change it).
	OnSend func(now time.Time, layer int, from, to peer.ID, msg proto.Message)
}

// Layer describes the wire of one layer of a node's stack.
type Layer struct {
	// NewMessage returns an empty wire message of the layer to decode deliveries into.
	// Required.
	NewMessage func() proto.Message
	// Kind names a message's kind for the counters; nil counts every message under its
	// protobuf type name. Counters by kind are shared by all layers, so layers should not
	// use the same kind names.
	Kind func(proto.Message) string
}

// MaxLayers bounds the layers of a stack.
const MaxLayers = 256

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
	ByKind     map[string]Counter // sent, by kind (every layer)
	ByLayer    []Counter          // sent, by layer
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
	layer uint8 // the layer of the receiving core (not for evAction)
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
	id     peer.ID
	alive  bool
	group  int         // partition group; messages cross only within a group
	layers []nodeLayer // the stack, layer 0 first
}

// nodeLayer is the state of one core of a node's stack.
type nodeLayer struct {
	core    protocols.Core
	timers  map[protocols.Timer]uint64
	links   []int32        // peers this core declared Link up to, in order
	pending map[int32]bool // PeerDown already scheduled for these destinations
}

// linkKey is a directed link; with the layer, a stream.
type linkKey struct{ from, to int32 }

// Sim is one simulated network. It is not safe for concurrent use.
type Sim struct {
	cfg    Config
	layers []Layer
	rng    *rand.Rand
	now    time.Time
	seq    uint64
	gen    uint64
	events eventHeap
	nodes  []*node
	index  map[peer.ID]int32
	last   []map[linkKey]time.Time // per layer: latest delivery time scheduled per directed link
	stats  Stats
	trace  uint64 // running FNV-1a over the trace
	buf    []byte
}

// New returns an empty network at virtual time Epoch.
func New(cfg Config) (*Sim, error) {
	layers := slices.Clone(cfg.Layers)
	if len(layers) == 0 {
		layers = []Layer{{}}
	}
	if len(layers) > MaxLayers {
		return nil, &protocols.ConfigError{Field: "Layers", Reason: fmt.Sprintf("has %d layers; at most %d", len(layers), MaxLayers)}
	}
	if layers[0].NewMessage == nil {
		layers[0].NewMessage = cfg.NewMessage
	}
	if layers[0].Kind == nil {
		layers[0].Kind = cfg.Kind
	}
	for i, l := range layers {
		if l.NewMessage != nil {
			continue
		}
		if i == 0 {
			return nil, &protocols.ConfigError{Field: "NewMessage", Reason: "is nil: give a constructor of the wire message"}
		}
		return nil, &protocols.ConfigError{Field: fmt.Sprintf("Layers[%d].NewMessage", i), Reason: "is nil: give a constructor of the layer's wire message"}
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
		cfg:    cfg,
		layers: layers,
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5851f42d4c957f2d)),
		now:    Epoch,
		index:  make(map[peer.ID]int32),
		last:   make([]map[linkKey]time.Time, len(layers)),
		stats:  Stats{ByKind: map[string]Counter{}, ByLayer: make([]Counter, len(layers))},
		trace:  h.Sum64(),
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
	st.ByLayer = slices.Clone(s.stats.ByLayer)
	return st
}

// Layers returns the number of layers of the network (Config.Layers).
func (s *Sim) Layers() int { return len(s.layers) }

// TraceHash summarises everything that happened so far: every event processed, with its
// time, node and content, and every message sent. Equal hashes mean equal runs.
func (s *Sim) TraceHash() uint64 { return s.trace }

// Add puts a node with one core (layer 0) on the network, alive, at the current time.
// Its core receives nothing until Input is called for it (usually with protocols.Start).
func (s *Sim) Add(id peer.ID, core protocols.Core) error { return s.AddStack(id, core) }

// AddStack puts a node running a stack of cores on the network, alive, at the current
// time: cores[i] is its layer i (see Config.Layers). A node may run fewer layers than the
// network has; messages to a layer it does not run fail as to an absent node. Its cores
// receive nothing until InputLayer is called for them.
func (s *Sim) AddStack(id peer.ID, cores ...protocols.Core) error {
	if _, dup := s.index[id]; dup {
		return fmt.Errorf("sim: node %s added twice", id)
	}
	if len(cores) == 0 || len(cores) > len(s.layers) {
		return fmt.Errorf("sim: node %s: %d cores for a network of %d layers (Config.Layers)", id, len(cores), len(s.layers))
	}
	n := &node{id: id, alive: true, layers: make([]nodeLayer, len(cores))}
	for l, c := range cores {
		if c == nil {
			return fmt.Errorf("sim: node %s: the core of layer %d is nil", id, l)
		}
		n.layers[l] = nodeLayer{core: c, timers: make(map[protocols.Timer]uint64), pending: make(map[int32]bool)}
	}
	s.index[id] = int32(len(s.nodes))
	s.nodes = append(s.nodes, n)
	return nil
}

// Input schedules an input for a node's layer-0 core at the current time (after the
// events already due now).
func (s *Sim) Input(id peer.ID, in protocols.Input) error { return s.InputLayer(id, 0, in) }

// InputLayer schedules an input for the core of the given layer of a node at the current
// time (after the events already due now).
func (s *Sim) InputLayer(id peer.ID, layer int, in protocols.Input) error {
	i, ok := s.index[id]
	if !ok {
		return fmt.Errorf("sim: no node %s", id)
	}
	if layer < 0 || layer >= len(s.nodes[i].layers) {
		return fmt.Errorf("sim: node %s runs no layer %d (it runs %d)", id, layer, len(s.nodes[i].layers))
	}
	s.push(&event{at: s.now, kind: evInput, layer: uint8(layer), node: i, in: in})
	return nil
}

// Alive reports whether a node is on the network and has not crashed.
func (s *Sim) Alive(id peer.ID) bool {
	i, ok := s.index[id]
	return ok && s.nodes[i].alive
}

// Core returns a node's layer-0 core (to read its state in experiments and tests).
func (s *Sim) Core(id peer.ID) protocols.Core { return s.LayerCore(id, 0) }

// LayerCore returns the core of the given layer of a node, or nil.
func (s *Sim) LayerCore(id peer.ID, layer int) protocols.Core {
	if i, ok := s.index[id]; ok && layer >= 0 && layer < len(s.nodes[i].layers) {
		return s.nodes[i].layers[layer].core
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
	for l := range n.layers {
		n.layers[l].timers = map[protocols.Timer]uint64{}
	}
	s.mix(0xc4, uint64(i))
	if s.cfg.NotifyLinksOnCrash {
		for j, m := range s.nodes {
			if !m.alive {
				continue
			}
			for l := range m.layers {
				if slices.Contains(m.layers[l].links, i) {
					s.scheduleDown(int32(j), i, uint8(l))
				}
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
		for l := range n.layers {
			for _, j := range n.layers[l].links {
				if s.nodes[j].group != n.group {
					s.scheduleDown(int32(i), j, uint8(l))
				}
			}
		}
	}
}

// Heal removes every partition.
func (s *Sim) Heal() { s.Partition() }

// SetLoss changes the probability that a message is lost, from now on (e.g. a lossy
// network after an overlay was built on a lossless one). It must be in [0, 1).
func (s *Sim) SetLoss(p float64) error {
	if p < 0 || p >= 1 {
		return &protocols.ConfigError{Field: "Loss", Reason: fmt.Sprintf("is %v; it must be in [0, 1)", p)}
	}
	s.cfg.Loss = p
	s.mix(0x1055, math.Float64bits(p))
	return nil
}

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
			s.scheduleDown(e.from, e.node, e.layer)
		}
		return
	}
	s.stats.Events++
	// The layer goes in the kind's second byte: a one-layer run hashes as before.
	s.mix(uint64(e.at.UnixNano()), uint64(e.kind)|uint64(e.layer)<<8, uint64(e.node))
	nl := &n.layers[e.layer]
	var in protocols.Input
	switch e.kind {
	case evDeliver:
		msg := s.layers[e.layer].NewMessage()
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
		if g, ok := nl.timers[e.timer]; !ok || g != e.gen {
			return
		}
		delete(nl.timers, e.timer)
		s.stats.TimerFires++
		s.mix(uint64(e.timer.Kind))
		in = protocols.TimerFired{Timer: e.timer}
	case evPeerDown:
		delete(nl.pending, e.from)
		s.stats.PeerDowns++
		s.mix(uint64(e.from))
		in = protocols.PeerDown{Peer: s.nodes[e.from].id, Err: errUnreachable}
	case evInput:
		in = e.in
	}
	for _, out := range nl.core.Handle(s.now, in) {
		s.output(e.node, e.layer, out)
	}
}

var errUnreachable = fmt.Errorf("sim: peer unreachable")

func (s *Sim) output(from int32, layer uint8, out protocols.Output) {
	n := s.nodes[from]
	nl := &n.layers[layer]
	switch o := out.(type) {
	case protocols.Send:
		s.send(from, layer, o.To, o.Msg)
	case protocols.Close:
	case protocols.Link:
		j, ok := s.index[o.Peer]
		if !ok {
			return
		}
		k := slices.Index(nl.links, j)
		if o.Up && k < 0 {
			nl.links = append(nl.links, j)
		} else if !o.Up && k >= 0 {
			nl.links = slices.Delete(nl.links, k, k+1)
		}
	case protocols.SetTimer:
		s.gen++
		nl.timers[o.Timer] = s.gen
		s.push(&event{at: s.now.Add(o.After), kind: evTimer, layer: layer, node: from, timer: o.Timer, gen: s.gen})
	case protocols.CancelTimer:
		delete(nl.timers, o.Timer)
	default:
		if s.cfg.OnLayerEvent != nil {
			s.cfg.OnLayerEvent(s.now, n.id, int(layer), out)
		}
		if s.cfg.OnEvent != nil {
			s.cfg.OnEvent(s.now, n.id, out)
		}
	}
}

func (s *Sim) send(from int32, layer uint8, to peer.ID, msg proto.Message) {
	if s.cfg.OnSend != nil {
		s.cfg.OnSend(s.now, int(layer), s.nodes[from].id, to, msg)
	}
	var err error
	s.buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(s.buf[:0], msg)
	if err != nil {
		panic(fmt.Sprintf("sim: core produced a message that does not encode: %v", err))
	}
	size := uint64(len(s.buf))
	kind := ""
	if k := s.layers[layer].Kind; k != nil {
		kind = k(msg)
	} else {
		kind = string(proto.MessageName(msg))
	}
	c := s.stats.ByKind[kind]
	c.Msgs++
	c.Bytes += size
	s.stats.ByKind[kind] = c
	s.stats.Sent.Msgs++
	s.stats.Sent.Bytes += size
	s.stats.ByLayer[layer].Msgs++
	s.stats.ByLayer[layer].Bytes += size

	j, ok := s.index[to]
	s.mix(0x5e|uint64(layer)<<8, uint64(from), size)
	if !ok {
		s.stats.Undeliv++
		s.mix(0xdead)
		// A node never seen: no index to report against, so nothing comes back.
		return
	}
	s.mix(uint64(j))
	dst := s.nodes[j]
	if !dst.alive || dst.group != s.nodes[from].group || int(layer) >= len(dst.layers) {
		s.stats.Undeliv++
		s.scheduleDown(from, j, layer)
		return
	}
	if s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss {
		s.stats.Lost++
		return
	}
	at := s.now.Add(s.cfg.Latency.Sample(s.rng))
	last := s.last[layer]
	if last == nil {
		last = make(map[linkKey]time.Time)
		s.last[layer] = last
	}
	key := linkKey{from, j}
	if t, ok := last[key]; ok && t.After(at) {
		at = t // FIFO per link and layer, as on a stream
	}
	last[key] = at
	s.push(&event{at: at, kind: evDeliver, layer: layer, node: j, from: from, msg: slices.Clone(s.buf)})
}

// scheduleDown tells the given layer of node who, after DetectDelay, that node gone is
// unreachable (once until that PeerDown is processed).
func (s *Sim) scheduleDown(who, gone int32, layer uint8) {
	n := s.nodes[who]
	if !n.alive {
		return
	}
	nl := &n.layers[layer]
	if nl.pending[gone] {
		return
	}
	nl.pending[gone] = true
	s.push(&event{at: s.now.Add(s.cfg.DetectDelay), kind: evPeerDown, layer: layer, node: who, from: gone})
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
