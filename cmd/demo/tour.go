package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

const tourUsage = `Usage: demo [flags]   (or: demo tour [flags])

The local tour: n real libp2p hosts on 127.0.0.1 (TCP and QUIC) join one network
through peer0 and each run the broadcast service. Once the overlay has settled (every
peer has a neighbour, none changed for %v), peer0 broadcasts "hello"; %v later the
last peer broadcasts "hello again". Every change
of a peer's neighbours and every broadcast a peer receives is printed:
  peer3   neighbours: [peer0 peer5 peer6]
  peer3 got broadcast from peer0: hello

Flags:
`

// tourAgain is how long after the first broadcast the tour makes the second.
const tourAgain = 2 * time.Second

// tourQuiet is how long no peer's neighbours may change before the tour calls the
// overlay settled.
const tourQuiet = 500 * time.Millisecond

// settling tells when every peer has a neighbour and no neighbours changed for a while.
type settling struct {
	mu      sync.Mutex
	counts  map[string]int
	last    time.Time
	changes chan struct{} // signalled at every change
}

func newSettling() *settling {
	return &settling{counts: map[string]int{}, changes: make(chan struct{}, 1)}
}

func (s *settling) changed(name string, count int) {
	s.mu.Lock()
	s.counts[name] = count
	s.last = time.Now()
	s.mu.Unlock()
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// wait returns once n peers have a neighbour each and none changed for quiet, or
// with ctx's error.
func (s *settling) wait(ctx context.Context, n int, quiet time.Duration) error {
	for {
		s.mu.Lock()
		ready := 0
		for _, c := range s.counts {
			if c > 0 {
				ready++
			}
		}
		left := quiet - time.Since(s.last)
		s.mu.Unlock()
		if ready >= n && left <= 0 {
			return nil
		}
		if ready < n {
			left = time.Hour // wait for a change
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-s.changes:
		case <-t.C:
		}
		t.Stop()
	}
}

// tourPeer is one peer of the tour.
type tourPeer struct {
	name  string
	h     p2phost.Host
	m     *unsserv.Membership
	di    *unsserv.Dissemination
	count *unsserv.Aggregation // the network's size
	mean  *unsserv.Aggregation // the mean of the peers' numbers (peerK has K)
	sa    *unsserv.Sampling
	se    *unsserv.Search
	cl    *unsserv.Clustering // clustered by port distance
}

// runTour starts n peers on loopback, prints how their neighbours settle and how
// broadcasts reach them.
func runTour(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage, "\n")
		fmt.Fprintf(stderr, tourUsage, tourQuiet, tourAgain)
		fs.PrintDefaults()
	}
	n := fs.Int("n", 8, "number of peers")
	profileName := fs.String("profile", "stable", "stable (HyParView, Plumtree) or extreme (Newscast, LPBCast)")
	network := fs.String("network", "demo.network", "network id (and id of the broadcast service)")
	dur := fs.Duration("for", 0, "stop after this long (0: run until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: the tour takes flags only (see demo -h)", fs.Arg(0))
	}
	if *n < 2 {
		return fmt.Errorf("-n %d: the tour needs at least 2 peers", *n)
	}
	profile, err := parseProfile(*profileName)
	if err != nil {
		return err
	}
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}

	out := newPrinter(stdout)
	st := newSettling()
	var peers []*tourPeer
	defer func() {
		out.silence() // the goodbyes are not news
		for _, p := range peers {
			if p.di != nil {
				_ = p.di.Leave()
			}
			for _, ag := range []*unsserv.Aggregation{p.count, p.mean} {
				if ag != nil {
					_ = ag.Leave()
				}
			}
			if p.sa != nil {
				_ = p.sa.Leave()
			}
			if p.se != nil {
				_ = p.se.Leave()
			}
			if p.cl != nil {
				_ = p.cl.Leave()
			}
		}
		for _, p := range peers {
			_ = p.m.Leave()
			_ = p.h.Close()
		}
		out.always("all %d peers left the network and closed their hosts", len(peers))
	}()

	var namesMu sync.Mutex
	names := map[peer.ID]string{}
	nameOf := func(id peer.ID) string {
		namesMu.Lock()
		defer namesMu.Unlock()
		if s, ok := names[id]; ok {
			return s
		}
		return id.ShortString()
	}
	out.line("starting %d peers on 127.0.0.1 in network %q (%s profile)", *n, *network, profile)
	for i := 0; i < *n; i++ {
		h, err := host.New(ctx,
			host.ListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"),
			host.NoNATTraversal(), host.DisableMetrics())
		if err != nil {
			return err
		}
		p := &tourPeer{name: fmt.Sprintf("peer%d", i), h: h}
		namesMu.Lock()
		names[h.ID()] = p.name
		namesMu.Unlock()

		opts := []unsserv.Option{profile}
		if i > 0 {
			// Join through the first peer, by the multiaddr another machine would use.
			opts = append(opts, unsserv.Bootstrap(hostAddrs(peers[0].h)[0]))
		}
		if p.m, err = unsserv.JoinNetwork(ctx, h, *network, opts...); err != nil {
			_ = h.Close()
			return err
		}
		peers = append(peers, p)
		p.di, err = unsserv.NewDissemination(ctx, p.m, *network, nil, unsserv.OnBroadcast(func(b unsserv.Broadcast) {
			out.line("%s got broadcast from %s: %s", p.name, nameOf(b.From), oneLine(string(b.Data)))
		}))
		if err != nil {
			return err
		}
		// Aggregates on a fast cycle so that the tour shows them converge.
		fast := []unsserv.Option{unsserv.AggregationPeriod(200 * time.Millisecond), unsserv.AggregationEpoch(20)}
		if p.count, err = unsserv.NewAggregation(ctx, p.m, *network+".count", 1, unsserv.Count, fast...); err != nil {
			return err
		}
		if p.mean, err = unsserv.NewAggregation(ctx, p.m, *network+".mean", float64(i), unsserv.Mean, fast...); err != nil {
			return err
		}
		if p.sa, err = unsserv.NewSampling(ctx, p.m, *network); err != nil {
			return err
		}
		if p.se, err = unsserv.NewSearch(ctx, p.m, *network); err != nil {
			return err
		}
		// Clustered by the distance between TCP ports, the quickstart's example.
		port, ok := firstPort(h.Addrs())
		if !ok {
			return fmt.Errorf("%s listens on no port", p.name)
		}
		if p.cl, err = unsserv.NewClustering(ctx, p.m, *network, portDistance(port)); err != nil {
			return err
		}
		// Registered after the dissemination service's own handler, so when this
		// runs, the broadcast core has been handed the same neighbours.
		p.m.OnNeighboursChanged(func(ns []unsserv.Node) {
			list := make([]string, len(ns))
			for j, nb := range ns {
				list[j] = nameOf(nb.ID)
			}
			slices.Sort(list)
			out.line("%-7s neighbours: [%s]", p.name, strings.Join(list, " "))
			st.changed(p.name, len(ns))
		})
		if i == 0 {
			out.line("%s listens on %s", p.name, hostAddrs(h)[0])
		}
	}
	out.line("all peers joined; Ctrl-C to stop")

	// Broadcast once the overlay has settled (a broadcast core told of a neighbour only
	// later does not send it what went before), and once more a little later.
	if err := st.wait(ctx, *n, tourQuiet); err != nil {
		out.line("stopping")
		return nil
	}
	out.line("the overlay has settled: every peer has neighbours, none changed for %v", tourQuiet)
	tourBroadcast(ctx, out, peers[0], "hello")
	select {
	case <-ctx.Done():
	case <-time.After(tourAgain):
		tourBroadcast(ctx, out, peers[len(peers)-1], "hello again")
	}
	select {
	case <-ctx.Done():
	case <-time.After(tourAgain):
		tourServices(ctx, out, peers, nameOf)
		tourSearch(ctx, out, peers, nameOf)
	}
	<-ctx.Done()
	out.line("stopping")
	return nil
}

