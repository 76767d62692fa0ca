package unsserv

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// "Match the physical topology": 16 mocknet hosts in two regions, 2 ms links within a
// region and 40 ms across (virtual time), clustered by RTTRank over the plain
// membership. The clustered neighbours are mostly in the node's own region: all of
// them with T-Man (4 neighbours, 7 candidates in the region), which so splits the
// clustered overlay in two, and with X-BOT clearly more than the membership's (which
// ignores latency) while its unbiased links keep the overlay connected.
func TestMocknetRTTClustering(t *testing.T) {
	if testing.Short() {
		t.Skip("16-host run skipped in -short mode")
	}
	for _, tc := range []struct {
		profile Profile
		mOpts   []Option
		clOpts  []Option
	}{
		{Extreme, []Option{Extreme, WithNewscast(membership.NewscastConfig{Interval: time.Second})},
			[]Option{WithTMan(clustering.TManConfig{ViewSize: 4, Interval: time.Second})}},
		{Stable, []Option{Stable}, []Option{WithXBOT(clustering.XBOTConfig{OptimizePeriod: time.Second})}},
	} {
		t.Run(tc.profile.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 16
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				mn := mocknet.New()
				defer mn.Close()
				hosts := make([]p2phost.Host, n)
				region := map[peer.ID]int{}
				for i := range hosts {
					h, err := mn.GenPeer()
					if err != nil {
						t.Fatal(err)
					}
					ping.NewPingService(h) // mocknet hosts do not answer pings by themselves
					hosts[i] = h
					region[h.ID()] = i % 2
				}
				for i := range hosts {
					for j := i + 1; j < n; j++ {
						l, err := mn.LinkPeers(hosts[i].ID(), hosts[j].ID())
						if err != nil {
							t.Fatal(err)
						}
						lat := 40 * time.Millisecond
						if i%2 == j%2 {
							lat = 2 * time.Millisecond
						}
						l.SetOptions(mocknet.LinkOptions{Latency: lat})
					}
				}
				ms := make([]*Membership, n)
				cs := make([]*Clustering, n)
				for i, h := range hosts {
					opts := append([]Option{Seed(uint64(i))}, tc.mOpts...)
					if i > 0 {
						opts = append(opts, Bootstrap(peer.AddrInfo{ID: hosts[0].ID()}))
					}
					m, err := JoinNetwork(ctx, h, "rtt.net", opts...)
					if err != nil {
						t.Fatal(err)
					}
					ms[i] = m
					if cs[i], err = NewClustering(ctx, m, "rtt.clustering", RTTRank(ctx, h), append([]Option{Seed(uint64(i))}, tc.clOpts...)...); err != nil {
						t.Fatal(err)
					}
				}
				defer func() {
					for i := range cs {
						_ = cs[i].Leave()
						_ = ms[i].Leave()
					}
				}()
				time.Sleep(60 * time.Second)
				synctest.Wait()

				// The fraction of neighbour links that stay within their region.
				local := func(o Overlay) (in, all int) {
					for _, nb := range o.Neighbours() {
						all++
						if region[nb.ID] == region[o.Host().ID()] {
							in++
						}
					}
					return in, all
				}
				var cin, call, min, mall int
				for i := range hosts {
					a, b := local(cs[i])
					cin, call = cin+a, call+b
					a, b = local(ms[i])
					min, mall = min+a, mall+b
				}
				clustered, plain := float64(cin)/float64(max(call, 1)), float64(min)/float64(max(mall, 1))
				t.Logf("%s: %d clustered links, %.2f within the region; membership %d links, %.2f", cs[0].Algorithm(), call, clustered, mall, plain)
				switch tc.profile {
				case Extreme:
					// T-Man keeps nothing but the best ranked: every link stays in its
					// region, and the clustered overlay is two islands (docs/clustering.md).
					if clustered < 0.95 {
						t.Fatalf("T-Man: %.2f of the clustered links within the region, want >= 0.95", clustered)
					}
				case Stable:
					// X-BOT's unbiased links keep it in one piece.
					if !clusterGraph(cs).connected() {
						t.Fatal("X-BOT's clustered overlay not connected")
					}
					if clustered < plain+0.15 {
						t.Fatalf("X-BOT: %.2f of the clustered links within the region against %.2f of the membership's", clustered, plain)
					}
				}
				// Ranked gives the measured round-trip times: about 4 ms within a region.
				for _, r := range cs[0].Ranked() {
					if region[r.ID] == region[hosts[0].ID()] && (r.Rank < 3 || r.Rank > 6) {
						t.Fatalf("a neighbour in the region ranks %.2f ms, want about 4", r.Rank)
					}
				}
			})
		})
	}
}
