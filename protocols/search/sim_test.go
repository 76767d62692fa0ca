package search_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
	"github.com/unsserv/go-unsserv/sim"
)

// searchNet runs one search core per node in the simulator over a fixed random overlay
// (a ring plus random chords: connected, degree about 5), standing in for the
// membership.
type searchNet struct {
	s       *sim.Sim
	ids     []peer.ID
	found   map[uint64]search.Found
	missing map[uint64]search.NotFound
	ended   map[uint64]time.Time
	next    uint64
}

func newSearchNet(t testing.TB, seed uint64, n int, newCore func(id peer.ID, rng *rand.Rand) (protocols.Core, error)) *searchNet {
	t.Helper()
	ids, _ := sim.PeerIDs(seed, n)
	net := &searchNet{ids: ids, found: map[uint64]search.Found{}, missing: map[uint64]search.NotFound{}, ended: map[uint64]time.Time{}}
	s, err := sim.New(sim.Config{
		Seed: seed, Latency: sim.Uniform{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		NewMessage: func() proto.Message { return new(search.Message) },
		Kind:       func(m proto.Message) string { return m.(*search.Message).Kind() },
		OnEvent: func(now time.Time, _ peer.ID, ev protocols.Output) {
			switch e := ev.(type) {
			case search.Found:
				net.found[e.ID], net.ended[e.ID] = e, now
			case search.NotFound:
				net.missing[e.ID], net.ended[e.ID] = e, now
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	net.s = s
	adj := map[peer.ID][]peer.ID{}
	link := func(a, b peer.ID) {
		if a != b && !slices.Contains(adj[a], b) {
			adj[a] = append(adj[a], b)
			adj[b] = append(adj[b], a)
		}
	}
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range ids {
		link(ids[i], ids[(i+1)%n])
		link(ids[i], ids[r.IntN(n)])
		link(ids[i], ids[r.IntN(n)])
	}
	for i, id := range ids {
		c, err := newCore(id, sim.NodeRand(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Add(id, c)
		_ = s.Input(id, protocols.Neighbours{Peers: adj[id]})
	}
	return net
}

func (n *searchNet) publish(i int, key string) {
	_ = n.s.Input(n.ids[i], protocols.Call{Req: search.Publish{Key: key, Data: []byte("data of " + key)}})
}

func (n *searchNet) unpublish(i int, key string) {
	_ = n.s.Input(n.ids[i], protocols.Call{Req: search.Unpublish{Key: key}})
}

func (n *searchNet) search(i int, key string) uint64 {
	n.next++
	_ = n.s.Input(n.ids[i], protocols.Call{Req: search.Search{ID: n.next, Key: key}})
	return n.next
}

var simCores = []struct {
	name    string
	newCore func(id peer.ID, rng *rand.Rand) (protocols.Core, error)
	warmup  time.Duration
}{
	{"kwalker", func(id peer.ID, r *rand.Rand) (protocols.Core, error) {
		return search.NewKWalker(id, search.KWalkerConfig{}, r)
	}, 0},
	{"abloom", func(id peer.ID, r *rand.Rand) (protocols.Core, error) {
		return search.NewABloom(id, search.ABloomConfig{}, r)
	}, 4 * 5 * time.Second},
	{"flood", func(id peer.ID, r *rand.Rand) (protocols.Core, error) {
		return search.NewFlood(id, search.FloodConfig{}, r)
	}, 0},
}

// On 300 nodes, with 10 keys each on 3 random nodes (1%): searches from random nodes
// find every key, with the bytes as published and the node that answered; searches
// for a key nobody holds end with NotFound, in bounded virtual time; an unpublished
// key is no longer found.
func TestSimSearch(t *testing.T) {
	const n = 300
	for _, tc := range simCores {
		t.Run(tc.name, func(t *testing.T) {
			net := newSearchNet(t, 11, n, tc.newCore)
			r := rand.New(rand.NewPCG(3, 3))
			holders := map[string][]int{}
			for k := range 10 {
				key := fmt.Sprintf("key-%d", k)
				for _, i := range r.Perm(n)[:3] {
					net.publish(i, key)
					holders[key] = append(holders[key], i)
				}
			}
			net.s.RunFor(tc.warmup + time.Second)
			var ids []uint64
			var keys []string
			for q := range 100 {
				key := fmt.Sprintf("key-%d", q%10)
				ids = append(ids, net.search(r.IntN(n), key))
				keys = append(keys, key)
			}
			start := net.s.Now()
			net.s.RunFor(12 * time.Second)
			for k, id := range ids {
				f, ok := net.found[id]
				if !ok {
					t.Fatalf("search %d for %s: not found (%+v)", id, keys[k], net.missing[id])
				}
				if string(f.Data) != "data of "+keys[k] || !slices.Contains(holders[keys[k]], slices.Index(net.ids, f.From)) {
					t.Fatalf("search %d for %s: %q from a node that does not hold it", id, keys[k], f.Data)
				}
			}
			// Absence: every search ends with NotFound within the timeout.
			var absent []uint64
			for range 10 {
				absent = append(absent, net.search(r.IntN(n), "nobody-has-it"))
			}
			start = net.s.Now()
			net.s.RunFor(11 * time.Second)
			var slowest time.Duration
			for _, id := range absent {
				if _, ok := net.missing[id]; !ok {
					t.Fatalf("search %d for a missing key: no NotFound (found: %v)", id, net.found[id].From)
				}
				slowest = max(slowest, net.ended[id].Sub(start))
			}
			t.Logf("%s: absence reported within %v", tc.name, slowest)
			if tc.name != "flood" && slowest > 8*time.Second {
				t.Fatalf("absence took %v: walkers should be accounted for before the timeout", slowest)
			}
			// Unpublish every replica of key-0: no longer found (ABloom: the filters may
			// still point at it; the search must end all the same).
			for _, i := range holders["key-0"] {
				net.unpublish(i, "key-0")
			}
			var gone []uint64
			for range 5 {
				gone = append(gone, net.search(r.IntN(n), "key-0"))
			}
			net.s.RunFor(11 * time.Second)
			for _, id := range gone {
				if f, ok := net.found[id]; ok {
					t.Fatalf("unpublished key found at %s", f.From)
				}
				if _, ok := net.missing[id]; !ok {
					t.Fatalf("search for an unpublished key did not end")
				}
			}
		})
	}
}

// ABloom: when one replica is withdrawn, stale filters still point at it; a search from
// right next to it still finds the other replica.
func TestSimABloomStaleMatch(t *testing.T) {
	const n = 300
	net := newSearchNet(t, 5, n, simCores[1].newCore)
	net.publish(10, "k")
	net.publish(200, "k")
	net.s.RunFor(30 * time.Second)
	net.unpublish(10, "k")
	var ids []uint64
	for _, i := range []int{10, 11, 9, 12} { // node 10 and its ring neighbours
		ids = append(ids, net.search(i, "k"))
	}
	net.s.RunFor(5 * time.Second)
	for _, id := range ids {
		f, ok := net.found[id]
		if !ok || f.From != net.ids[200] {
			t.Fatalf("search %d: found %v from %v, want the other replica", id, ok, f.From)
		}
	}
}

// The same seed gives the same trace.
func TestSimDeterministic(t *testing.T) {
	for _, tc := range simCores {
		var hashes [2]uint64
		for run := range hashes {
			net := newSearchNet(t, 8, 100, tc.newCore)
			net.publish(3, "k")
			net.s.RunFor(tc.warmup)
			for i := range 10 {
				net.search(i*7, "k")
			}
			net.s.RunFor(5 * time.Second)
			hashes[run] = net.s.TraceHash()
		}
		if hashes[0] != hashes[1] {
			t.Fatalf("%s: two runs with one seed differ", tc.name)
		}
	}
}
