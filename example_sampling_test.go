package unsserv_test

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

// The quickstart's sampling part: every node of a network starts the sampling service
// "sampling.id"; Sample returns a peer drawn uniformly at random among the others.
func ExampleNewSampling() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h1, _ := host.New(ctx, host.ListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), host.NoNATTraversal())
	defer h1.Close()
	h2, _ := host.New(ctx, host.ListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), host.NoNATTraversal())
	defer h2.Close()
	first, err := unsserv.JoinNetwork(ctx, h1, "network.id")
	if err != nil {
		panic(err)
	}
	defer first.Leave()
	second, err := unsserv.JoinNetwork(ctx, h2, "network.id", unsserv.Bootstrap(peer.AddrInfo{ID: h1.ID(), Addrs: h1.Addrs()}))
	if err != nil {
		panic(err)
	}
	defer second.Leave()
	if err := second.WaitReady(ctx, 1); err != nil {
		panic(err)
	}

	s1, err := unsserv.NewSampling(ctx, first, "sampling.id")
	if err != nil {
		panic(err)
	}
	defer s1.Leave()
	s2, err := unsserv.NewSampling(ctx, second, "sampling.id")
	if err != nil {
		panic(err)
	}
	defer s2.Leave()

	node, err := s2.Sample(ctx) // the quickstart's get_sample()
	if err != nil {
		panic(err)
	}
	fmt.Printf("sampled the first node: %v, with its addresses: %v (%s)\n", node.ID == h1.ID(), len(node.Addrs) > 0, s2.Algorithm())
	// Output: sampled the first node: true, with its addresses: true (rwd)
}