// tourServices prints what the aggregation and sampling services tell peer0.
func tourServices(ctx context.Context, out *printer, peers []*tourPeer, nameOf func(peer.ID) string) {
	p := peers[0]
	for _, a := range []struct {
		what string
		ag   *unsserv.Aggregation
		want float64
	}{{"network size", p.count, float64(len(peers))}, {"mean of the peers' numbers", p.mean, float64(len(peers)-1) / 2}} {
		if e := a.ag.Estimate(); e.Known {
			out.line("%s estimates the %s at %.3f (true %.3f; epoch %d, cycle %d)", p.name, a.what, e.Value, a.want, e.Epoch, e.Cycle)
		} else {
			out.line("%s has no estimate of the %s yet", p.name, a.what)
		}
	}
	var drawn []string
	for k := 0; k < 5 && ctx.Err() == nil; k++ {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := p.sa.Sample(sctx)
		cancel()
		if err != nil {
			out.line("%s could not sample: %v", p.name, err)
			return
		}
		drawn = append(drawn, nameOf(s.ID))
	}
	out.line("%s samples 5 peers at random: %s", p.name, strings.Join(drawn, " "))
}

func tourBroadcast(ctx context.Context, out *printer, p *tourPeer, text string) {
	out.line("%s broadcasts: %s", p.name, text)
	if err := p.di.Broadcast(ctx, []byte(text)); err != nil && ctx.Err() == nil {
		out.line("%s could not broadcast: %v", p.name, err)
	}
}

// tourSearch publishes on peer0 and searches from the last peer, then prints peer0's
// clustered neighbours (ranked by port distance) next to its plain ones.
func tourSearch(ctx context.Context, out *printer, peers []*tourPeer, nameOf func(peer.ID) string) {
	first, last := peers[0], peers[len(peers)-1]
	const id, text = "tour.greeting", "found me"
	if err := first.se.Publish(ctx, id, []byte(text)); err != nil {
		out.line("%s could not publish: %v", first.name, err)
		return
	}
	out.line("%s publishes %q under %s", first.name, text, id)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	r, err := last.se.Search(sctx, id)
	cancel()
	if err != nil {
		out.line("%s could not find %s: %v", last.name, id, err)
	} else {
		out.line("%s searches %s: %q from %s, %d hops away", last.name, id, r.Data, nameOf(r.From.ID), r.Hops)
	}
	sctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	_, err = last.se.Search(sctx, "tour.missing")
	cancel()
	out.line("%s searches tour.missing: %v", last.name, err)

	port, _ := firstPort(first.h.Addrs())
	var ranked []string
	for _, r := range first.cl.Ranked() {
		p, _ := firstPort(r.Addrs)
		ranked = append(ranked, fmt.Sprintf("%s(port %d, rank %g)", nameOf(r.ID), p, r.Rank))
	}
	out.line("%s (port %d) clustered by port distance: [%s]", first.name, port, strings.Join(ranked, " "))
}
