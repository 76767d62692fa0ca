package unsserv

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/unsserv/go-unsserv/protocols/aggregation"
)

// aggNetwork starts n mocknet hosts (10 ms links) joined to one network, each through 1
// to 3 earlier hosts. Call it inside a synctest bubble.
func aggNetwork(t *testing.T, n int, profile Profile) (mocknet.Mocknet, []p2phost.Host, []*Membership) {
	t.Helper()
	mn, hosts := mockHosts(t, n)
	return mn, hosts, joinMock(t, hosts, "network.id", profile, 7)
}

// The seed's quickstart, over real libp2p hosts (mocknet, virtual time):
//
//	aggregation = get_aggregation_service(membership, "aggregation.id", aggregate_value=1, aggregate_type="mean")
//	aggregate = aggregation.get_aggregate()
//	aggregate.add_handler(handler)
//
// Every node's aggregate is 1, and the handler is called with 1.
func TestMocknetAggregationQuickstart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mn, _, ms := aggNetwork(t, 12, Stable)
		defer mn.Close()
		time.Sleep(3 * time.Second) // the overlay settles
		ags := make([]*Aggregation, len(ms))
		for i, membership := range ms {
			aggregation, err := NewAggregation(ctx, membership, "aggregation.id", 1, Mean)
			if err != nil {
				t.Fatal(err)
			}
			ags[i] = aggregation
		}
		var mu sync.Mutex
		var calls []float64
		handler := func(aggregate float64) {
			mu.Lock()
			calls = append(calls, aggregate)
			mu.Unlock()
		}
		stop := ags[3].OnAggregate(handler)
		time.Sleep(10 * time.Second) // a new network: the first epoch starts within a few cycles
		synctest.Wait()
		for i, aggregation := range ags {
			aggregate := aggregation.Aggregate()
			if est := aggregation.Estimate(); aggregate != 1 || !est.Known || est.Epoch == 0 {
				t.Fatalf("node %d: aggregate %v, estimate %+v; want 1", i, aggregate, est)
			}
		}
		mu.Lock()
		n := len(calls)
		for _, c := range calls {
			if c != 1 {
				t.Fatalf("handler called with %v, want 1", c)
			}
		}
		mu.Unlock()
		if n == 0 {
			t.Fatal("handler never called")
		}
		stop()
		time.Sleep(5 * time.Second)
		mu.Lock()
		if len(calls) != n {
			t.Fatalf("handler called %d times after stop", len(calls)-n)
		}
		mu.Unlock()
		st := ags[0].Stats()
		if st.Type != Mean || st.Core.Completed == 0 || st.Service.MsgsOut == 0 {
			t.Fatalf("stats %+v", st)
		}
		if c := ags[0].Estimate().Cycles; c != StableEpochCycles {
			t.Fatalf("epoch of %d cycles over Stable, want %d", c, StableEpochCycles)
		}
		for i := range ags {
			if err := ags[i].Leave(); err != nil {
				t.Fatal(err)
			}
			_ = ms[i].Leave()
		}
	})
}

