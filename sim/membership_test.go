package sim_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/membership"
	"github.com/unsserv/go-unsserv/sim"
)

// hvNet is a simulated network of HyParView cores.
type hvNet struct {
	s     *sim.Sim
	ids   []peer.ID
	cores map[peer.ID]*membership.HyParView
	cfg   membership.HyParViewConfig
	rng   *rand.Rand
}

func newHVNet(tb testing.TB, seed uint64, n int, scfg sim.Config) *hvNet {
	tb.Helper()
	ids, err := sim.PeerIDs(seed, n)
	if err != nil {
		tb.Fatal(err)
	}
	scfg.Seed = seed
	scfg.NewMessage = func() proto.Message { return new(membership.Message) }
	s, err := sim.New(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	net := &hvNet{s: s, ids: ids, cores: map[peer.ID]*membership.HyParView{}, rng: rand.New(rand.NewPCG(seed, 99))}
	for i, id := range ids {
		c, err := membership.NewHyParView(membership.NewNode(id, nil, nil), net.cfg, sim.NodeRand(seed, i))
		if err != nil {
			tb.Fatal(err)
		}
		net.cores[id] = c
		if err := s.Add(id, c); err != nil {
			tb.Fatal(err)
		}
	}
	return net
}

// joinAll starts node 0 and joins the others one by one through random earlier nodes.
func (n *hvNet) joinAll(gap time.Duration) {
	_ = n.s.Input(n.ids[0], protocols.Start{})
	for i := 1; i < len(n.ids); i++ {
		n.s.RunFor(gap)
		_ = n.s.Input(n.ids[i], protocols.Start{Bootstrap: []peer.ID{n.ids[n.rng.IntN(i)]}})
	}
}

// check returns the violations of HyParView's invariants among live nodes: active view
// within [1, ActiveSize], passive within PassiveSize, no self, no duplicates, active and
// passive disjoint, active views symmetric, overlay connected.
func (n *hvNet) check() []string {
	const maxActive, maxPassive = 5, 30
	var out []string
	live := map[peer.ID]bool{}
	for _, id := range n.ids {
		if n.s.Alive(id) {
			live[id] = true
		}
	}
	for _, id := range n.ids {
		if !live[id] {
			continue
		}
		c := n.cores[id]
		act, pas := c.Active(), c.Passive()
		if len(act) < 1 || len(act) > maxActive {
			out = append(out, fmt.Sprintf("%s: active view of %d", id.ShortString(), len(act)))
		}
		if len(pas) > maxPassive {
			out = append(out, fmt.Sprintf("%s: passive view of %d", id.ShortString(), len(pas)))
		}
		seen := map[peer.ID]bool{}
		for _, q := range append(append([]peer.ID{}, act...), pas...) {
			if q == id {
				out = append(out, fmt.Sprintf("%s: itself in a view", id.ShortString()))
			}
			if seen[q] {
				out = append(out, fmt.Sprintf("%s: %s twice (or in both views)", id.ShortString(), q.ShortString()))
			}
			seen[q] = true
		}
		for _, q := range act {
			if !live[q] {
				out = append(out, fmt.Sprintf("%s: dead %s in the active view", id.ShortString(), q.ShortString()))
				continue
			}
			sym := false
			for _, r := range n.cores[q].Active() {
				sym = sym || r == id
			}
			if !sym {
				out = append(out, fmt.Sprintf("%s has %s active, not the other way round", id.ShortString(), q.ShortString()))
			}
		}
	}
	if !n.connected(live) {
		out = append(out, "overlay of live nodes not connected")
	}
	return out
}

func (n *hvNet) connected(live map[peer.ID]bool) bool {
	var start peer.ID
	for _, id := range n.ids {
		if live[id] {
			start = id
			break
		}
	}
	seen := map[peer.ID]bool{start: true}
	stack := []peer.ID{start}
	adj := map[peer.ID][]peer.ID{}
	for id := range live {
		for _, q := range n.cores[id].Active() {
			if live[q] {
				adj[id] = append(adj[id], q)
				adj[q] = append(adj[q], id)
			}
		}
	}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, q := range adj[p] {
			if !seen[q] {
				seen[q] = true
				stack = append(stack, q)
			}
		}
	}
	return len(seen) == len(live)
}

