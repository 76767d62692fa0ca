package unsserv

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// portHosts makes n mocknet hosts listening on /ip4/127.0.0.1/tcp/<7771+i>, as the
// quickstart's peers, with 10 ms links, all linked.
func portHosts(t *testing.T, n int) (mocknet.Mocknet, []p2phost.Host) {
	t.Helper()
	mn := mocknet.New()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: 10 * time.Millisecond})
	hosts := make([]p2phost.Host, n)
	for i := range hosts {
		sk, _, err := crypto.GenerateEd25519Key(crand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 7771+i)))
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

// portOf returns the first TCP or UDP port among addrs.
func portOf(addrs []ma.Multiaddr) (int, bool) {
	for _, a := range addrs {
		for _, code := range []int{ma.P_TCP, ma.P_UDP} {
			if v, err := a.ValueForProtocol(code); err == nil {
				if p, err := strconv.Atoi(v); err == nil {
					return p, true
				}
			}
		}
	}
	return 0, false
}

// portDistance is the quickstart's ranking function in Go:
//
//	def port_distance(node: Node):
//	    my_port = 7771
//	    ip, port = node.address_info
//	    return my_port - port
//
// with this node's own port for my_port (the seed's 7771 is the first node's), the
// port taken out of the node's addresses, and the absolute distance (the seed's
// difference is negative for every higher port, which would rank the farthest best).
func portDistance(h p2phost.Host) func(Node) float64 {
	myPort, _ := portOf(h.Addrs())
	return func(n Node) float64 {
		port, ok := portOf(n.Addrs)
		if !ok {
			return math.Inf(1)
		}
		return math.Abs(float64(myPort - port))
	}
}

// clusterGraph is the clustered neighbour relation, for connectivity.
func clusterGraph(cs []*Clustering) overlayGraph {
	g := overlayGraph{}
	for _, c := range cs {
		var ids []peer.ID
		for _, n := range c.Neighbours() {
			ids = append(ids, n.ID)
		}
		g[c.Host().ID()] = ids
	}
	return g
}

// meanCost is the mean port distance of the neighbour links of the given neighbour
// lists (node i on port 7771+i).
func meanCost(hosts []p2phost.Host, lists [][]Node) float64 {
	sum, k := 0.0, 0
	for i, ns := range lists {
		my, _ := portOf(hosts[i].Addrs())
		for _, n := range ns {
			p, ok := portOf(n.Addrs)
			if !ok {
				p, _ = portOf(hosts[slices.IndexFunc(hosts, func(h p2phost.Host) bool { return h.ID() == n.ID })].Addrs())
			}
			sum += math.Abs(float64(my - p))
			k++
		}
	}
	return sum / float64(max(k, 1))
}

