package sim

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/unsserv/go-unsserv/protocols"
)

// toyCore: on every tick it sends a random number to a random known peer; a node that
// receives a number forwards it once with probability 1/2. It records what it got.
type toyCore struct {
	peers []peer.ID
	rng   *rand.Rand
	got   []uint64
	downs []peer.ID
	tick  time.Duration
	// script, if set, replaces the behaviour above.
	script func(now time.Time, in protocols.Input) []protocols.Output
}

var tick = protocols.Timer{Kind: 1}

func (c *toyCore) Handle(now time.Time, in protocols.Input) []protocols.Output {
	if c.script != nil {
		if r, ok := in.(protocols.Receive); ok {
			c.got = append(c.got, r.Msg.(*wrapperspb.UInt64Value).GetValue())
		}
		if d, ok := in.(protocols.PeerDown); ok {
			c.downs = append(c.downs, d.Peer)
		}
		return c.script(now, in)
	}
	switch v := in.(type) {
	case protocols.Start:
		return []protocols.Output{protocols.SetTimer{Timer: tick, After: time.Duration(c.rng.Int64N(int64(c.tick)))}}
	case protocols.TimerFired:
		to := c.peers[c.rng.IntN(len(c.peers))]
		return []protocols.Output{
			protocols.Send{To: to, Msg: wrapperspb.UInt64(c.rng.Uint64())},
			protocols.SetTimer{Timer: tick, After: c.tick},
		}
	case protocols.Receive:
		x := v.Msg.(*wrapperspb.UInt64Value).GetValue()
		c.got = append(c.got, x)
		if c.rng.IntN(2) == 0 {
			return []protocols.Output{protocols.Send{To: c.peers[c.rng.IntN(len(c.peers))], Msg: wrapperspb.UInt64(x / 2)}}
		}
	case protocols.PeerDown:
		c.downs = append(c.downs, v.Peer)
	}
	return nil
}

func newUInt64() proto.Message { return new(wrapperspb.UInt64Value) }

func toyRun(t *testing.T, seed uint64, n int, cfg Config) (*Sim, []*toyCore) {
	t.Helper()
	ids, err := PeerIDs(seed, n)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Seed = seed
	cfg.NewMessage = newUInt64
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cores := make([]*toyCore, n)
	for i, id := range ids {
		var others []peer.ID
		for _, o := range ids {
			if o != id {
				others = append(others, o)
			}
		}
		cores[i] = &toyCore{peers: others, rng: NodeRand(seed, i), tick: time.Second}
		if err := s.Add(id, cores[i]); err != nil {
			t.Fatal(err)
		}
		_ = s.Input(id, protocols.Start{})
	}
	return s, cores
}

func TestDeterministicTrace(t *testing.T) {
	cfg := Config{Latency: Uniform{Min: time.Millisecond, Max: 80 * time.Millisecond}, Loss: 0.05}
	run := func(seed uint64) (uint64, Stats) {
		s, _ := toyRun(t, seed, 60, cfg)
		s.RunFor(10 * time.Second)
		ids := s.IDs()
		s.Crash(ids[3])
		s.Partition(ids[:20])
		s.RunFor(5 * time.Second)
		s.Heal()
		s.RunFor(5 * time.Second)
		return s.TraceHash(), s.Stats()
	}
	h1, st1 := run(7)
	h2, st2 := run(7)
	h3, _ := run(8)
	if h1 != h2 {
		t.Fatalf("same seed, different traces: %x vs %x", h1, h2)
	}
	if st1.Sent != st2.Sent || st1.Events != st2.Events || st1.Lost != st2.Lost {
		t.Fatalf("same seed, different stats: %+v vs %+v", st1, st2)
	}
	if h1 == h3 {
		t.Fatal("different seeds gave the same trace")
	}
	if st1.Sent.Msgs < 1000 || st1.Lost == 0 || st1.Undeliv == 0 {
		t.Fatalf("the run did too little to mean anything: %+v", st1)
	}
}

