package unsserv

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/aggregation"
)

// AggregateType is the aggregate an Aggregation computes over the values of the nodes
// (the seed's aggregate_type). Every node of one aggregation id must compute the same.
type AggregateType int

const (
	// Mean is the average of the values.
	Mean AggregateType = iota
	// Max is the largest value.
	Max
	// Min is the smallest value.
	Min
	// Sum is the sum of the values (the mean times the number of nodes).
	Sum
	// Count is the number of nodes taking part (the value is not used).
	Count
)

var aggregateTypes = [...]struct {
	name string
	fn   aggregation.Function
}{
	Mean:  {"mean", aggregation.Mean},
	Max:   {"max", aggregation.Max},
	Min:   {"min", aggregation.Min},
	Sum:   {"sum", aggregation.Sum},
	Count: {"count", aggregation.Count},
}

func (t AggregateType) String() string {
	if t >= 0 && int(t) < len(aggregateTypes) {
		return aggregateTypes[t].name
	}
	return fmt.Sprintf("AggregateType(%d)", int(t))
}

// ParseAggregateType reads an aggregate type by name: "mean", "max", "min", "sum" or
// "count", as the seed spells them.
func ParseAggregateType(s string) (AggregateType, error) {
	for t, a := range aggregateTypes {
		if strings.EqualFold(strings.TrimSpace(s), a.name) {
			return AggregateType(t), nil
		}
	}
	return 0, fmt.Errorf("unknown aggregate type %q: use mean, max, min, sum or count", s)
}

// Estimate is a node's view of the aggregate and how settled it is.
type Estimate struct {
	// Value is the node's current estimate. It restarts from the node's own value at
	// every epoch (for count and sum it is unknown until the first counting instance
	// reaches the node, a few cycles into the epoch) and converges as the epoch runs.
	Value float64
	// Known is false while the node has no estimate: it joined mid-epoch and waits for
	// the next one, or, for count and sum, no counting instance has reached it yet.
	Known bool
	// Epoch is the epoch the estimate belongs to (0 while the node waits for one).
	Epoch uint64
	// Cycle is the cycle of the epoch the node is in, from 0 to Cycles. The variance of
	// the estimates across the network shrinks geometrically with it (by about 0.3 per
	// cycle with random neighbours, more slowly over a small fixed neighbour set: see
	// docs/aggregation.md), so Cycle tells a fresh epoch's rough figure from a
	// converged one.
	Cycle int
	// Cycles is the epoch length in cycles.
	Cycles int
	// Final is the estimate the node ended its previous epoch with: the settled figure
	// of that epoch, valid when FinalEpoch is not 0.
	Final float64
	// FinalEpoch is the epoch Final belongs to; 0 before the node completed one.
	FinalEpoch uint64
}

// aggregationOptions holds the options of NewAggregation.
type aggregationOptions struct {
	cfg    aggregation.PushPullConfig
	period time.Duration
	epoch  int
}

// AggregationPeriod sets the aggregation cycle (the paper's Delta): how often each node
// exchanges its estimate with a random neighbour. The default is 1 s. Every node of an
// aggregation id should use the same period and epoch length.
func AggregationPeriod(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < time.Millisecond || d > time.Hour {
			return fmt.Errorf("AggregationPeriod(%v): give a period between 1 ms and 1 h", d)
		}
		o.aggregation.period = d
		return nil
	})
}

// StableEpochCycles is the default epoch length over the Stable profile: HyParView's
// few, nearly fixed neighbours make averaging converge more slowly than the paper's
// random peers (about 0.6 per cycle instead of 0.3), and 60 cycles bring every node of
// 10,000 within about 1e-6 of the mean and 1e-4 of the count. Over Extreme the paper's
// 30 cycles are the default.
const StableEpochCycles = 60

// AggregationEpoch sets the epoch length in cycles (the paper's gamma): every so many
// cycles the estimates restart from the nodes' current values, which is how the
// aggregate follows values that change and nodes that come and go. The default is
// StableEpochCycles (60) over the Stable profile, 30 over Extreme: longer epochs give
// more precise figures, shorter ones follow changes sooner.
func AggregationEpoch(cycles int) Option {
	return optionFunc(func(o *options) error {
		if cycles < 2 || cycles > 1<<20 {
			return fmt.Errorf("AggregationEpoch(%d): give between 2 and 1,048,576 cycles", cycles)
		}
		o.aggregation.epoch = cycles
		return nil
	})
}

