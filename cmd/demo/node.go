package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

// nodeConfig is what peer and relay mode have in common.
type nodeConfig struct {
	listen      []string
	keyFile     string
	network     string
	profile     unsserv.Profile
	bootstrap   []string        // multiaddrs ending in /p2p/<id>; none: start the network
	relays      []peer.AddrInfo // static relays for auto-relay (peer mode)
	httpAddr    string          // serve the HTTP/JSON endpoint and /metrics here ("": no)
	joinTimeout time.Duration   // bound on JoinNetwork
	value       float64         // this peer's value for the aggregates
	rank        string          // the clustering rank: rtt or port (see demoRank)
	hostOptions []host.Option   // more options for host.New (relay mode)
	lines       func() []string // more lines to print after "joined network" (relay mode)
}

// node is one demo peer (or relay): a libp2p host from host.New, its membership of the
// network, and a dissemination service with the network's id.
//
// Goroutines: watch turns the host's address and reachability events into addr lines
// and log lines; the membership's notifier prints neighbour changes; the dissemination
// service's delivery goroutine prints broadcasts; the HTTP server (with -http) serves
// requests. close stops them all.
type node struct {
	cfg  nodeConfig
	h    p2phost.Host
	m    *unsserv.Membership
	di   *unsserv.Dissemination
	aggs []*unsserv.Aggregation // mean, min, max, count of the local value
	sa   *unsserv.Sampling
	se   *unsserv.Search
	cl   *unsserv.Clustering  // clustered by cfg.rank
	reg  *prometheus.Registry // nil without -http
	out  *printer

	stopNeighbours func()
	srv            *http.Server
	httpDone       chan struct{}
	stop           chan struct{}
	wg             sync.WaitGroup

	mu             sync.Mutex
	lastAddrs      []string
	lastNeighbours string
}