func TestPeerIDsDeterministic(t *testing.T) {
	a, _ := PeerIDs(1, 5)
	b, _ := PeerIDs(1, 5)
	c, _ := PeerIDs(2, 5)
	seen := map[peer.ID]bool{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed, different IDs")
		}
		if a[i] == c[i] {
			t.Fatal("different seeds, same ID")
		}
		if seen[a[i]] {
			t.Fatal("duplicate ID")
		}
		seen[a[i]] = true
	}
}

// pair builds two scripted nodes: a sends what its script says, b records.
func pair(t *testing.T, cfg Config, script func(now time.Time, in protocols.Input) []protocols.Output) (*Sim, []peer.ID, []*toyCore) {
	t.Helper()
	ids, _ := PeerIDs(3, 3)
	cfg.NewMessage = newUInt64
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cores := []*toyCore{{script: script}, {script: noop}, {script: noop}}
	for i, id := range ids {
		_ = s.Add(id, cores[i])
	}
	return s, ids, cores
}

func noop(time.Time, protocols.Input) []protocols.Output { return nil }

func sendN(to func() peer.ID, n int) func(time.Time, protocols.Input) []protocols.Output {
	return func(_ time.Time, in protocols.Input) []protocols.Output {
		if _, ok := in.(protocols.Start); !ok {
			return nil
		}
		outs := make([]protocols.Output, n)
		for i := range outs {
			outs[i] = protocols.Send{To: to(), Msg: wrapperspb.UInt64(uint64(i))}
		}
		return outs
	}
}

func TestLossRate(t *testing.T) {
	var ids []peer.ID
	const n = 20000
	s, ids, cores := pair(t, Config{Loss: 0.3, Seed: 5}, sendN(func() peer.ID { return ids[1] }, n))
	_ = s.Input(ids[0], protocols.Start{})
	s.RunFor(time.Second)
	got := len(cores[1].got)
	st := s.Stats()
	if uint64(got)+st.Lost != n || st.Delivered.Msgs != uint64(got) {
		t.Fatalf("delivered %d + lost %d != sent %d", got, st.Lost, n)
	}
	if rate := float64(st.Lost) / n; math.Abs(rate-0.3) > 0.02 {
		t.Fatalf("loss rate %.3f, want 0.3", rate)
	}
	if len(cores[0].downs) != 0 {
		t.Fatal("a lost message must not look like a failure")
	}
}

func TestFIFOPerLink(t *testing.T) {
	var ids []peer.ID
	s, ids, cores := pair(t, Config{Latency: Uniform{Min: time.Millisecond, Max: 200 * time.Millisecond}}, sendN(func() peer.ID { return ids[1] }, 500))
	_ = s.Input(ids[0], protocols.Start{})
	s.RunFor(time.Second)
	if len(cores[1].got) != 500 {
		t.Fatalf("got %d messages, want 500", len(cores[1].got))
	}
	for i, v := range cores[1].got {
		if v != uint64(i) {
			t.Fatalf("message %d arrived as number %d: out of order", v, i)
		}
	}
}

func TestPartitionAndHeal(t *testing.T) {
	var ids []peer.ID
	s, ids, cores := pair(t, Config{Latency: Fixed(10 * time.Millisecond), DetectDelay: 500 * time.Millisecond},
		sendN(func() peer.ID { return ids[1] }, 3))
	s.Partition([]peer.ID{ids[0]})
	_ = s.Input(ids[0], protocols.Start{})
	s.RunFor(499 * time.Millisecond)
	if len(cores[1].got) != 0 || len(cores[0].downs) != 0 {
		t.Fatalf("before DetectDelay: got %d, downs %d", len(cores[1].got), len(cores[0].downs))
	}
	s.RunFor(time.Millisecond)
	if len(cores[0].downs) != 1 || cores[0].downs[0] != ids[1] {
		t.Fatalf("downs %v, want exactly one for the node across the partition", cores[0].downs)
	}
	s.Heal()
	_ = s.Input(ids[0], protocols.Start{})
	s.RunFor(10 * time.Millisecond)
	if len(cores[1].got) != 3 {
		t.Fatalf("after heal got %d, want 3", len(cores[1].got))
	}
}

