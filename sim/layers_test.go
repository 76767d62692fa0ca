package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/unsserv/go-unsserv/protocols"
)

// recCore records every input as one line of text and answers with what its script
// says. Messages print as u:<n> (layer-0 UInt64Value) or s:<text> (layer-1 StringValue),
// so a core handed a message of the wrong layer shows at once.
type recCore struct {
	log    []string
	script func(now time.Time, in protocols.Input) []protocols.Output
}

func (c *recCore) Handle(now time.Time, in protocols.Input) []protocols.Output {
	at := now.Sub(Epoch)
	switch v := in.(type) {
	case protocols.Receive:
		switch m := v.Msg.(type) {
		case *wrapperspb.UInt64Value:
			c.log = append(c.log, fmt.Sprintf("%v recv u:%d", at, m.GetValue()))
		case *wrapperspb.StringValue:
			c.log = append(c.log, fmt.Sprintf("%v recv s:%s", at, m.GetValue()))
		default:
			c.log = append(c.log, fmt.Sprintf("%v recv %T", at, m))
		}
	case protocols.TimerFired:
		c.log = append(c.log, fmt.Sprintf("%v timer %d", at, v.Timer.Kind))
	case protocols.PeerDown:
		c.log = append(c.log, fmt.Sprintf("%v down %s", at, v.Peer.ShortString()))
	}
	if c.script == nil {
		return nil
	}
	return c.script(now, in)
}

func newString() proto.Message { return new(wrapperspb.StringValue) }

func twoLayers(cfg Config) Config {
	cfg.Layers = []Layer{
		{NewMessage: newUInt64, Kind: func(proto.Message) string { return "U" }},
		{NewMessage: newString, Kind: func(proto.Message) string { return "S" }},
	}
	return cfg
}

// onStart runs f on Start and nothing else.
func onStart(f func() []protocols.Output) func(time.Time, protocols.Input) []protocols.Output {
	return func(_ time.Time, in protocols.Input) []protocols.Output {
		if _, ok := in.(protocols.Start); ok {
			return f()
		}
		return nil
	}
}

// stackNet builds n two-layer nodes of recCores.
func stackNet(t *testing.T, cfg Config, n int) (*Sim, []peer.ID, [][2]*recCore) {
	t.Helper()
	ids, _ := PeerIDs(21, n)
	s, err := New(twoLayers(cfg))
	if err != nil {
		t.Fatal(err)
	}
	cores := make([][2]*recCore, n)
	for i, id := range ids {
		cores[i] = [2]*recCore{{}, {}}
		if err := s.AddStack(id, cores[i][0], cores[i][1]); err != nil {
			t.Fatal(err)
		}
	}
	return s, ids, cores
}

func wantLog(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\ngot  %q\nwant %q", what, got, want)
	}
}