// TestMocknetClusteringQuickstart runs the quickstart's clustering lines on 30 real
// hosts (mocknet, 10 ms links, virtual time), on ports 7771 to 7800, with the seed's
// port-distance rank:
//
//	clustered_membership = await get_clustering_service(membership, "clustering.id", ranking_function=port_distance)
//
// T-Man (Extreme): every node's clustered neighbours converge to its ViewSize nearest
// ports, and Ranked gives them with their port distances, best first. X-BOT (Stable):
// the clustered links are cheaper on average than the membership's. In both, the
// clustered overlay is connected, the neighbours come with their addresses, and every
// node's neighbours are reported through OnNeighboursChanged.
func TestMocknetClusteringQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("30-host runs skipped in -short mode")
	}
	const n = 30
	for _, tc := range []struct {
		profile   Profile
		algorithm string
		opts      []Option
	}{
		{Extreme, "tman", []Option{WithTMan(clustering.TManConfig{ViewSize: 4, Interval: time.Second})}},
		{Stable, "xbot", []Option{WithXBOT(clustering.XBOTConfig{OptimizePeriod: time.Second, ShufflePeriod: time.Second})}},
	} {
		t.Run(tc.algorithm, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				mn, hosts := portHosts(t, n)
				defer mn.Close()
				ms := joinMock(t, hosts, "network.id", tc.profile, 7)
				cs := make([]*Clustering, n)
				var mu sync.Mutex
				reported := map[int][]Node{}
				for i, m := range ms {
					cl, err := NewClustering(ctx, m, "clustering.id", portDistance(hosts[i]), append(tc.opts, Seed(uint64(100+i)))...)
					if err != nil {
						t.Fatal(err)
					}
					if cl.Algorithm() != tc.algorithm {
						t.Fatalf("algorithm %s, want %s (the overlay's profile)", cl.Algorithm(), tc.algorithm)
					}
					cl.OnNeighboursChanged(func(ns []Node) {
						mu.Lock()
						reported[i] = ns
						mu.Unlock()
					})
					cs[i] = cl
				}
				defer func() {
					for i := range cs {
						_ = cs[i].Leave()
						_ = ms[i].Leave()
					}
				}()
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				for _, c := range cs {
					if err := c.WaitReady(wctx, 2); err != nil {
						t.Fatal(err)
					}
				}
				cancel()
				time.Sleep(40 * time.Second)
				synctest.Wait()

				var clustered, random [][]Node
				for i, c := range cs {
					ns := c.Neighbours()
					clustered = append(clustered, ns)
					random = append(random, ms[i].Neighbours())
					for _, nd := range ns {
						if len(nd.Addrs) == 0 {
							t.Fatalf("node %d: neighbour %s without addresses", i, nd.ID.ShortString())
						}
					}
					mu.Lock()
					got := nodeIDsOf(reported[i])
					mu.Unlock()
					if !slices.Equal(got, nodeIDsOf(ns)) {
						t.Fatalf("node %d: OnNeighboursChanged last gave %d nodes, Neighbours has %d", i, len(got), len(ns))
					}
				}
				if g := clusterGraph(cs); !g.connected() {
					t.Fatal("the clustered overlay is not connected")
				}
				before, after := meanCost(hosts, random), meanCost(hosts, clustered)
				t.Logf("%s: mean port distance of the membership's links %.2f, of the clustered links %.2f", tc.algorithm, before, after)
				if after >= before {
					t.Fatalf("clustered links cost %.2f on average, the membership's %.2f: no bias", after, before)
				}
				if tc.algorithm != "tman" {
					return
				}
				// T-Man: the 4 nearest ports, ranked by distance.
				good, all := 0, 0
				for i, c := range cs {
					rs := c.Ranked()
					for k, r := range rs {
						p, _ := portOf(r.Addrs)
						if d := math.Abs(float64(7771 + i - p)); r.Rank != d {
							t.Fatalf("node %d: %s ranked %v, its port distance is %v", i, r.ID.ShortString(), r.Rank, d)
						}
						if k > 0 && rs[k-1].Rank > r.Rank {
							t.Fatalf("node %d: Ranked not best first: %v", i, rs)
						}
						if idealPort(i, n, p-7771) {
							good++
						}
						all++
					}
				}
				if frac := float64(good) / float64(n*4); frac < 0.95 || all != n*4 {
					t.Fatalf("%d of %d clustered neighbours are among the 4 nearest ports (%d entries)", good, n*4, all)
				}
			})
		})
	}
}

// idealPort reports whether node j is among the 4 nearest of node i on a line of n.
func idealPort(i, n, j int) bool {
	var ds []int
	for k := 0; k < n; k++ {
		if k != i {
			ds = append(ds, int(math.Abs(float64(k-i))))
		}
	}
	slices.Sort(ds)
	return j != i && int(math.Abs(float64(j-i))) <= ds[3]
}

