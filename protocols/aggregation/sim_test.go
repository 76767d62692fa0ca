package aggregation_test

import (
	"math"
	"slices"
	"testing"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/aggregation"
)

func uniform(seed uint64) func(int) float64 {
	return func(i int) float64 {
		x := (uint64(i)+1)*0x9e3779b97f4a7c15 ^ seed
		x ^= x >> 31
		x *= 0xbf58476d1ce4e5b9
		x ^= x >> 29
		return float64(x>>11) / (1 << 53)
	}
}

// finalErrors returns, for epoch e, how many live nodes reported a final estimate and
// the largest relative error of those against truth.
func (n *aggNet) finalErrors(e uint64, truth float64) (int, float64) {
	count, worst := 0, 0.0
	for _, i := range n.live() {
		f, ok := n.finals[i][e]
		if !ok {
			continue
		}
		count++
		worst = max(worst, math.Abs(f-truth)/math.Abs(truth))
	}
	return count, worst
}

// With the paper's peer sampling (20 random live nodes each cycle) the variance of the
// estimates shrinks by about 1/(2*sqrt(e)) ~= 0.303 per cycle, and after an epoch of 30
// cycles every node holds the mean within 1e-6.
func TestSimMeanConvergesAtThePapersRate(t *testing.T) {
	const n = 400
	values := uniform(1)
	net := newAggNet(t, 1, n, 0, aggregation.PushPullConfig{}, values)
	net.randomPeers(20)
	net.s.RunFor(6 * net.cycle())
	e := net.runToEpochStart()
	var vars []float64
	for c := 0; c < 32; c++ {
		st := net.epochStats(e, meanOf)
		vars = append(vars, st.vari)
		net.s.RunFor(net.cycle())
	}
	// Fit from cycle 3 (every node in the epoch) to 20 (well above rounding noise).
	factor := math.Pow(vars[20]/vars[3], 1.0/17)
	t.Logf("variance reduction per cycle %.4f (paper 0.3033)", factor)
	if factor < 0.25 || factor > 0.36 {
		t.Fatalf("variance reduction per cycle %.4f, want about 0.303", factor)
	}
	net.s.RunFor(3 * net.cycle())
	var all []float64
	for i := range n {
		all = append(all, values(i))
	}
	got, worst := net.finalErrors(e, meanOf(all))
	if got != n || worst > 1e-6 {
		t.Fatalf("%d of %d nodes ended epoch %d; worst relative error %.3g, want <= 1e-6", got, n, e, worst)
	}
}

// Over a fixed sparse overlay (degree about 6, as a membership's neighbours) every
// function converges, more slowly: an epoch of 60 cycles. Min and max are exact, the
// mean within 1e-5, count and sum within 1%.
func TestSimEveryFunctionOverAFixedOverlay(t *testing.T) {
	const n = 300
	values := func(i int) float64 { return 1 + float64(i%50) }
	var all []float64
	for i := range n {
		all = append(all, values(i))
	}
	for _, tc := range []struct {
		fn    aggregation.Function
		truth float64
		tol   float64
	}{
		{aggregation.Mean, meanOf(all), 1e-5},
		{aggregation.Min, slices.Min(all), 0},
		{aggregation.Max, slices.Max(all), 0},
		{aggregation.Count, n, 0.01},
		{aggregation.Sum, meanOf(all) * n, 0.01},
	} {
		t.Run(tc.fn.String(), func(t *testing.T) {
			net := newAggNet(t, 2, n, 0, aggregation.PushPullConfig{Function: tc.fn, EpochCycles: 60}, values)
			net.s.RunFor(5 * net.cycle())
			e := net.runToEpochStart() // the first epoch that every node starts
			net.s.RunFor(64 * net.cycle())
			got, worst := net.finalErrors(e, tc.truth)
			t.Logf("%s: %d nodes, worst relative error %.3g", tc.fn, got, worst)
			if got != n || worst > tc.tol {
				t.Fatalf("%d of %d nodes ended epoch %d; worst relative error %.3g, want <= %g", got, n, e, worst, tc.tol)
			}
		})
	}
}