// Each layer's messages are decoded with its own NewMessage and reach the same layer's
// core, in order per layer; layers do not wait for each other.
func TestLayersExchangeIndependently(t *testing.T) {
	var sends, events []string
	cfg := Config{
		Latency: Fixed(10 * time.Millisecond),
		OnSend: func(_ time.Time, layer int, _, _ peer.ID, msg proto.Message) {
			sends = append(sends, fmt.Sprintf("%d:%T", layer, msg))
		},
		OnLayerEvent: func(_ time.Time, _ peer.ID, layer int, ev protocols.Output) {
			events = append(events, fmt.Sprintf("%d:%T", layer, ev))
		},
	}
	s, ids, cores := stackNet(t, cfg, 2)
	cores[0][0].script = onStart(func() []protocols.Output {
		return []protocols.Output{
			protocols.Send{To: ids[1], Msg: wrapperspb.UInt64(1)},
			protocols.Send{To: ids[1], Msg: wrapperspb.UInt64(2)},
			protocols.Event{},
		}
	})
	cores[0][1].script = onStart(func() []protocols.Output {
		return []protocols.Output{protocols.Send{To: ids[1], Msg: wrapperspb.String("a")}}
	})
	// b answers on layer 1 only.
	cores[1][1].script = func(_ time.Time, in protocols.Input) []protocols.Output {
		if r, ok := in.(protocols.Receive); ok {
			return []protocols.Output{protocols.Send{To: r.From, Msg: wrapperspb.String("re:" + r.Msg.(*wrapperspb.StringValue).GetValue())}}
		}
		return nil
	}
	_ = s.InputLayer(ids[0], 0, protocols.Start{})
	s.RunFor(5 * time.Millisecond)
	_ = s.InputLayer(ids[0], 1, protocols.Start{})
	s.RunFor(time.Second)

	wantLog(t, "b layer 0", cores[1][0].log, "10ms recv u:1", "10ms recv u:2")
	wantLog(t, "b layer 1", cores[1][1].log, "15ms recv s:a")
	wantLog(t, "a layer 0", cores[0][0].log)
	wantLog(t, "a layer 1", cores[0][1].log, "25ms recv s:re:a")
	wantLog(t, "sends", sends, "0:*wrapperspb.UInt64Value", "0:*wrapperspb.UInt64Value",
		"1:*wrapperspb.StringValue", "1:*wrapperspb.StringValue")
	wantLog(t, "events", events, "0:protocols.Event")
	st := s.Stats()
	if st.ByLayer[0].Msgs != 2 || st.ByLayer[1].Msgs != 2 || st.ByKind["U"].Msgs != 2 || st.ByKind["S"].Msgs != 2 {
		t.Fatalf("counters by layer %+v, by kind %+v", st.ByLayer, st.ByKind)
	}
	if s.Layers() != 2 || s.LayerCore(ids[1], 1) != cores[1][1] || s.Core(ids[1]) != cores[1][0] || s.LayerCore(ids[1], 2) != nil {
		t.Fatal("Layers, Core or LayerCore do not return the stack")
	}
}

// FIFO holds per layer: a slow message on layer 0 does not hold back layer 1.
func TestLayersFIFOPerLayer(t *testing.T) {
	lat := []time.Duration{100 * time.Millisecond, time.Millisecond}
	k := 0
	cfg := Config{Latency: latencyFunc(func() time.Duration { d := lat[k%2]; k++; return d })}
	s, ids, cores := stackNet(t, cfg, 2)
	cores[0][0].script = onStart(func() []protocols.Output {
		return []protocols.Output{protocols.Send{To: ids[1], Msg: wrapperspb.UInt64(1)}}
	})
	cores[0][1].script = onStart(func() []protocols.Output {
		return []protocols.Output{protocols.Send{To: ids[1], Msg: wrapperspb.String("x")}}
	})
	_ = s.InputLayer(ids[0], 0, protocols.Start{})
	_ = s.InputLayer(ids[0], 1, protocols.Start{})
	s.RunFor(time.Second)
	wantLog(t, "b layer 0", cores[1][0].log, "100ms recv u:1")
	wantLog(t, "b layer 1", cores[1][1].log, "1ms recv s:x")
}

type latencyFunc func() time.Duration

func (f latencyFunc) Sample(*rand.Rand) time.Duration { return f() }

// A timer belongs to its layer: the same Timer set on two layers fires on each, and
// cancelling it on one layer leaves the other's.
func TestLayersTimers(t *testing.T) {
	s, ids, cores := stackNet(t, Config{}, 1)
	tm := protocols.Timer{Kind: 7}
	cores[0][0].script = onStart(func() []protocols.Output {
		return []protocols.Output{protocols.SetTimer{Timer: tm, After: 2 * time.Second}}
	})
	cores[0][1].script = func(_ time.Time, in protocols.Input) []protocols.Output {
		switch in.(type) {
		case protocols.Start:
			return []protocols.Output{protocols.SetTimer{Timer: tm, After: time.Second}}
		case protocols.Call:
			return []protocols.Output{protocols.CancelTimer{Timer: tm}}
		}
		return nil
	}
	_ = s.InputLayer(ids[0], 0, protocols.Start{})
	_ = s.InputLayer(ids[0], 1, protocols.Start{})
	s.RunFor(3 * time.Second)
	wantLog(t, "layer 0", cores[0][0].log, "2s timer 7")
	wantLog(t, "layer 1", cores[0][1].log, "1s timer 7")

	// Both set again; layer 1 cancels its own: layer 0's still fires.
	_ = s.InputLayer(ids[0], 0, protocols.Start{})
	_ = s.InputLayer(ids[0], 1, protocols.Start{})
	s.RunFor(500 * time.Millisecond)
	_ = s.InputLayer(ids[0], 1, protocols.Call{})
	s.RunFor(3 * time.Second)
	wantLog(t, "layer 0", cores[0][0].log, "2s timer 7", "5s timer 7")
	wantLog(t, "layer 1", cores[0][1].log, "1s timer 7")
	if st := s.Stats(); st.TimerFires != 3 {
		t.Fatalf("%d timers fired, want 3", st.TimerFires)
	}
}