// startNode builds the host, prints its ID and addresses, joins the network, starts
// the dissemination service and, with cfg.httpAddr, the HTTP endpoint. On error
// everything started is stopped again.
func startNode(ctx context.Context, cfg nodeConfig, out *printer) (_ *node, err error) {
	n := &node{cfg: cfg, out: out, stop: make(chan struct{})}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	hopts := []host.Option{host.ListenAddrs(cfg.listen...)}
	if cfg.keyFile != "" {
		hopts = append(hopts, host.KeyFile(cfg.keyFile))
	}
	// Relays: the ones named with -relay, or else the members of the overlay that
	// offer the relay service (auto-relay asks the overlay for candidates).
	var relaySource *unsserv.RelaySource
	if len(cfg.relays) > 0 {
		hopts = append(hopts, host.Relays(cfg.relays...))
	} else {
		relaySource = unsserv.NewRelaySource()
		hopts = append(hopts, host.RelayPeerSource(relaySource.PeerSource))
	}
	// Hole punching as host.New turns it on, plus a tracer that prints each outcome.
	hp := []holepunch.Option{holepunch.WithTracer(holepunchTracer{out})}
	if cfg.httpAddr != "" {
		n.reg = prometheus.NewRegistry()
		n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		hopts = append(hopts, host.PrometheusRegisterer(n.reg))
		hp = []holepunch.Option{holepunch.WithMetricsAndEventTracer(
			holepunch.NewMetricsTracer(holepunch.WithRegisterer(n.reg)), holepunchTracer{out})}
	} else {
		hopts = append(hopts, host.DisableMetrics())
	}
	hopts = append(hopts, host.HolePunching(hp...))
	hopts = append(hopts, cfg.hostOptions...)
	if n.h, err = host.New(ctx, hopts...); err != nil {
		return nil, err
	}
	out.line("peer ID %s", n.h.ID())
	log.Infow("host started", "peer", n.h.ID(), "listen", n.h.Network().ListenAddresses())

	sub, err := n.h.EventBus().Subscribe([]any{
		new(event.EvtLocalAddressesUpdated),
		new(event.EvtLocalReachabilityChanged),
		new(event.EvtAutoRelayAddrsUpdated),
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to address events: %w", err)
	}
	n.printAddrs(false)
	n.h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			log.Infow("connection opened", "peer", c.RemotePeer(), "addr", c.RemoteMultiaddr(), "kind", connKind(c.RemoteMultiaddr()), "dir", c.Stat().Direction)
		},
		DisconnectedF: func(_ network.Network, c network.Conn) {
			log.Infow("connection closed", "peer", c.RemotePeer(), "addr", c.RemoteMultiaddr(), "kind", connKind(c.RemoteMultiaddr()))
		},
	})
	n.wg.Add(1)
	go n.watch(sub)

	opts := []unsserv.Option{cfg.profile}
	if len(cfg.bootstrap) > 0 {
		bs := make([]any, len(cfg.bootstrap))
		for i, b := range cfg.bootstrap {
			bs[i] = b
		}
		opts = append(opts, unsserv.Bootstrap(bs...))
	}
	jctx, cancel := context.WithTimeout(ctx, cfg.joinTimeout)
	n.m, err = unsserv.JoinNetwork(jctx, n.h, cfg.network, opts...)
	cancel()
	if err != nil {
		return nil, err
	}
	if relaySource != nil {
		relaySource.Set(n.m)
	}
	n.di, err = unsserv.NewDissemination(ctx, n.m, cfg.network, nil, unsserv.OnBroadcast(func(b unsserv.Broadcast) {
		out.line("broadcast from %s: %s", b.From, oneLine(string(b.Data)))
		log.Infow("broadcast received", "from", b.From, "seq", b.Seq, "hops", b.Hops, "bytes", len(b.Data))
	}), unsserv.OnError(func(err error) {
		log.Warnw("dissemination", "err", err)
	}))
	if err != nil {
		return nil, err
	}
	if err := n.startServices(ctx); err != nil {
		return nil, err
	}
	out.line("joined network %s", cfg.network)
	log.Infow("joined network", "network", cfg.network, "profile", cfg.profile, "broadcast", n.di.Algorithm(), "bootstrap", cfg.bootstrap)
	if cfg.lines != nil {
		out.lines(cfg.lines())
	}
	n.stopNeighbours = n.m.OnNeighboursChanged(func([]unsserv.Node) { n.printNeighbours(false) })
	n.printNeighbours(false) // a change before the handler was there

	if n.reg != nil {
		metrics, err := unsserv.NewMetrics(n.reg)
		if err != nil {
			return nil, err
		}
		if err := errors.Join(metrics.AddMembership(n.m), metrics.AddDissemination(n.di)); err != nil {
			return nil, err
		}
		if err := n.serveHTTP(cfg.httpAddr); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// watch prints the addr lines again whenever the host's addresses change (a relay
// reservation adds /p2p-circuit ones), and logs reachability.
func (n *node) watch(sub event.Subscription) {
	defer n.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-n.stop:
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch e := e.(type) {
			case event.EvtLocalAddressesUpdated:
				n.printAddrs(false)
			case event.EvtLocalReachabilityChanged:
				log.Infow("reachability changed", "reachability", e.Reachability)
			case event.EvtAutoRelayAddrsUpdated:
				log.Infow("relay addresses updated", "addrs", e.RelayAddrs)
				n.printAddrs(false)
			}
		}
	}
}

// printAddrs prints an addr line for every address of the host if the set changed
// since last time (or always, as the answer to the addrs command).
func (n *node) printAddrs(always bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	addrs := hostAddrs(n.h)
	if !always && slices.Equal(addrs, n.lastAddrs) {
		return
	}
	n.lastAddrs = addrs
	ls := make([]string, len(addrs))
	for i, a := range addrs {
		ls[i] = "addr " + a
	}
	n.out.lines(ls)
	if !always {
		log.Infow("addresses", "addrs", addrs)
	}
}

