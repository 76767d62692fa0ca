package unsserv_test

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

// The quickstart's aggregation part: two nodes of a network start the aggregation
// service "aggregation.id", one with the value 2, the other with 4, computing the mean.
// Each node's estimate converges to 3; OnAggregate is told of every update. (A short
// cycle for the example; the default is 1 s.)
func ExampleNewAggregation() {
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

	a1, err := unsserv.NewAggregation(ctx, first, "aggregation.id", 2, unsserv.Mean, unsserv.AggregationPeriod(100*time.Millisecond))
	if err != nil {
		panic(err)
	}
	defer a1.Leave()
	a2, err := unsserv.NewAggregation(ctx, second, "aggregation.id", 4, unsserv.Mean, unsserv.AggregationPeriod(100*time.Millisecond))
	if err != nil {
		panic(err)
	}
	defer a2.Leave()

	// The handler sees the estimate move from the node's own value to the mean.
	converged := make(chan float64, 1)
	stop := a1.OnAggregate(func(aggregate float64) {
		if aggregate == 3 {
			select {
			case converged <- aggregate:
			default:
			}
		}
	})
	defer stop()
	select {
	case v := <-converged:
		fmt.Println("mean:", v)
	case <-ctx.Done():
		panic(ctx.Err())
	}
	// Output: mean: 3
}
