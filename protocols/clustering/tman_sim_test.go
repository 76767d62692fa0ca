package clustering_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/unsserv/go-unsserv/protocols/clustering"
)

// T-Man over Newscast, 400 nodes on a ring: views hold at least 95% of their ideal
// entries within a small multiple of log2 N cycles after the last join, the clustered
// overlay is connected, and the views keep their invariants after every cycle.
func TestTManSimConverges(t *testing.T) {
	const n = 400
	net := newTManNet(t, 1, n, clustering.TManConfig{Interval: time.Second})
	log2n := math.Log2(n)
	reached := -1
	var fr float64
	for c := 1; c <= 30; c++ {
		net.s.RunFor(time.Second)
		net.viewProblems(t)
		fr = net.idealFraction()
		if fr >= 0.95 && reached < 0 {
			reached = c
		}
	}
	if reached < 0 || float64(reached) > 2*log2n {
		t.Fatalf("views reached 95%% ideal after %d cycles (log2 N = %.1f); %.3f at the end", reached, log2n, fr)
	}
	if fr < 0.99 {
		t.Fatalf("ideal fraction %.3f after 30 cycles, want at least 0.99", fr)
	}
	if lc := net.largestComponent(); lc != 1 {
		t.Fatalf("clustered overlay not connected: largest component %.3f of the nodes", lc)
	}
	t.Logf("95%% ideal after %d cycles (log2 N = %.1f), %.4f after 30", reached, log2n, fr)
}

// A third of the nodes crash at once: once Newscast has forgotten them (a few cycles)
// and MaxAge has passed, their descriptors are gone from every live view, the views are ideal again among the survivors, and the overlay is
// connected.
func TestTManSimCrashRecovers(t *testing.T) {
	const n = 300
	cfg := clustering.TManConfig{Interval: time.Second, MaxAge: 15 * time.Second}
	net := newTManNet(t, 2, n, cfg)
	net.s.RunFor(20 * time.Second)
	rng := rand.New(rand.NewPCG(9, 9))
	for _, i := range rng.Perm(n)[:n/3] {
		net.s.Crash(net.ids[i])
	}
	net.s.RunFor(cfg.MaxAge + 15*time.Second)
	net.viewProblems(t)
	for i, id := range net.ids {
		if !net.s.Alive(id) {
			continue
		}
		for _, nd := range net.cores[i].View() {
			if !net.s.Alive(nd.ID) {
				t.Fatalf("node %d still holds crashed %s", i, nd.ID.ShortString())
			}
		}
	}
	if fr := net.idealFraction(); fr < 0.95 {
		t.Fatalf("ideal fraction %.3f among survivors, want at least 0.95", fr)
	}
	if lc := net.largestComponent(); lc != 1 {
		t.Fatalf("clustered overlay not connected after the crash: largest component %.3f", lc)
	}
}

// The same seed gives the same run.
func TestTManSimDeterministic(t *testing.T) {
	var hs [2]uint64
	for k := range hs {
		net := newTManNet(t, 5, 100, clustering.TManConfig{Interval: time.Second})
		net.s.RunFor(10 * time.Second)
		hs[k] = net.s.TraceHash()
	}
	if hs[0] != hs[1] {
		t.Fatalf("trace hashes differ: %x, %x", hs[0], hs[1])
	}
}
