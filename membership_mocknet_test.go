package unsserv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols/membership"
)

// overlayGraph is the neighbour relation of a set of memberships.
type overlayGraph map[peer.ID][]peer.ID

func graphOf(ms []*Membership) overlayGraph {
	g := overlayGraph{}
	for _, m := range ms {
		var ids []peer.ID
		for _, n := range m.Neighbours() {
			ids = append(ids, n.ID)
		}
		g[m.Host().ID()] = ids
	}
	return g
}

// connected reports whether every node reaches every other over the neighbour links
// (taken as undirected), counting only links between nodes of g.
func (g overlayGraph) connected() bool {
	if len(g) == 0 {
		return true
	}
	adj := map[peer.ID][]peer.ID{}
	for a, ns := range g {
		for _, b := range ns {
			if _, ok := g[b]; ok {
				adj[a] = append(adj[a], b)
				adj[b] = append(adj[b], a)
			}
		}
	}
	var start peer.ID
	for id := range g {
		start = id
		break
	}
	seen := map[peer.ID]bool{start: true}
	stack := []peer.ID{start}
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
	return len(seen) == len(g)
}

// viewProblems lists HyParView invariant violations among the nodes of g: sizes out of
// [1, max], self or duplicate entries, entries of nodes outside g, asymmetric links.
func (g overlayGraph) viewProblems(max int) []string {
	var out []string
	for a, ns := range g {
		if len(ns) < 1 || len(ns) > max {
			out = append(out, fmt.Sprintf("%s has %d neighbours", a.ShortString(), len(ns)))
		}
		seen := map[peer.ID]bool{}
		for _, b := range ns {
			switch {
			case b == a:
				out = append(out, fmt.Sprintf("%s lists itself", a.ShortString()))
			case seen[b]:
				out = append(out, fmt.Sprintf("%s lists %s twice", a.ShortString(), b.ShortString()))
			}
			seen[b] = true
			back, ok := g[b]
			if !ok {
				out = append(out, fmt.Sprintf("%s lists %s, which is gone", a.ShortString(), b.ShortString()))
				continue
			}
			sym := false
			for _, c := range back {
				sym = sym || c == a
			}
			if !sym {
				out = append(out, fmt.Sprintf("%s lists %s but not the other way round", a.ShortString(), b.ShortString()))
			}
		}
	}
	return out
}

// TestMocknetHundredJoinAndHalfFail runs 100 real hosts (mocknet, 10 ms links) inside a
// synctest bubble, so time is virtual: the periods counted below are exact, not wall time.
func TestMocknetHundredJoinAndHalfFail(t *testing.T) {
	if testing.Short() {
		t.Skip("100-host run skipped in -short mode")
	}
	const (
		n         = 100
		shuffle   = time.Second
		maxActive = 5
	)
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		var memBefore, memAfter runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&memBefore)
		mn, hosts := mockHosts(t, n)
		defer mn.Close()
		cfg := membership.HyParViewConfig{ShuffleInterval: shuffle}
		rng := rand.New(rand.NewPCG(1, 2))
		ms := make([]*Membership, n)
		start := time.Now()
		for i, h := range hosts {
			opts := []Option{WithHyParView(cfg), Seed(uint64(i))}
			if i > 0 {
				// 1 to 3 bootstrap peers among the first three nodes.
				var bs []any
				for _, j := range rng.Perm(min(i, 3))[:1+rng.IntN(min(i, 3))] {
					bs = append(bs, peer.AddrInfo{ID: hosts[j].ID()})
				}
				opts = append(opts, Bootstrap(bs...))
			}
			m, err := JoinNetwork(ctx, h, "mock.net", opts...)
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			ms[i] = m
		}
		defer func() {
			for _, m := range ms {
				_ = m.Leave()
			}
		}()
		joined := time.Since(start)

		// Settle: a few shuffle periods.
		settle := 0
		for ; settle < 20; settle++ {
			time.Sleep(shuffle)
			synctest.Wait()
			g := graphOf(ms)
			if len(g.viewProblems(maxActive)) == 0 && g.connected() {
				break
			}
		}
		g := graphOf(ms)
		if p := g.viewProblems(maxActive); len(p) > 0 {
			t.Fatalf("after %d shuffle periods the views break HyParView's invariants: %v", settle+1, p[:min(len(p), 10)])
		}
		if !g.connected() {
			t.Fatal("overlay not connected after joins")
		}
		var msgs uint64
		for _, m := range ms {
			msgs += m.Stats().MsgsOut
		}
		runtime.GC()
		runtime.ReadMemStats(&memAfter)
		t.Logf("100 joins took %v of virtual time (10 ms links); settled after %d shuffle period(s); %d messages in all; heap %.0f KiB per host (libp2p host and membership)",
			joined, settle+1, msgs, float64(memAfter.HeapAlloc-memBefore.HeapAlloc)/n/1024)

		// Half of the hosts crash at once (no goodbye). A closed mocknet host can still be
		// dialled through its links, so cut them first: nothing reaches a crashed host.
		crashed := map[int]bool{}
		for _, i := range rng.Perm(n)[:n/2] {
			crashed[i] = true
			for j := range hosts {
				if j != i {
					_ = mn.UnlinkPeers(hosts[i].ID(), hosts[j].ID())
				}
			}
			if err := hosts[i].Close(); err != nil {
				t.Fatal(err)
			}
		}
		var survivors []*Membership
		for i, m := range ms {
			if !crashed[i] {
				survivors = append(survivors, m)
			}
		}
		const bound = 10 // shuffle periods allowed to heal
		healed := -1
		for k := 1; k <= bound; k++ {
			time.Sleep(shuffle)
			synctest.Wait()
			g := graphOf(survivors)
			if g.connected() && len(g.viewProblems(maxActive)) == 0 {
				healed = k
				break
			}
		}
		if healed < 0 {
			g := graphOf(survivors)
			t.Fatalf("survivors not healed within %d shuffle periods: connected=%v problems=%v", bound, g.connected(), g.viewProblems(maxActive))
		}
		t.Logf("after 50%% crashed, survivors connected with sound views after %d shuffle period(s)", healed)
		for i, m := range ms {
			if crashed[i] {
				_ = m.Leave()
			}
		}
	})
}