// PeerDown goes to the layer whose send failed, or whose Link the crash broke; a node
// that does not run a layer is unreachable on it.
func TestLayersPeerDown(t *testing.T) {
	for _, notify := range []bool{false, true} {
		t.Run(fmt.Sprintf("notify=%v", notify), func(t *testing.T) {
			s, ids, cores := stackNet(t, Config{DetectDelay: time.Second, NotifyLinksOnCrash: notify}, 3)
			single := &recCore{}
			extra, _ := PeerIDs(22, 1)
			if err := s.AddStack(extra[0], single); err != nil {
				t.Fatal(err)
			}
			// a links to b on layer 0 and sends to b on layer 1 after b crashed; it also
			// sends on layer 1 to the node that runs layer 0 only.
			cores[0][0].script = onStart(func() []protocols.Output {
				return []protocols.Output{protocols.Link{Peer: ids[1], Up: true}}
			})
			cores[0][1].script = onStart(func() []protocols.Output {
				return []protocols.Output{
					protocols.Send{To: ids[1], Msg: wrapperspb.String("1")},
					protocols.Send{To: ids[1], Msg: wrapperspb.String("2")},
					protocols.Send{To: extra[0], Msg: wrapperspb.String("3")},
				}
			})
			// c links to b on layer 1: it hears of the crash there, or not at all.
			cores[2][1].script = onStart(func() []protocols.Output {
				return []protocols.Output{protocols.Link{Peer: ids[1], Up: true}}
			})
			_ = s.InputLayer(ids[0], 0, protocols.Start{})
			_ = s.InputLayer(ids[2], 1, protocols.Start{})
			s.RunFor(time.Millisecond)
			s.Crash(ids[1])
			_ = s.InputLayer(ids[0], 1, protocols.Start{})
			s.RunFor(3 * time.Second)
			b, x := ids[1].ShortString(), extra[0].ShortString()
			wantLog(t, "a layer 1", cores[0][1].log, "1.001s down "+b, "1.001s down "+x)
			wantLog(t, "c layer 0", cores[2][0].log)
			wantLog(t, "single-layer node", single.log)
			if notify {
				wantLog(t, "a layer 0", cores[0][0].log, "1.001s down "+b)
				wantLog(t, "c layer 1", cores[2][1].log, "1.001s down "+b)
			} else {
				wantLog(t, "a layer 0", cores[0][0].log)
				wantLog(t, "c layer 1", cores[2][1].log)
			}
		})
	}
}

// A partition breaks the links of every layer at both ends, each on its own layer.
func TestLayersPartition(t *testing.T) {
	s, ids, cores := stackNet(t, Config{DetectDelay: 500 * time.Millisecond}, 2)
	cores[0][1].script = onStart(func() []protocols.Output {
		return []protocols.Output{protocols.Link{Peer: ids[1], Up: true}}
	})
	_ = s.InputLayer(ids[0], 1, protocols.Start{})
	s.RunFor(time.Millisecond)
	s.Partition([]peer.ID{ids[0]})
	s.RunFor(time.Second)
	wantLog(t, "a layer 1", cores[0][1].log, "501ms down "+ids[1].ShortString())
	wantLog(t, "a layer 0", cores[0][0].log)
}