func TestCrashDetection(t *testing.T) {
	for _, notify := range []bool{false, true} {
		var ids []peer.ID
		s, ids, cores := pair(t, Config{DetectDelay: time.Second, NotifyLinksOnCrash: notify}, func(_ time.Time, in protocols.Input) []protocols.Output {
			if _, ok := in.(protocols.Start); ok {
				return []protocols.Output{protocols.Link{Peer: ids[1], Up: true}}
			}
			return nil
		})
		// c sends to b after b has crashed.
		cores[2].script = sendN(func() peer.ID { return ids[1] }, 2)
		_ = s.Input(ids[0], protocols.Start{})
		s.RunFor(time.Millisecond)
		s.Crash(ids[1])
		_ = s.Input(ids[2], protocols.Start{})
		s.RunFor(2 * time.Second)
		if len(cores[2].downs) != 1 {
			t.Fatalf("notify=%v: the sender got %d PeerDowns for 2 sends, want 1", notify, len(cores[2].downs))
		}
		want := 0
		if notify {
			want = 1
		}
		if len(cores[0].downs) != want {
			t.Fatalf("notify=%v: the linked node got %d PeerDowns, want %d", notify, len(cores[0].downs), want)
		}
		if s.Alive(ids[1]) {
			t.Fatal("crashed node alive")
		}
	}
}

func TestTimersReplaceAndCancel(t *testing.T) {
	var fired []uint8
	var at []time.Duration
	s, ids, _ := pair(t, Config{}, func(now time.Time, in protocols.Input) []protocols.Output {
		switch v := in.(type) {
		case protocols.Start:
			return []protocols.Output{
				protocols.SetTimer{Timer: protocols.Timer{Kind: 1}, After: time.Second},
				protocols.SetTimer{Timer: protocols.Timer{Kind: 2}, After: 2 * time.Second},
				protocols.SetTimer{Timer: protocols.Timer{Kind: 1}, After: 3 * time.Second},
				protocols.SetTimer{Timer: protocols.Timer{Kind: 3}, After: time.Second},
				protocols.CancelTimer{Timer: protocols.Timer{Kind: 3}},
			}
		case protocols.TimerFired:
			fired = append(fired, v.Timer.Kind)
			at = append(at, now.Sub(Epoch))
		}
		return nil
	})
	_ = s.Input(ids[0], protocols.Start{})
	s.RunFor(10 * time.Second)
	if len(fired) != 2 || fired[0] != 2 || fired[1] != 1 || at[0] != 2*time.Second || at[1] != 3*time.Second {
		t.Fatalf("fired %v at %v, want [2 1] at [2s 3s]", fired, at)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{}, {NewMessage: newUInt64, Loss: 1}, {NewMessage: newUInt64, DetectDelay: -1}} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("config %+v accepted", cfg)
		}
	}
}

func TestAtAndChurn(t *testing.T) {
	s, _ := toyRun(t, 9, 20, Config{})
	var ran []time.Duration
	s.At(Epoch.Add(3*time.Second), func(s *Sim) { ran = append(ran, s.Now().Sub(Epoch)) })
	s.At(Epoch.Add(time.Second), func(s *Sim) { ran = append(ran, s.Now().Sub(Epoch)) })
	extra, _ := PeerIDs(10, 5)
	joined := 0
	s.Churn(2*time.Second, Epoch.Add(10*time.Second), func(s *Sim) peer.ID {
		id := extra[joined]
		joined++
		_ = s.Add(id, &toyCore{peers: extra, rng: NodeRand(10, joined), tick: time.Second})
		_ = s.Input(id, protocols.Start{})
		return id
	})
	s.RunFor(20 * time.Second)
	if len(ran) != 2 || ran[0] != time.Second || ran[1] != 3*time.Second {
		t.Fatalf("actions ran at %v, want [1s 3s]", ran)
	}
	dead := 0
	for _, id := range s.IDs() {
		if !s.Alive(id) {
			dead++
		}
	}
	if joined != 5 || dead != 5 || len(s.IDs()) != 25 {
		t.Fatalf("churn: %d joined, %d crashed, %d nodes; want 5, 5, 25", joined, dead, len(s.IDs()))
	}
}
