package unsserv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// mockHosts makes n mocknet hosts with 10 ms links, all linked.
func mockHosts(t testing.TB, n int) (mocknet.Mocknet, []p2phost.Host) {
	t.Helper()
	mn := mocknet.New()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: 10 * time.Millisecond})
	hosts := make([]p2phost.Host, n)
	for i := range hosts {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = h
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	return mn, hosts
}

// joinMock joins every host to network netID (membership periods of 1 s), each
// through 1 to 3 earlier hosts drawn from seed.
func joinMock(t testing.TB, hosts []p2phost.Host, netID string, profile Profile, seed uint64) []*Membership {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	ms := make([]*Membership, len(hosts))
	for i, h := range hosts {
		opts := []Option{profile, Seed(uint64(i)), WithHyParView(membership.HyParViewConfig{ShuffleInterval: time.Second}),
			WithNewscast(membership.NewscastConfig{Interval: time.Second})}
		if i > 0 {
			var bs []any
			for _, j := range rng.Perm(min(i, 3))[:1+rng.IntN(min(i, 3))] {
				bs = append(bs, peer.AddrInfo{ID: hosts[j].ID()})
			}
			opts = append(opts, Bootstrap(bs...))
		}
		m, err := JoinNetwork(context.Background(), h, netID, opts...)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		ms[i] = m
	}
	return ms
}

// received records what each node's handler got: broadcast (origin, seq) -> count.
type received struct {
	mu sync.Mutex
	n  map[peer.ID]map[string]int
}

func (r *received) handler(self peer.ID) Option {
	return OnBroadcast(func(b Broadcast) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.n == nil {
			r.n = map[peer.ID]map[string]int{}
		}
		if r.n[self] == nil {
			r.n[self] = map[string]int{}
		}
		r.n[self][fmt.Sprintf("%s/%d/%s", b.From, b.Seq, b.Data)]++
	})
}

// TestMocknetFiftyExactlyOnce: 50 real hosts (mocknet, 10 ms links, virtual time), each
// algorithm in turn: every host receives every broadcast of the others exactly once,
// including a payload broadcast twice (two broadcasts).
func TestMocknetFiftyExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("50-host runs skipped in -short mode")
	}
	const n = 50
	for _, tc := range []struct {
		name    string
		profile Profile
		opts    []Option
	}{
		{"plumtree", Stable, nil},
		{"brisa", Stable, []Option{OneToMany}},
		{"lpbcast", Extreme, nil},
		{"mon", Extreme, []Option{OneToMany}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				mn, hosts := mockHosts(t, n)
				defer mn.Close()
				ms := joinMock(t, hosts, "bcast.net", tc.profile, 1)
				var got received
				ds := make([]*Dissemination, n)
				for i, m := range ms {
					opts := append([]Option{tc.profile, Seed(uint64(100 + i)), got.handler(hosts[i].ID())}, tc.opts...)
					d, err := NewDissemination(ctx, m, "news", nil, opts...)
					if err != nil {
						t.Fatal(err)
					}
					if d.Algorithm() != tc.name {
						t.Fatalf("algorithm %s, want %s", d.Algorithm(), tc.name)
					}
					ds[i] = d
				}
				defer func() {
					for i := range ds {
						_ = ds[i].Leave()
						_ = ms[i].Leave()
					}
				}()
				time.Sleep(5 * time.Second) // the overlay settles
				synctest.Wait()

				rng := rand.New(rand.NewPCG(3, 4))
				type sent struct {
					from peer.ID
					key  string
				}
				var all []sent
				for k := 0; k < 20; k++ {
					i := rng.IntN(n)
					payload := fmt.Sprintf("message %d", k)
					if k == 10 {
						payload = "message 9" // the same payload again: a second broadcast
					}
					if err := ds[i].Broadcast(ctx, []byte(payload)); err != nil {
						t.Fatal(err)
					}
					seq := ds[i].seq.Load()
					all = append(all, sent{hosts[i].ID(), fmt.Sprintf("%s/%d/%s", hosts[i].ID(), seq, payload)})
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(10 * time.Second)
				synctest.Wait()
				got.mu.Lock()
				defer got.mu.Unlock()
				var problems []string
				for _, h := range hosts {
					for _, s := range all {
						c := got.n[h.ID()][s.key]
						want := 1
						if s.from == h.ID() {
							want = 0
						}
						if c != want {
							problems = append(problems, fmt.Sprintf("%s got %s %d times", h.ID().ShortString(), s.key[len(s.key)-12:], c))
						}
					}
				}
				if len(problems) > 0 {
					t.Fatalf("%d wrong deliveries, e.g. %v", len(problems), problems[:min(5, len(problems))])
				}
				var st DisseminationStats
				for _, d := range ds {
					s := d.Stats()
					st.PayloadsIn += s.PayloadsIn
					st.Delivered += s.Delivered
					st.Rejected += s.Rejected
					st.Duplicates += s.Duplicates
				}
				if st.Rejected != 0 {
					t.Fatalf("%d broadcasts rejected among honest peers", st.Rejected)
				}
				t.Logf("%s: %d deliveries, %d payload copies received (RMR %.2f), %d duplicates suppressed above the core",
					tc.name, st.Delivered, st.PayloadsIn, float64(st.PayloadsIn)/float64(st.Delivered)-1, st.Duplicates)
			})
		})
	}
}