// WithPushPull sets every parameter of the push-pull core (timeouts, repeats, counting
// instances, bounds); its zero value means the defaults (EpochCycles: see
// AggregationEpoch). Its Function and Value are taken from NewAggregation's arguments,
// its Cycle and EpochCycles from AggregationPeriod and AggregationEpoch when those are
// given.
func WithPushPull(cfg aggregation.PushPullConfig) Option {
	return optionFunc(func(o *options) error {
		cfg.Function, cfg.Value = 0, 0
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.aggregation.cfg = cfg
		return nil
	})
}

// AggregationProtocol returns the stream protocol of an aggregation service.
func AggregationProtocol(id string) protocol.ID {
	return protocol.ID("/unsserv/aggregation/" + id)
}

// AggregationStats are an aggregation service's counters since it started.
type AggregationStats struct {
	Type    AggregateType
	Service host.Stats        // messages and bytes on the wire
	Core    aggregation.Stats // epochs, exchanges completed, refused, failed, repeated
}

// Aggregation computes an aggregate (mean, max, min, sum or count) of the values of the
// members of an overlay: push-pull gossip averaging with epochs (Jelasity, Montresor,
// Babaoglu, ACM TOCS 2005), the same algorithm in both profiles.
type Aggregation struct {
	o   Overlay
	id  string
	typ AggregateType
	svc *host.Service

	mu       sync.Mutex
	closed   bool
	est      Estimate
	core     aggregation.Stats
	handlers map[int]func(float64)
	nextID   int
	value    float64 // the latest SetValue, for the forwarder

	notify chan struct{} // wakes the notifier
	setVal chan struct{} // wakes the forwarder
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	nmu       sync.Mutex // serialises neighbour updates to the core
	stopNeigh func()
}

// NewAggregation starts the aggregation service id over overlay o (a *Membership, or
// any Overlay) with this node's value, computing the aggregate typ: Mean, Max, Min, Sum
// or Count. The estimate converges within an epoch (60 cycles of 1 s over the Stable
// profile, 30 over Extreme, by default) and is recomputed every epoch from the nodes'
// values then.
//
// A node that starts while the network is mid-epoch waits for the next epoch before it
// has an estimate (Estimate().Known). Both profiles run the same algorithm (the profile,
// the overlay's unless an option says otherwise, only sets the default epoch length);
// options: AggregationPeriod, AggregationEpoch, WithPushPull, Seed.
func NewAggregation(ctx context.Context, o Overlay, id string, value float64, typ AggregateType, opts ...Option) (*Aggregation, error) {
	opt, profile, h, err := stackedSetup("aggregation", o, id, opts, false)
	if err != nil {
		return nil, err
	}
	if typ < 0 || int(typ) >= len(aggregateTypes) {
		return nil, fmt.Errorf("new aggregation %s: unknown aggregate type %d: use unsserv.Mean, Max, Min, Sum or Count", id, int(typ))
	}
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return nil, fmt.Errorf("new aggregation %s: value %v is not a finite number", id, value)
	}
	cfg := opt.aggregation.cfg
	cfg.Function, cfg.Value = aggregateTypes[typ].fn, value
	if opt.aggregation.period != 0 {
		cfg.Cycle = opt.aggregation.period
	}
	switch {
	case opt.aggregation.epoch != 0:
		cfg.EpochCycles = opt.aggregation.epoch
	case cfg.EpochCycles == 0 && profile == Stable:
		cfg.EpochCycles = StableEpochCycles
	}
	core, err := aggregation.NewPushPull(h.ID(), cfg, newRand(opt.seed))
	if err != nil {
		return nil, fmt.Errorf("new aggregation %s: %w", id, err)
	}
	cfg = core.Config()

	a := &Aggregation{
		o: o, id: id, typ: typ,
		est:      Estimate{Cycles: cfg.EpochCycles},
		handlers: map[int]func(float64){},
		notify:   make(chan struct{}, 1),
		setVal:   make(chan struct{}, 1),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.svc, err = host.NewService(h, core, host.ServiceConfig{
		Protocol:   AggregationProtocol(id),
		Name:       "unsserv.aggregation",
		NewMessage: func() proto.Message { return new(aggregation.Message) },
		OnEvent:    a.onEvent,
		// A state carries at most 4*MaxInstances instances of 17 bytes.
		MaxMessageSize: 64<<10 + 4*17*cfg.MaxInstances,
	})
	if err != nil {
		a.cancel()
		return nil, fmt.Errorf("new aggregation %s: %w", id, err)
	}
	a.wg.Add(2)
	go a.notifier()
	go a.forwarder()
	if err := a.svc.Post(ctx, protocols.Start{}); err != nil {
		_ = a.Leave()
		return nil, fmt.Errorf("new aggregation %s: %w", id, err)
	}
	// See Dissemination: neighbours the core dropped come back.
	update := func(context.Context) error { return a.updateNeighbours(a.ctx) }
	if a.stopNeigh, err = feed(ctx, h, o, AggregationProtocol(id), a.ctx.Done(), &a.wg, update, nil); err != nil {
		_ = a.Leave()
		return nil, fmt.Errorf("new aggregation %s: %w", id, err)
	}
	return a, nil
}