func nodeIDsOf(ns []Node) []peer.ID {
	ids := make([]peer.ID, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

// Another service runs over a *Clustering: a broadcast from one node over a T-Man
// (Extreme) or X-BOT (Stable) clustered overlay reaches every other node, and the
// dissemination follows the clustering's profile. The metadata of the membership (Meta option) reaches the
// other nodes' rank.
func TestMocknetServiceOverClustering(t *testing.T) {
	if testing.Short() {
		t.Skip("20-host run skipped in -short mode")
	}
	const n = 20
	for _, tc := range []struct {
		profile   Profile
		opts      []Option // of the membership
		clOpts    []Option
		broadcast string // the dissemination algorithm that follows the profile
	}{
		{Extreme, []Option{Extreme, WithNewscast(membership.NewscastConfig{Interval: time.Second})},
			[]Option{WithTMan(clustering.TManConfig{ViewSize: 4, Interval: time.Second})}, "lpbcast"},
		{Stable, []Option{Stable}, []Option{WithXBOT(clustering.XBOTConfig{OptimizePeriod: time.Second})}, "plumtree"},
	} {
		t.Run(tc.profile.String(), func(t *testing.T) { serviceOverClustering(t, n, tc.opts, tc.clOpts, tc.broadcast) })
	}
}

func serviceOverClustering(t *testing.T, n int, mOpts, clOpts []Option, broadcast string) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mn, hosts := portHosts(t, n)
		defer mn.Close()
		ms := make([]*Membership, n)
		for i, h := range hosts {
			opts := append([]Option{Seed(uint64(i)), Meta([]byte(strconv.Itoa(i)))}, mOpts...)
			if i > 0 {
				opts = append(opts, Bootstrap(peer.AddrInfo{ID: hosts[i-1].ID()}))
			}
			m, err := JoinNetwork(ctx, h, "network.id", opts...)
			if err != nil {
				t.Fatal(err)
			}
			ms[i] = m
		}
		var metaSeen sync.Map
		cs := make([]*Clustering, n)
		got := make(chan string, 4*n)
		ds := make([]*Dissemination, n)
		for i, m := range ms {
			me := i
			rank := func(nd Node) float64 {
				v, err := strconv.Atoi(string(nd.Meta))
				if err != nil {
					return math.Inf(1)
				}
				metaSeen.Store(nd.ID, true)
				return math.Abs(float64(me - v))
			}
			cl, err := NewClustering(ctx, m, "clustering.id", rank, clOpts...)
			if err != nil {
				t.Fatal(err)
			}
			cs[i] = cl
			d, err := NewDissemination(ctx, cl, "dissemination.id", func(b []byte) { got <- fmt.Sprintf("%d:%s", me, b) })
			if err != nil {
				t.Fatal(err)
			}
			if d.Algorithm() != broadcast {
				t.Fatalf("dissemination over the clustering runs %s, want %s", d.Algorithm(), broadcast)
			}
			ds[i] = d
		}
		defer func() {
			for i := range cs {
				_ = ds[i].Leave()
				_ = cs[i].Leave()
				_ = ms[i].Leave()
			}
		}()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if !clusterGraph(cs).connected() {
			t.Fatal("clustered overlay not connected")
		}
		for i, c := range cs {
			for _, nd := range c.Neighbours() {
				if string(nd.Meta) == "" {
					t.Fatalf("node %d: neighbour without metadata", i)
				}
			}
		}
		if err := ds[0].Broadcast(ctx, []byte("over the clustered overlay")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second)
		synctest.Wait()
		close(got)
		var recv []string
		for s := range got {
			recv = append(recv, s)
		}
		if len(recv) != n-1 {
			t.Fatalf("%d of %d nodes got the broadcast: %v", len(recv), n-1, recv)
		}
	})
}

// TestClusteringErrors: bad arguments and options are refused with a clear error; Leave
// is idempotent, WaitReady after it says ErrClosed; a NaN rank counts as +Inf.
func TestClusteringErrors(t *testing.T) {
	mn, err := mocknet.FullMeshLinked(1)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	h := mn.Hosts()[0]
	ctx := context.Background()
	m, err := JoinNetwork(ctx, h, "net", Extreme)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	zero := func(Node) float64 { return 0 }
	for _, tc := range []struct {
		o    Overlay
		id   string
		rank func(Node) float64
		opts []Option
		want string
	}{
		{nil, "c", zero, nil, "overlay is nil"},
		{m, "", zero, nil, "must be non-empty"},
		{m, "a b", zero, nil, "without spaces"},
		{m, "c", nil, nil, "rank is nil"},
		{m, "c", zero, []Option{Bootstrap(peer.AddrInfo{ID: h.ID()})}, "Bootstrap"},
		{m, "c", zero, []Option{WithTMan(clustering.TManConfig{ViewSize: -1})}, "ViewSize"},
		{m, "c", zero, []Option{WithXBOT(clustering.XBOTConfig{ActiveView: -1})}, "ActiveView"},
		{m, "c", zero, []Option{Profile(7)}, "unknown profile"},
	} {
		_, err := NewClustering(ctx, tc.o, tc.id, tc.rank, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewClustering(%q, %v): error %v, want one mentioning %q", tc.id, tc.opts, err, tc.want)
		}
	}
	c, err := NewClustering(ctx, m, "c", func(Node) float64 { return math.NaN() }, Meta([]byte("mine")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Algorithm() != "tman" || c.Profile() != Extreme || string(c.Meta()) != "mine" {
		t.Fatalf("algorithm %s, profile %s, meta %q", c.Algorithm(), c.Profile(), c.Meta())
	}
	if r := c.coreRank(clustering.Node{ID: h.ID()}); !math.IsInf(r, 1) {
		t.Fatalf("NaN rank gave %v to the core, want +Inf", r)
	}
	if ClusteringProtocol("c") != "/unsserv/clustering/c" {
		t.Fatalf("protocol %s", ClusteringProtocol("c"))
	}
	if err := c.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	if err := c.WaitReady(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitReady after Leave: %v", err)
	}
	if st := c.Stats(); st.Algorithm != "tman" {
		t.Fatalf("stats %+v", st)
	}
}
