package unsserv_test

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

// The quickstart's broadcast part: two nodes of a network each start the dissemination
// service "dissemination.id"; what one broadcasts, the other's handler receives.
func ExampleNewDissemination() {
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
	if err := first.WaitReady(ctx, 1); err != nil {
		panic(err)
	}

	// The handler is called with every broadcast received (never with the node's own).
	received := make(chan []byte, 1)
	d1, err := unsserv.NewDissemination(ctx, first, "dissemination.id", func(b []byte) { received <- b })
	if err != nil {
		panic(err)
	}
	defer d1.Leave()
	d2, err := unsserv.NewDissemination(ctx, second, "dissemination.id", func([]byte) {})
	if err != nil {
		panic(err)
	}
	defer d2.Leave()

	if err := d2.Broadcast(ctx, []byte("data")); err != nil {
		panic(err)
	}
	fmt.Printf("%s (%s)\n", <-received, d1.Algorithm())
	// Output: data (plumtree)
}