// Every aggregate type over real hosts, each node i holding the value i+1 (cycles of 250
// ms here): after an epoch every node's final estimate is the true aggregate (mean within
// 1e-6 with the default epoch lengths, max and min exact, count and sum within 1% with 30
// cycles); SetValue counts from the next epoch.
func TestMocknetAggregationTypes(t *testing.T) {
	if testing.Short() {
		t.Skip("mocknet runs skipped in -short mode")
	}
	const n = 16
	for _, tc := range []struct {
		typ     AggregateType
		profile Profile
		epoch   int // 0: the default
		truth   float64
		tol     float64
	}{
		{Mean, Stable, 0, (n + 1) / 2.0, 1e-6},
		{Max, Stable, 30, n, 0},
		{Min, Stable, 30, 1, 0},
		{Sum, Stable, 30, n * (n + 1) / 2, 0.01},
		{Count, Stable, 30, n, 0.01},
		{Mean, Extreme, 0, (n + 1) / 2.0, 1e-6},
	} {
		t.Run(tc.typ.String()+"/"+tc.profile.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				mn, _, ms := aggNetwork(t, n, tc.profile)
				defer mn.Close()
				time.Sleep(3 * time.Second)
				ags := make([]*Aggregation, n)
				for i, m := range ms {
					opts := []Option{Seed(uint64(50 + i)), AggregationPeriod(250 * time.Millisecond)}
					if tc.epoch != 0 {
						opts = append(opts, AggregationEpoch(tc.epoch))
					}
					a, err := NewAggregation(ctx, m, "numbers", float64(i+1), tc.typ, opts...)
					if err != nil {
						t.Fatal(err)
					}
					if a.Type() != tc.typ {
						t.Fatalf("type %v", a.Type())
					}
					ags[i] = a
				}
				defer func() {
					for i := range ags {
						_ = ags[i].Leave()
						_ = ms[i].Leave()
					}
				}()
				// One epoch starts within a few cycles; the next one starts with every
				// node, and its final figures are checked at the start of the third.
				cycles := ags[0].Estimate().Cycles
				time.Sleep(time.Duration(2*cycles+12) * 250 * time.Millisecond)
				synctest.Wait()
				var fe uint64
				var st aggregation.Stats
				var lo, hi = math.Inf(1), math.Inf(-1)
				for _, a := range ags {
					c := a.Stats().Core
					st.Failed += c.Failed
					st.Late += c.Late
					st.Completed += c.Completed
					st.Retransmits += c.Retransmits
					lo, hi = min(lo, a.Estimate().Final), max(hi, a.Estimate().Final)
				}
				t.Logf("%s: exchanges %d completed, %d failed, %d repeats, %d late answers; finals in [%v, %v]", tc.typ, st.Completed, st.Failed, st.Retransmits, st.Late, lo, hi)
				for i, a := range ags {
					est := a.Estimate()
					if est.FinalEpoch == 0 {
						t.Fatalf("node %d completed no epoch: %+v", i, est)
					}
					if fe == 0 {
						fe = est.FinalEpoch
					}
					if d := math.Abs(est.Final-tc.truth) / tc.truth; d > tc.tol {
						t.Fatalf("node %d: final %v of epoch %d, want %v (relative error %.3g > %g)", i, est.Final, est.FinalEpoch, tc.truth, d, tc.tol)
					}
				}
				if tc.typ != Mean || tc.profile != Stable {
					return
				}
				// Everyone's value becomes 5: the running epoch is unchanged, the next
				// one's final figure is 5.
				for _, a := range ags {
					if err := a.SetValue(5); err != nil {
						t.Fatal(err)
					}
				}
				time.Sleep(time.Duration(2*cycles+4) * 250 * time.Millisecond)
				synctest.Wait()
				for i, a := range ags {
					if est := a.Estimate(); est.FinalEpoch < fe+2 || math.Abs(est.Final-5) > 1e-9 {
						t.Fatalf("node %d after SetValue(5): %+v", i, est)
					}
				}
			})
		})
	}
}

func TestAggregationErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mn, _, ms := aggNetwork(t, 2, Stable)
		defer mn.Close()
		defer ms[0].Leave()
		defer ms[1].Leave()
		m := ms[0]
		for _, tc := range []struct {
			name string
			o    Overlay
			id   string
			v    float64
			typ  AggregateType
			opts []Option
		}{
			{"nil overlay", nil, "a", 1, Mean, nil},
			{"empty id", m, "", 1, Mean, nil},
			{"id with space", m, "a b", 1, Mean, nil},
			{"NaN value", m, "a", math.NaN(), Mean, nil},
			{"infinite value", m, "a", math.Inf(1), Mean, nil},
			{"bad type", m, "a", 1, AggregateType(9), nil},
			{"bootstrap", m, "a", 1, Mean, []Option{Bootstrap(peer.AddrInfo{ID: ms[1].Host().ID()})}},
			{"period", m, "a", 1, Mean, []Option{AggregationPeriod(0)}},
			{"epoch", m, "a", 1, Mean, []Option{AggregationEpoch(1)}},
			{"config", m, "a", 1, Mean, []Option{WithPushPull(aggregation.PushPullConfig{Retries: 1, MaxInstances: -2})}},
		} {
			if a, err := NewAggregation(ctx, tc.o, tc.id, tc.v, tc.typ, tc.opts...); err == nil {
				_ = a.Leave()
				t.Errorf("%s: accepted", tc.name)
			}
		}
		a, err := NewAggregation(ctx, m, "a", 1, Count, Extreme, WithPushPull(aggregation.PushPullConfig{Leaders: 2}))
		if err != nil {
			t.Fatal(err)
		}
		if c := a.Estimate().Cycles; c != 30 {
			t.Fatalf("epoch of %d cycles over Extreme, want 30", c)
		}
		if err := a.SetValue(math.NaN()); err == nil {
			t.Fatal("SetValue(NaN) accepted")
		}
		if a.Aggregate() != 0 || a.Estimate().Known {
			t.Fatalf("an estimate before any epoch: %+v", a.Estimate())
		}
		if err := a.Leave(); err != nil {
			t.Fatal(err)
		}
		if err := a.Leave(); err != nil {
			t.Fatal(err)
		}
		if err := a.SetValue(1); !errors.Is(err, ErrClosed) {
			t.Fatalf("SetValue after Leave: %v", err)
		}
		a.OnAggregate(func(float64) {})()
	})
	for _, s := range []string{"mean", " MAX", "min", "sum", "count"} {
		if _, err := ParseAggregateType(s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParseAggregateType("median"); err == nil {
		t.Fatal("median parsed")
	}
	if Count.String() != "count" || AggregateType(7).String() != "AggregateType(7)" {
		t.Fatal(Count.String())
	}
}
