package unsserv_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols/clustering"
)

// The quickstart's clustering part: every node publishes a number as its metadata and
// ranks the others by how far their number is from its own (lower is better); the
// clustered overlay's neighbours come best first. (unsserv.RTTRank ranks by measured
// round-trip time instead.)
func ExampleNewClustering() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var hosts []*peer.AddrInfo
	var members []*unsserv.Membership
	for _, meta := range []string{"10", "20", "35"} {
		h, err := host.New(ctx, host.ListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), host.NoNATTraversal())
		if err != nil {
			panic(err)
		}
		defer h.Close()
		opts := []unsserv.Option{unsserv.Extreme, unsserv.Meta([]byte(meta))}
		if len(hosts) > 0 {
			opts = append(opts, unsserv.Bootstrap(*hosts[0]))
		}
		m, err := unsserv.JoinNetwork(ctx, h, "network.id", opts...)
		if err != nil {
			panic(err)
		}
		defer m.Leave()
		hosts = append(hosts, &peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
		members = append(members, m)
	}

	// The rank of the first node: distance between numbers.
	distance := func(n unsserv.Node) float64 {
		v, err := strconv.Atoi(string(n.Meta))
		if err != nil {
			return math.Inf(1) // no number: the worst
		}
		return math.Abs(float64(10 - v))
	}
	cl, err := unsserv.NewClustering(ctx, members[0], "clustering.id", distance,
		unsserv.WithTMan(clustering.TManConfig{Interval: 200 * time.Millisecond}))
	if err != nil {
		panic(err)
	}
	defer cl.Leave()
	for _, m := range members[1:] {
		other, err := unsserv.NewClustering(ctx, m, "clustering.id", func(unsserv.Node) float64 { return 0 })
		if err != nil {
			panic(err)
		}
		defer other.Leave()
	}
	if err := cl.WaitReady(ctx, 2); err != nil {
		panic(err)
	}
	fmt.Println(cl.Algorithm())
	for _, r := range cl.Ranked() {
		fmt.Printf("neighbour with %s, rank %v\n", r.Meta, r.Rank)
	}
	// Output:
	// tman
	// neighbour with 20, rank 10
	// neighbour with 35, rank 25
}
