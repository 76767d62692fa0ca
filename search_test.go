package unsserv

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
)

// searchNetwork joins n mocknet hosts (10 ms links) to one network, each through one
// to three earlier hosts, and starts the search service on each. Call it inside a
// synctest bubble.
func searchNetwork(t *testing.T, n int, profile Profile) ([]p2phost.Host, []*Search, func()) {
	t.Helper()
	mn, hosts := mockHosts(t, n)
	ms := joinMock(t, hosts, "search.net", profile, 3)
	ss := make([]*Search, n)
	for i, m := range ms {
		// The quickstart line: searching = get_searching_service(membership, "searching.id")
		s, err := NewSearch(context.Background(), m, "searching.id", Seed(uint64(100+i)))
		if err != nil {
			t.Fatal(err)
		}
		ss[i] = s
	}
	return hosts, ss, func() {
		for i := range ss {
			_ = ss[i].Leave()
			_ = ms[i].Leave()
		}
		_ = mn.Close()
	}
}

// TestMocknetSearchQuickstart runs the quickstart's search lines on 12 real hosts
// (mocknet, 10 ms links, virtual time), for each profile:
//
//	await searching.publish("data.id", b"data")
//	data = await searching.search("data.id")
//
// A search from another node returns the bytes as published and the node that holds
// them; a search for an id nobody published ends with ErrNotFound before the context's
// deadline (and wraps the context's error when the context ends first); an oversized
// Publish says what the limit is and how to raise it; an unpublished id is no longer
// found; after Leave, calls return ErrClosed.
func TestMocknetSearchQuickstart(t *testing.T) {
	for _, tc := range []struct {
		profile   Profile
		algorithm string
	}{{Stable, "abloom"}, {Extreme, "kwalker"}} {
		t.Run(tc.algorithm, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hosts, ss, done := searchNetwork(t, 12, tc.profile)
				defer done()
				if ss[0].Algorithm() != tc.algorithm {
					t.Fatalf("algorithm %s, want %s (the overlay's profile)", ss[0].Algorithm(), tc.algorithm)
				}
				time.Sleep(3 * time.Second) // the overlay settles
				synctest.Wait()
				ctx := context.Background()

				if err := ss[0].Publish(ctx, "data.id", []byte("data")); err != nil {
					t.Fatal(err)
				}
				if got := ss[0].Published(); len(got) != 1 || got[0] != "data.id" {
					t.Fatalf("Published() = %v", got)
				}
				sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				res, err := ss[7].Search(sctx, "data.id")
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(res.Data, []byte("data")) || res.From.ID != hosts[0].ID() || len(res.From.Addrs) == 0 || res.Hops < 1 {
					t.Fatalf("search: %q from %v (addrs %v), %d hops; want \"data\" from %v", res.Data, res.From, res.From.Addrs, res.Hops, hosts[0].ID())
				}
				// Searched where it is published: at once, no hops.
				res, err = ss[0].Search(ctx, "data.id")
				if err != nil || res.Hops != 0 || res.From.ID != hosts[0].ID() || string(res.Data) != "data" {
					t.Fatalf("local search: %+v, %v", res, err)
				}

				// Absence: ErrNotFound before the deadline, from the core giving up.
				deadline := time.Now().Add(20 * time.Second)
				sctx, cancel = context.WithDeadline(ctx, deadline)
				_, err = ss[3].Search(sctx, "missing.id")
				cancel()
				if !errors.Is(err, ErrNotFound) || errors.Is(err, context.DeadlineExceeded) || !time.Now().Before(deadline) {
					t.Fatalf("missing id: %v at %v before the deadline", err, deadline.Sub(time.Now()))
				}
				if !strings.Contains(err.Error(), `search "missing.id": not found after`) {
					t.Fatalf("message: %v", err)
				}
				// The context ends first: both errors.
				sctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
				_, err = ss[3].Search(sctx, "missing.id")
				cancel()
				if !errors.Is(err, ErrNotFound) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("missing id, short context: %v", err)
				}

				// Oversized data: a clear error, nothing published.
				err = ss[1].Publish(ctx, "big.id", make([]byte, 64<<10+1))
				if err == nil || !strings.Contains(err.Error(), "SearchDataLimit") || !strings.Contains(err.Error(), "65536") {
					t.Fatalf("oversized publish: %v", err)
				}
				if len(ss[1].Published()) != 0 {
					t.Fatal("oversized data published")
				}

				// Unpublished: not found any more.
				if err := ss[0].Unpublish(ctx, "data.id"); err != nil {
					t.Fatal(err)
				}
				sctx, cancel = context.WithTimeout(ctx, 20*time.Second)
				_, err = ss[7].Search(sctx, "data.id")
				cancel()
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("unpublished id: %v", err)
				}

				if err := ss[7].Leave(); err != nil {
					t.Fatal(err)
				}
				if _, err := ss[7].Search(ctx, "data.id"); !errors.Is(err, ErrClosed) {
					t.Fatalf("search after Leave: %v", err)
				}
				if err := ss[7].Publish(ctx, "x", nil); !errors.Is(err, ErrClosed) {
					t.Fatalf("publish after Leave: %v", err)
				}
				st := ss[0].Stats()
				if st.Algorithm != tc.algorithm || st.Found != 1 {
					t.Fatalf("stats %+v", st)
				}
			})
		})
	}
}

func TestSearchOptions(t *testing.T) {
	for _, o := range []Option{SearchDataLimit(0), SearchDataLimit(32 << 20), SearchTimeout(0)} {
		if _, err := buildOptions([]Option{o}); err == nil {
			t.Fatal("bad option accepted")
		}
	}
	if SearchProtocol("x") != "/unsserv/search/x" {
		t.Fatal(SearchProtocol("x"))
	}
}
