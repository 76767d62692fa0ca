package unsserv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/unsserv/go-unsserv/protocols/sampling"
)

// TestMocknetSamplingQuickstart runs the quickstart's sampling lines on 30 real hosts
// (mocknet, 10 ms links, virtual time), for each profile:
//
//	sampling = await get_sampling_service(membership, "sampling.id")
//	sampled_node = await sampling.get_sample()
//
// Every answer is another member of the network, with its addresses; many samples at
// once, from every node and several per node, do not get in each other's way; and the
// samples spread over the members.
func TestMocknetSamplingQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("30-host runs skipped in -short mode")
	}
	const n = 30
	for _, tc := range []struct {
		profile   Profile
		algorithm string
	}{{Stable, "rwd"}, {Extreme, "mrwb"}} {
		t.Run(tc.algorithm, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				mn, hosts := mockHosts(t, n)
				defer mn.Close()
				ms := joinMock(t, hosts, "sample.net", tc.profile, 7)
				members := map[peer.ID]bool{}
				for _, h := range hosts {
					members[h.ID()] = true
				}
				sas := make([]*Sampling, n)
				for i, m := range ms {
					sa, err := NewSampling(ctx, m, "sampling.id", Seed(uint64(50+i)))
					if err != nil {
						t.Fatal(err)
					}
					if sa.Algorithm() != tc.algorithm {
						t.Fatalf("algorithm %s, want %s (the overlay's profile)", sa.Algorithm(), tc.algorithm)
					}
					sas[i] = sa
				}
				defer func() {
					for i := range sas {
						_ = sas[i].Leave()
						_ = ms[i].Leave()
					}
				}()
				time.Sleep(5 * time.Second) // the overlay settles
				synctest.Wait()

				// The quickstart line, once.
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				node, err := sas[0].Sample(sctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if node.ID == hosts[0].ID() || !members[node.ID] {
					t.Fatalf("sample %s is not another member", node.ID)
				}
				if len(node.Addrs) == 0 {
					t.Fatalf("sample %s comes without addresses", node.ID)
				}

				// Many at once: 4 concurrent Sample calls on every node.
				const per = 4
				var (
					mu     sync.Mutex
					counts = map[peer.ID]int{}
					errs   []error
					wg     sync.WaitGroup
				)
				for i := range sas {
					for k := 0; k < per; k++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
							defer cancel()
							nd, err := sas[i].Sample(sctx)
							mu.Lock()
							defer mu.Unlock()
							switch {
							case err != nil:
								errs = append(errs, err)
							case nd.ID == hosts[i].ID():
								errs = append(errs, fmt.Errorf("node %d sampled itself", i))
							case !members[nd.ID]:
								errs = append(errs, fmt.Errorf("node %d sampled a stranger %s", i, nd.ID))
							default:
								counts[nd.ID]++
							}
						}()
					}
				}
				wg.Wait()
				if len(errs) > 0 {
					t.Fatalf("%d of %d samples went wrong, e.g. %v", len(errs), n*per, errs[0])
				}
				var st SamplingStats
				for _, sa := range sas {
					s := sa.Stats()
					st.Samples += s.Samples
					st.Service.MsgsOut += s.Service.MsgsOut
				}
				if st.Samples != n*per+1 {
					t.Fatalf("%d samples counted, want %d", st.Samples, n*per+1)
				}
				// 120 samples over 30 members: a uniform sampler leaves out about 0.5 of
				// them; a sampler stuck near the asking nodes would miss many.
				if len(counts) < n*2/3 {
					t.Fatalf("samples cover only %d of %d members: %v", len(counts), n, counts)
				}
				t.Logf("%s: %d samples over %d distinct members; %d messages sent in all (overlay upkeep included)",
					tc.algorithm, n*per, len(counts), st.Service.MsgsOut)
			})
		})
	}
}

// An isolated node cannot sample: Sample returns when its context ends, with an error
// that says why, wrapping the context's error.
func TestSampleIsolatedNodeTimesOut(t *testing.T) {
	mn, err := mocknet.FullMeshLinked(1)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	ctx := context.Background()
	m, err := JoinNetwork(ctx, mn.Hosts()[0], "alone.net")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	sa, err := NewSampling(ctx, m, "sampling.id")
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Leave()
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = sa.Sample(sctx)
	if err == nil {
		t.Fatal("an isolated node returned a sample")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no neighbours") || !strings.Contains(err.Error(), "sampling.id") {
		t.Fatalf("unclear error: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Sample returned %v after its context ended", d)
	}
	if st := sa.Stats(); st.Expired != 1 || st.Samples != 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Log(err)
}

// Leave ends the Sample calls in progress with ErrClosed, later ones too, and releases
// every goroutine of the service.
func TestSamplingLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn, err := mocknet.FullMeshLinked(1)
		if err != nil {
			t.Fatal(err)
		}
		defer mn.Close()
		ctx := context.Background()
		m, err := JoinNetwork(ctx, mn.Hosts()[0], "leave.net")
		if err != nil {
			t.Fatal(err)
		}
		defer m.Leave()
		sa, err := NewSampling(ctx, m, "sampling.id", Extreme)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := sa.Sample(ctx) // waits: no neighbour
			done <- err
		}()
		synctest.Wait()
		if err := sa.Leave(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("Sample in progress at Leave: %v", err)
		}
		if _, err := sa.Sample(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Sample after Leave: %v", err)
		}
		if err := sa.Leave(); err != nil {
			t.Fatalf("second Leave: %v", err)
		}
		for _, g := range ourGoroutines() {
			if strings.Contains(g, "(*Sampling)") {
				t.Fatalf("goroutine left after Leave:\n%s", g)
			}
		}
	})
}

func TestSamplingOptionErrors(t *testing.T) {
	mn, err := mocknet.FullMeshLinked(1)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	ctx := context.Background()
	m, err := JoinNetwork(ctx, mn.Hosts()[0], "opts.net")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	for _, tc := range []struct {
		o    Overlay
		id   string
		opts []Option
		want string
	}{
		{nil, "s", nil, "overlay is nil"},
		{m, "", nil, "non-empty"},
		{m, "a b", nil, "without spaces"},
		{m, "s", []Option{SamplingWalkLength(0)}, "SamplingWalkLength(0)"},
		{m, "s", []Option{SamplingWalkTimeout(-time.Second)}, "SamplingWalkTimeout"},
		{m, "s", []Option{WithRWD(sampling.RWDConfig{Quantum: 2})}, "RWDConfig.Quantum"},
		{m, "s", []Option{WithMRWB(sampling.MRWBConfig{WalkConfig: sampling.WalkConfig{MaxPending: -1}})}, "MRWBConfig.MaxPending"},
		{m, "s", []Option{Bootstrap(peer.AddrInfo{ID: mn.Hosts()[0].ID()})}, "options of JoinNetwork"},
		{m, "s", []Option{Profile(7)}, "unknown profile"},
	} {
		if _, err := NewSampling(ctx, tc.o, tc.id, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("want an error containing %q, got %v", tc.want, err)
		}
	}
	// The options reach the core: a one-step walk over two nodes always ends at the
	// other one, never a wrong answer.
	sa, err := NewSampling(ctx, m, "ok", SamplingWalkLength(1), SamplingWalkTimeout(time.Second), Extreme)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Algorithm() != "mrwb" {
		t.Fatalf("Extreme option ignored: %s", sa.Algorithm())
	}
	_ = sa.Leave()
}