// printNeighbours prints the neighbours line if the set changed since last time (or
// always, as the answer to the neighbours command). It reads the membership's
// current set under the lock, so lines never go back to an older set.
func (n *node) printNeighbours(always bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := neighbourIDs(n.m.Neighbours())
	line := fmt.Sprintf("neighbours (%d): %s", len(ids), strings.Join(ids, " "))
	if !always && line == n.lastNeighbours {
		return
	}
	n.lastNeighbours = line
	n.out.line("%s", line)
	if !always {
		log.Infow("neighbours changed", "count", len(ids), "neighbours", ids)
	}
}

func neighbourIDs(ns []unsserv.Node) []string {
	ids := make([]string, len(ns))
	for i, nb := range ns {
		ids[i] = nb.ID.String()
	}
	slices.Sort(ids)
	return ids
}

// errNoNeighbours refuses a broadcast that would reach nobody.
var errNoNeighbours = errors.New(`no neighbours yet, so nobody would get it: wait for a "neighbours (1)" line`)

// broadcast hands text to the dissemination service.
func (n *node) broadcast(ctx context.Context, text string) error {
	if text == "" {
		return errors.New("nothing to broadcast: give a text, as in: broadcast hello")
	}
	if len(n.m.Neighbours()) == 0 {
		return errNoNeighbours
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.di.Broadcast(ctx, []byte(text)); err != nil {
		return err
	}
	log.Infow("broadcast sent", "bytes", len(text))
	return nil
}

// close leaves the network and closes the host; it is safe on a half-started node.
func (n *node) close() {
	if n.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := n.srv.Shutdown(ctx); err != nil {
			_ = n.srv.Close()
		}
		cancel()
		<-n.httpDone
	}
	if n.stopNeighbours != nil {
		n.stopNeighbours()
	}
	n.stopServices()
	if n.di != nil {
		if err := n.di.Leave(); err != nil {
			log.Warnw("leave dissemination", "err", err)
		}
	}
	if n.m != nil {
		if err := n.m.Leave(); err != nil {
			log.Warnw("leave network", "err", err)
		}
		n.out.line("left network %s", n.cfg.network)
	}
	close(n.stop)
	n.wg.Wait()
	if n.h != nil {
		_ = n.h.Close()
	}
}

// holepunchTracer prints the outcome of every hole punch (DCUtR) this host takes part
// in: a relayed connection turned direct, or not.
type holepunchTracer struct{ out *printer }

func (t holepunchTracer) Trace(e *holepunch.Event) {
	switch ev := e.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		if ev.Success {
			t.out.line("holepunch %s: direct connection after %v", e.Remote, ev.EllapsedTime.Round(time.Millisecond))
			log.Infow("hole punch succeeded", "peer", e.Remote, "took", ev.EllapsedTime)
		} else {
			t.out.line("holepunch %s: failed after %v: %s", e.Remote, ev.EllapsedTime.Round(time.Millisecond), ev.Error)
			log.Infow("hole punch failed", "peer", e.Remote, "took", ev.EllapsedTime, "err", ev.Error)
		}
	case *holepunch.DirectDialEvt:
		if ev.Success {
			log.Infow("direct dial instead of hole punch succeeded", "peer", e.Remote, "took", ev.EllapsedTime)
		}
	}
}

// listenHTTP opens the HTTP listener.
func listenHTTP(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http %s: %w", addr, err)
	}
	return l, nil
}

// parseRelays turns -relay values into AddrInfos (several addresses of one relay are
// merged).
func parseRelays(list []string) ([]peer.AddrInfo, error) {
	var addrs []ma.Multiaddr
	for _, s := range list {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("-relay %q: %w", s, err)
		}
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return nil, fmt.Errorf("-relay %s: %w (it must end in /p2p/<relay peer ID>, as the relay's addr lines do)", s, err)
		}
		addrs = append(addrs, a)
	}
	return peer.AddrInfosFromP2pAddrs(addrs...)
}