// toyStack runs toyCores on two layers of every node with loss, a crash and a
// partition, and returns the trace hash and stats.
func toyStack(t *testing.T, seed uint64, n int, moveToLayer0 bool) (uint64, Stats) {
	t.Helper()
	ids, _ := PeerIDs(seed, n)
	cfg := twoLayers(Config{Seed: seed, Latency: Uniform{Min: time.Millisecond, Max: 80 * time.Millisecond}, Loss: 0.05})
	cfg.Layers[1].NewMessage = newUInt64 // toyCore speaks UInt64Value
	if moveToLayer0 {
		// The same traffic, but layer 1's cores sit at layer 0 of nodes of their own.
		cfg.Layers = cfg.Layers[:1]
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		others := slices.DeleteFunc(slices.Clone(ids), func(q peer.ID) bool { return q == id })
		c0 := &toyCore{peers: others, rng: NodeRand(seed, i), tick: time.Second}
		c1 := &toyCore{peers: others, rng: NodeRand(seed, n+i), tick: 700 * time.Millisecond}
		if moveToLayer0 {
			err = s.Add(id, c0)
		} else {
			err = s.AddStack(id, c0, c1)
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Input(id, protocols.Start{})
		if !moveToLayer0 {
			_ = s.InputLayer(id, 1, protocols.Start{})
		}
	}
	s.RunFor(10 * time.Second)
	s.Crash(ids[3])
	s.Partition(ids[:n/3])
	s.RunFor(5 * time.Second)
	s.Heal()
	s.RunFor(5 * time.Second)
	return s.TraceHash(), s.Stats()
}

func TestLayersDeterministic(t *testing.T) {
	h1, st1 := toyStack(t, 7, 40, false)
	h2, st2 := toyStack(t, 7, 40, false)
	h3, _ := toyStack(t, 8, 40, false)
	if h1 != h2 || st1.Sent != st2.Sent || st1.Events != st2.Events || !slices.Equal(st1.ByLayer, st2.ByLayer) {
		t.Fatalf("same seed, different runs: %x %+v vs %x %+v", h1, st1, h2, st2)
	}
	if h1 == h3 {
		t.Fatal("different seeds gave the same trace")
	}
	if st1.ByLayer[0].Msgs < 500 || st1.ByLayer[1].Msgs < 500 || st1.Lost == 0 || st1.Undeliv == 0 || st1.PeerDowns == 0 {
		t.Fatalf("the run did too little to mean anything: %+v", st1)
	}
	if h0, _ := toyStack(t, 7, 40, true); h0 == h1 {
		t.Fatal("a run without layer 1 hashes like one with it")
	}
}

// A one-layer network described by Layers behaves and hashes exactly as one described
// by NewMessage and Kind.
func TestLayersOneLayerSameAsFields(t *testing.T) {
	run := func(cfg Config) uint64 {
		s, _ := toyRun(t, 4, 30, cfg)
		s.RunFor(10 * time.Second)
		return s.TraceHash()
	}
	a := run(Config{Loss: 0.1})
	b := run(Config{Loss: 0.1, Layers: []Layer{{NewMessage: newUInt64}}})
	if a != b {
		t.Fatalf("traces differ: %x vs %x", a, b)
	}
}

func TestLayersErrors(t *testing.T) {
	if _, err := New(Config{Layers: []Layer{{NewMessage: newUInt64}, {}}}); err == nil {
		t.Fatal("a layer without NewMessage accepted")
	}
	if _, err := New(Config{Layers: []Layer{{}, {NewMessage: newString}}}); err == nil {
		t.Fatal("layer 0 without NewMessage accepted")
	}
	s, ids, _ := stackNet(t, Config{}, 1)
	more, _ := PeerIDs(23, 3)
	if err := s.AddStack(more[0], &recCore{}, &recCore{}, &recCore{}); err == nil {
		t.Fatal("three cores on a two-layer network accepted")
	}
	if err := s.AddStack(more[1]); err == nil {
		t.Fatal("a node without cores accepted")
	}
	if err := s.AddStack(more[2], &recCore{}, nil); err == nil {
		t.Fatal("a nil core accepted")
	}
	if err := s.InputLayer(ids[0], 2, protocols.Start{}); err == nil {
		t.Fatal("input to layer 2 of a two-layer node accepted")
	}
	if err := s.InputLayer(ids[0], -1, protocols.Start{}); err == nil {
		t.Fatal("input to layer -1 accepted")
	}
}