func (a *Aggregation) updateNeighbours(ctx context.Context) error {
	a.nmu.Lock()
	defer a.nmu.Unlock()
	return a.svc.Post(ctx, protocols.Neighbours{Peers: neighbourIDs(a.o)})
}

// onEvent runs on the service loop: it must not block.
func (a *Aggregation) onEvent(out protocols.Output) {
	u, ok := out.(aggregation.Updated)
	if !ok {
		return
	}
	a.mu.Lock()
	a.est = Estimate(u.Estimate) // the same fields: a conversion, checked by the compiler
	a.core = u.Stats
	a.mu.Unlock()
	if u.Estimate.Known {
		select {
		case a.notify <- struct{}{}:
		default:
		}
	}
}

// notifier calls the handlers with the latest estimate, one call at a time.
func (a *Aggregation) notifier() {
	defer a.wg.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.notify:
		}
		a.mu.Lock()
		est := a.est
		hs := make([]func(float64), 0, len(a.handlers))
		for i := 0; i < a.nextID; i++ {
			if f, ok := a.handlers[i]; ok {
				hs = append(hs, f)
			}
		}
		a.mu.Unlock()
		if !est.Known {
			continue
		}
		for _, f := range hs {
			f(est.Value)
		}
	}
}

// forwarder hands the latest SetValue to the core, so that SetValue never blocks.
func (a *Aggregation) forwarder() {
	defer a.wg.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.setVal:
		}
		a.mu.Lock()
		v := a.value
		a.mu.Unlock()
		if err := a.svc.Post(a.ctx, protocols.Call{Req: aggregation.SetValue{Value: v}}); err != nil {
			return
		}
	}
}

// Aggregate returns this node's current estimate of the aggregate (0 while it has none:
// see Estimate for how settled it is).
func (a *Aggregation) Aggregate() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.est.Known {
		return 0
	}
	return a.est.Value
}

// Estimate returns this node's current estimate with its epoch and cycle, and the
// settled figure of the previous epoch.
func (a *Aggregation) Estimate() Estimate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.est
}

// OnAggregate calls f with the estimate every time it is updated (after each exchange
// this node takes part in, and when an epoch starts), from one goroutine, never
// concurrently; updates that come while f runs are coalesced into one call with the
// latest estimate. If the node has an estimate already, f is soon called with it. stop
// removes f. After Leave it does nothing.
func (a *Aggregation) OnAggregate(f func(float64)) (stop func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || f == nil {
		return func() {}
	}
	id := a.nextID
	a.nextID++
	a.handlers[id] = f
	if a.est.Known {
		select {
		case a.notify <- struct{}{}:
		default:
		}
	}
	return func() {
		a.mu.Lock()
		delete(a.handlers, id)
		a.mu.Unlock()
	}
}

// SetValue changes this node's value. As in the paper, it counts from the next epoch:
// the running epoch goes on with the value it started with. SetValue does not block.
func (a *Aggregation) SetValue(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("aggregation %s: value %v is not a finite number", a.id, v)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("aggregation %s: %w", a.id, ErrClosed)
	}
	a.value = v
	select {
	case a.setVal <- struct{}{}:
	default:
	}
	return nil
}

// Type returns the aggregate the service computes.
func (a *Aggregation) Type() AggregateType { return a.typ }

// Stats returns the service's counters.
func (a *Aggregation) Stats() AggregationStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AggregationStats{Type: a.typ, Service: a.svc.Stats(), Core: a.core}
}

// Leave stops the service and releases its streams and goroutines. The overlay stays.
// This node's share of the running epoch leaves with it, as when a node crashes: the
// next epoch no longer counts it. Calling Leave again returns nil.
func (a *Aggregation) Leave() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.handlers = map[int]func(float64){}
	a.mu.Unlock()
	if a.stopNeigh != nil {
		a.stopNeigh()
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err := a.svc.Close(ctx)
	a.cancel()
	a.wg.Wait()
	return err
}