// twoNodes starts a two-node network on mocknet with a dissemination service on each.
func twoNodes(t *testing.T, opts ...Option) (hs []p2phost.Host, ds []*Dissemination, got chan Broadcast) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mn, err := mocknet.FullMeshLinked(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mn.Close() })
	hs = mn.Hosts()
	a, err := JoinNetwork(ctx, hs[0], "two.net")
	if err != nil {
		t.Fatal(err)
	}
	b, err := JoinNetwork(ctx, hs[1], "two.net", Bootstrap(peer.AddrInfo{ID: hs[0].ID()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Leave(); b.Leave() })
	for _, m := range []*Membership{a, b} {
		if err := m.WaitReady(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	got = make(chan Broadcast, 100)
	for _, m := range []*Membership{a, b} {
		d, err := NewDissemination(ctx, m, "two", nil, append([]Option{OnBroadcast(func(b Broadcast) { got <- b })}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Leave() })
		ds = append(ds, d)
	}
	return hs, ds, got
}

func waitBroadcast(t *testing.T, got chan Broadcast) Broadcast {
	t.Helper()
	select {
	case b := <-got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no broadcast arrived")
	}
	return Broadcast{}
}

func TestBroadcastOversizedRefused(t *testing.T) {
	hs, ds, got := twoNodes(t, MaxPayload(1000))
	ctx := context.Background()
	err := ds[0].Broadcast(ctx, make([]byte, 1001))
	if err == nil || !strings.Contains(err.Error(), "limit is 1000") {
		t.Fatalf("oversized broadcast: %v, want an error naming the limit", err)
	}
	if err := ds[0].Broadcast(ctx, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	b := waitBroadcast(t, got)
	if b.From != hs[0].ID() || len(b.Data) != 1000 {
		t.Fatalf("got %d bytes from %s", len(b.Data), b.From)
	}
}

// TestForgedBroadcastRejected: a peer that sends a broadcast with a bad signature, or
// one it altered, has its stream reset; nothing reaches the application; honest
// broadcasts still flow.
func TestForgedBroadcastRejected(t *testing.T) {
	var errs []error
	var mu sync.Mutex
	hs, ds, got := twoNodes(t, OnError(func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	good := &dissemination.Broadcast{Seq: 1, Payload: []byte("genuine")}
	if err := dissemination.Sign(hs[1].Peerstore().PrivKey(hs[1].ID()), good); err != nil {
		t.Fatal(err)
	}
	altered := proto.Clone(good).(*dissemination.Broadcast)
	altered.Payload = []byte("altered")
	forged := &dissemination.Broadcast{Origin: []byte(hs[1].ID()), Seq: 2, Payload: []byte("forged"), Signature: []byte("nope")}
	for _, b := range []*dissemination.Broadcast{altered, forged} {
		st, err := hs[2].NewStream(ctx, hs[0].ID(), DisseminationProtocol("two"))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := proto.Marshal(&dissemination.Message{Body: &dissemination.Message_Gossip{Gossip: &dissemination.Gossip{Broadcast: b}}})
		if _, err := st.Write(append(binary.AppendUvarint(nil, uint64(len(m))), m...)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, st); !errors.Is(err, network.ErrReset) {
			t.Fatalf("stream with a bad broadcast ended with %v, want a reset", err)
		}
	}
	if r := ds[0].Stats().Rejected; r != 2 {
		t.Fatalf("rejected %d, want 2", r)
	}
	mu.Lock()
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "signature") {
		t.Fatalf("errors reported: %v", errs)
	}
	mu.Unlock()
	if err := ds[1].Broadcast(ctx, []byte("honest")); err != nil {
		t.Fatal(err)
	}
	if b := waitBroadcast(t, got); !bytes.Equal(b.Data, []byte("honest")) {
		t.Fatalf("got %q, want the honest broadcast only", b.Data)
	}
}

// TestSlowHandlerOverflowReported: a handler that does not keep up loses broadcasts
// beyond the queue, and each loss is counted and reported; the protocol goes on.
func TestSlowHandlerOverflowReported(t *testing.T) {
	release := make(chan struct{})
	var overflows int
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mn, err := mocknet.FullMeshLinked(2)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts()
	a, _ := JoinNetwork(ctx, hs[0], "slow.net")
	defer a.Leave()
	b, err := JoinNetwork(ctx, hs[1], "slow.net", Bootstrap(peer.AddrInfo{ID: hs[0].ID()}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Leave()
	for _, m := range []*Membership{a, b} {
		if err := m.WaitReady(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	src, err := NewDissemination(ctx, a, "slow", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Leave()
	handled := make(chan struct{}, 100)
	entered := make(chan struct{}, 100)
	dst, err := NewDissemination(ctx, b, "slow", func([]byte) { entered <- struct{}{}; <-release; handled <- struct{}{} }, DeliveryQueue(2),
		OnError(func(err error) {
			if errors.Is(err, ErrDeliveryOverflow) {
				mu.Lock()
				overflows++
				mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Leave()
	for i := 0; i < 10; i++ {
		if err := src.Broadcast(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The first is in the handler before the others come (else it may still be
			// queued when they do, and one more is dropped).
			select {
			case <-entered:
			case <-ctx.Done():
				t.Fatal("the first broadcast never reached the handler")
			}
		}
	}
	// 1 in the handler, 2 queued, 7 dropped.
	deadline := time.Now().Add(20 * time.Second)
	for dst.Stats().Overflow < 7 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	for i := 0; i < 3; i++ {
		select {
		case <-handled:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d broadcasts handled; stats %+v", i, dst.Stats())
		}
	}
	st := dst.Stats()
	mu.Lock()
	defer mu.Unlock()
	if st.Overflow != 7 || overflows != 7 || st.Delivered != 3 {
		t.Fatalf("overflow %d, reported %d, delivered %d; want 7, 7, 3", st.Overflow, overflows, st.Delivered)
	}
}

func TestDisseminationOptionErrors(t *testing.T) {
	ctx := context.Background()
	mn, err := mocknet.FullMeshLinked(1)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	m, err := JoinNetwork(ctx, mn.Hosts()[0], "opts.net")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	h := func([]byte) {}
	for _, tc := range []struct {
		name string
		o    Overlay
		id   string
		h    func([]byte)
		opts []Option
		want string
	}{
		{"nil overlay", nil, "x", h, nil, "overlay is nil"},
		{"empty id", m, "", h, nil, "must be non-empty"},
		{"no handler", m, "x", nil, nil, "no handler"},
		{"bootstrap", m, "x", h, []Option{Bootstrap(peer.AddrInfo{ID: mn.Hosts()[0].ID()})}, "options of JoinNetwork"},
		{"payload limit", m, "x", h, []Option{MaxPayload(0)}, "between 1 byte"},
		{"queue", m, "x", h, []Option{DeliveryQueue(-1)}, "positive queue"},
		{"plumtree config", m, "x", h, []Option{WithPlumtree(dissemination.PlumtreeConfig{Cache: 10, Seen: 5})}, "PlumtreeConfig.Cache"},
	} {
		_, err := NewDissemination(ctx, tc.o, tc.id, tc.h, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	d, err := NewDissemination(ctx, m, "x", h)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := d.Broadcast(ctx, []byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("broadcast after Leave: %v, want ErrClosed", err)
	}
}

// TestLateServiceStartIsPickedUp: a neighbour that starts the service after this node
// sent to it (the send failed: "protocols not supported", and the core dropped the
// neighbour) gets the broadcasts made once it runs the service.
func TestLateServiceStartIsPickedUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mn, err := mocknet.FullMeshLinked(2)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts()
	a, _ := JoinNetwork(ctx, hs[0], "late.net")
	defer a.Leave()
	b, err := JoinNetwork(ctx, hs[1], "late.net", Bootstrap(peer.AddrInfo{ID: hs[0].ID()}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Leave()
	for _, m := range []*Membership{a, b} {
		if err := m.WaitReady(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	da, err := NewDissemination(ctx, a, "late", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer da.Leave()
	if err := da.Broadcast(ctx, []byte("too early")); err != nil {
		t.Fatal(err)
	}
	// The send to b fails (b does not run the service): wait until it is counted.
	for da.Stats().Service.Dropped == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	got := make(chan []byte, 10)
	db, err := NewDissemination(ctx, b, "late", func(p []byte) { got <- p })
	if err != nil {
		t.Fatal(err)
	}
	defer db.Leave()
	// a learns that b now runs the service (identify push) and gives the core its
	// neighbours again; broadcasts reach b well before the periodic resync.
	deadline := time.After(resyncPeriod / 2)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case p := <-got:
			if string(p) == "too early" {
				t.Fatal("the broadcast made before b ran the service arrived")
			}
			return
		case <-tick.C:
			_ = da.Broadcast(ctx, []byte(fmt.Sprintf("later %d", k)))
		case <-deadline:
			t.Fatal("b never got a broadcast after starting the service")
		}
	}
}