// settle runs shuffle periods until the invariants hold, at most max periods.
func (n *hvNet) settle(max int) (int, []string) {
	period := 10 * time.Second // HyParView's default shuffle interval
	var problems []string
	for k := 1; k <= max; k++ {
		n.s.RunFor(period)
		if problems = n.check(); len(problems) == 0 {
			return k, nil
		}
	}
	return max, problems
}

func TestHyParViewInvariantsAfterJoinsChurnAndHealing(t *testing.T) {
	net := newHVNet(t, 11, 300, sim.Config{Latency: sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond}})
	net.joinAll(20 * time.Millisecond)
	k, p := net.settle(10)
	if len(p) > 0 {
		t.Fatalf("after joins, %d shuffle periods: %v", k, p[:min(10, len(p))])
	}
	t.Logf("joins: invariants hold after %d shuffle period(s)", k)

	// Churn: every second, one node crashes and one new node joins, for 60 s.
	extra, _ := sim.PeerIDs(12, 60)
	for i, id := range extra {
		c, err := membership.NewHyParView(membership.NewNode(id, nil, nil), net.cfg, sim.NodeRand(12, i))
		if err != nil {
			t.Fatal(err)
		}
		net.cores[id] = c
		_ = net.s.Add(id, c)
		victim := net.ids[net.rng.IntN(len(net.ids))]
		net.s.Crash(victim)
		var contact peer.ID
		for contact == "" || !net.s.Alive(contact) {
			contact = net.ids[net.rng.IntN(len(net.ids))]
		}
		net.ids = append(net.ids, id)
		_ = net.s.Input(id, protocols.Start{Bootstrap: []peer.ID{contact}})
		net.s.RunFor(time.Second)
	}
	k, p = net.settle(10)
	if len(p) > 0 {
		t.Fatalf("after churn, %d shuffle periods: %v", k, p[:min(10, len(p))])
	}
	t.Logf("churn: invariants hold after %d shuffle period(s)", k)

	// A partition into two halves for a while, then healing: the overlay must be whole
	// again (each side keeps nodes of the other in its passive view to reconnect to).
	var half []peer.ID
	for i, id := range net.ids {
		if i%2 == 0 {
			half = append(half, id)
		}
	}
	net.s.Partition(half)
	net.s.RunFor(30 * time.Second)
	net.s.Heal()
	k, p = net.settle(20)
	if len(p) > 0 {
		t.Fatalf("after the partition healed, %d shuffle periods: %v", k, p[:min(10, len(p))])
	}
	t.Logf("partition healed: invariants hold after %d shuffle period(s)", k)
}

func TestHyParViewSimDeterministic(t *testing.T) {
	run := func() uint64 {
		net := newHVNet(t, 5, 200, sim.Config{Latency: sim.Uniform{Min: time.Millisecond, Max: 30 * time.Millisecond}, Loss: 0.01})
		net.joinAll(10 * time.Millisecond)
		net.s.RunFor(time.Minute)
		for _, id := range net.ids[:50] {
			net.s.Crash(id)
		}
		net.s.RunFor(time.Minute)
		return net.s.TraceHash()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("same seed, different traces: %x %x", a, b)
	}
}

// BenchmarkSimHyParView measures the simulator with 1,000 HyParView nodes: events per
// second of wall time and heap per node.
func BenchmarkSimHyParView(b *testing.B) {
	const n = 1000
	var events uint64
	var heapPerNode float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		net := newHVNet(b, uint64(i), n, sim.Config{})
		net.joinAll(10 * time.Millisecond)
		net.s.RunFor(10 * 10 * time.Second) // 10 shuffle periods
		runtime.GC()
		runtime.ReadMemStats(&after)
		events += net.s.Stats().Events
		heapPerNode = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(net)
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(heapPerNode, "heap-B/node")
}
