package unsserv_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

// The quickstart's search part: every node of a network starts the search service
// "searching.id"; one publishes "data.id", another searches for it and gets the bytes
// and the node that answered. An id nobody published ends with unsserv.ErrNotFound.
func ExampleNewSearch() {
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

	s1, err := unsserv.NewSearch(ctx, first, "searching.id")
	if err != nil {
		panic(err)
	}
	defer s1.Leave()
	s2, err := unsserv.NewSearch(ctx, second, "searching.id")
	if err != nil {
		panic(err)
	}
	defer s2.Leave()

	if err := s1.Publish(ctx, "data.id", []byte("data")); err != nil { // searching.publish("data.id", b"data")
		panic(err)
	}
	res, err := s2.Search(ctx, "data.id") // searching.search("data.id")
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q from the first node: %v, %d hop (%s)\n", res.Data, res.From.ID == h1.ID(), res.Hops, s2.Algorithm())

	_, err = s2.Search(ctx, "missing.id")
	fmt.Println(errors.Is(err, unsserv.ErrNotFound))
	// Output:
	// "data" from the first node: true, 1 hop (abloom)
	// true
}