// Message loss: with the repeats of unanswered requests (the default) a 5% loss costs
// practically no mass (every node within 1e-6 after an epoch, as without loss); with the
// paper's single attempt every lost reply loses mass.
func TestSimLossContainedByRepeats(t *testing.T) {
	const n = 300
	values := uniform(3)
	var all []float64
	for i := range n {
		all = append(all, values(i))
	}
	worst := map[int]float64{}
	for _, retries := range []int{0, -1} {
		net := newAggNet(t, 3, n, 0.05, aggregation.PushPullConfig{Retries: retries}, values)
		net.randomPeers(20)
		net.s.RunFor(6 * net.cycle())
		e := net.runToEpochStart()
		net.s.RunFor(34 * net.cycle())
		got, w := net.finalErrors(e, meanOf(all))
		if got != n {
			t.Fatalf("%d of %d nodes ended the epoch", got, n)
		}
		worst[retries] = w
		var st aggregation.Stats
		for _, c := range net.cores {
			s := c.Stats()
			st.Failed += s.Failed
			st.Retransmits += s.Retransmits
			st.Completed += s.Completed
		}
		t.Logf("retries %d: worst relative error %.3g; %d completed, %d failed, %d repeats", retries, w, st.Completed, st.Failed, st.Retransmits)
	}
	if worst[0] > 1e-6 || worst[-1] < 1e-4 {
		t.Fatalf("worst errors %v: want <= 1e-6 with the repeats (as without loss), and >= 1e-4 with single attempts", worst)
	}
}

// Nodes that join mid-epoch take no part in it, and count from the next one on: the
// count follows the network's size.
func TestSimJoinersWaitForTheNextEpoch(t *testing.T) {
	const n = 200
	net := newAggNet(t, 4, n, 0, aggregation.PushPullConfig{Function: aggregation.Count}, func(int) float64 { return 0 })
	net.randomPeers(20)
	net.s.RunFor(6 * net.cycle())
	e := net.runToEpochStart()
	net.s.RunFor(10 * net.cycle())
	var joined []int
	for range 40 {
		joined = append(joined, net.join(0, 0))
	}
	net.s.RunFor(5 * net.cycle())
	for _, i := range joined {
		if est := net.cores[i].Estimate(); est.Epoch != 0 || est.Known {
			t.Fatalf("a joiner takes part in the running epoch: %+v", est)
		}
	}
	got, worst := net.finalErrors(e, n)
	net.s.RunFor(20 * net.cycle())
	got, worst = net.finalErrors(e, n)
	if got != n || worst > 0.01 {
		t.Fatalf("epoch %d: %d finals, worst error %.3g against %d", e, got, worst, n)
	}
	net.s.RunFor(32 * net.cycle())
	got, worst = net.finalErrors(e+1, n+40)
	if got != n+40 || worst > 0.01 {
		t.Fatalf("epoch %d: %d finals, worst error %.3g against %d", e+1, got, worst, n+40)
	}
	for _, i := range joined {
		if est := net.cores[i].Estimate(); est.Epoch != e+2 {
			t.Fatalf("joiner in epoch %d, want %d", est.Epoch, e+2)
		}
	}
}

// SetValue counts from the next epoch: the running epoch's mean is unchanged, the next
// one's is the new mean.
func TestSimSetValueFromTheNextEpoch(t *testing.T) {
	const n = 200
	net := newAggNet(t, 5, n, 0, aggregation.PushPullConfig{}, func(int) float64 { return 1 })
	net.randomPeers(20)
	net.s.RunFor(6 * net.cycle())
	e := net.runToEpochStart()
	net.s.RunFor(5 * net.cycle())
	for i, id := range net.ids {
		_ = net.s.Input(id, protocols.Call{Req: aggregation.SetValue{Value: float64(i % 2 * 4)}}) // mean 2
	}
	net.s.RunFor(70 * net.cycle())
	if got, worst := net.finalErrors(e, 1); got != n || worst > 1e-9 {
		t.Fatalf("epoch %d: %d finals, worst error %.3g against 1", e, got, worst)
	}
	if got, worst := net.finalErrors(e+1, 2); got != n || worst > 1e-6 {
		t.Fatalf("epoch %d: %d finals, worst error %.3g against 2", e+1, got, worst)
	}
}

// The same seed gives the same run, event for event.
func TestSimSameSeedSameTrace(t *testing.T) {
	run := func() uint64 {
		net := newAggNet(t, 6, 100, 0.02, aggregation.PushPullConfig{Function: aggregation.Sum}, uniform(6))
		net.s.RunFor(40 * net.cycle())
		return net.s.TraceHash()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("trace hashes differ: %x %x", a, b)
	}
}
