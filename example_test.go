package unsserv_test

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

// The quickstart's membership part: a first node starts the network, a second joins
// through it, sees its neighbours, hears about changes, and leaves.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Two hosts on this machine. host.New gives TCP and QUIC, Noise and TLS, a saved
	// identity with host.KeyFile, and NAT traversal; any libp2p host.Host works too.
	h1, err := host.New(ctx, host.ListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), host.NoNATTraversal())
	if err != nil {
		panic(err)
	}
	defer h1.Close()
	h2, err := host.New(ctx, host.ListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), host.NoNATTraversal())
	if err != nil {
		panic(err)
	}
	defer h2.Close()

	// The first node starts the network "network.id".
	first, err := unsserv.JoinNetwork(ctx, h1, "network.id")
	if err != nil {
		panic(err)
	}
	defer first.Leave()

	// Be told whenever the neighbours change.
	counts := make(chan int, 8)
	stop := first.OnNeighboursChanged(func(ns []unsserv.Node) {
		counts <- len(ns)
	})
	defer stop()

	// The second joins through the first (a peer.AddrInfo, or a multiaddr string
	// ending in /p2p/<peer ID>).
	firstAddr := peer.AddrInfo{ID: h1.ID(), Addrs: h1.Addrs()}
	second, err := unsserv.JoinNetwork(ctx, h2, "network.id", unsserv.Bootstrap(firstAddr))
	if err != nil {
		panic(err)
	}
	if err := second.WaitReady(ctx, 1); err != nil {
		panic(err)
	}
	for _, n := range second.Neighbours() {
		fmt.Println("second's neighbour is the first:", n.ID == h1.ID())
	}
	fmt.Println("first now has", <-counts, "neighbour(s)")

	// Leave: the first hears of it.
	if err := second.Leave(); err != nil {
		panic(err)
	}
	fmt.Println("first now has", <-counts, "neighbour(s)")
	// Output:
	// second's neighbour is the first: true
	// first now has 1 neighbour(s)
	// first now has 0 neighbour(s)
}
