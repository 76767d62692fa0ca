package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"

	"github.com/unsserv/go-unsserv/host"
)

const relayUsage = `Usage: demo relay [flags]

A bootstrap node and circuit relay v2 for peers behind NATs; run it on a host with a
public address (open the -listen ports). It starts the network as its first member, so
peers join through it (-bootstrap <its addr line>) and reserve a relay slot on it
(-relay <its addr line>); it also runs the broadcast service and forwards broadcasts.
It prints "peer ID", "addr", "joined network", "neighbours (" and "broadcast from"
lines like a peer, and a "relay service on: ..." line with its limits. It reads no
commands; Ctrl-C stops it.

Relay limits (see docs/demo.md for why): a relayed connection lasts at most %v and
carries at most %d MiB each way; at most %d reservations (%d per IP address) and %d
circuits per peer.

Flags:
`

// relayResources are the circuit relay v2 limits of the demo's relay. libp2p's
// defaults (2 minutes and 128 KiB per circuit) suit a relay that only helps two peers
// start a hole punch; the demo's overlay links may live on a relay for good (behind a
// symmetric NAT hole punching fails), and each cut costs a neighbour change. So a
// circuit may last an hour and carry 64 MiB each way, while the number of reservations
// and circuits stays bounded, and so does the relay's memory and bandwidth.
func relayResources() relayv2.Resources {
	r := relayv2.DefaultResources()
	r.Limit = &relayv2.RelayLimit{Duration: time.Hour, Data: 64 << 20}
	r.ReservationTTL = time.Hour
	r.MaxReservations = 128
	r.MaxReservationsPerIP = 8
	r.MaxCircuits = 16
	return r
}

// runRelay runs the relay until ctx ends.
func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	res := relayResources()
	fs := flag.NewFlagSet("demo relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, relayUsage, res.Limit.Duration, res.Limit.Data>>20, res.MaxReservations, res.MaxReservationsPerIP, res.MaxCircuits)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", defaultListen, "comma-separated multiaddrs to listen on (fixed ports, reachable from the internet)")
	keyFile := fs.String("key", "", "identity key `file`: created on first run, reused after, so the relay's peer ID (part of every address peers are given) stays the same")
	httpAddr := fs.String("http", "", "serve the HTTP/JSON endpoint (/addrs, /neighbours, /peers) and Prometheus /metrics on this `address` (empty: no HTTP)")
	network := fs.String("network", "demo.network", "network id the relay starts (as its first member) and bootstraps peers into")
	profileName := fs.String("profile", "stable", "stable (HyParView, Plumtree) or extreme (Newscast, LPBCast); peers must use the same")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo relay: unexpected argument %q (flags only; see demo relay -h)", fs.Arg(0))
	}
	profile, err := parseProfile(*profileName)
	if err != nil {
		return err
	}
	out := newPrinter(stdout)
	n, err := startNode(ctx, nodeConfig{
		listen: splitList(*listen), keyFile: *keyFile, network: *network, profile: profile,
		httpAddr: *httpAddr, joinTimeout: time.Second, value: 1,
		hostOptions: []host.Option{
			// Relay v2 hop service and AutoNAT server, reachability forced public.
			host.RelayService(relayv2.WithResources(res)),
		},
		lines: func() []string {
			return []string{fmt.Sprintf("relay service on: circuits last %v and carry %d MiB each way; %d reservations (%d per IP), %d circuits per peer",
				res.Limit.Duration, res.Limit.Data>>20, res.MaxReservations, res.MaxReservationsPerIP, res.MaxCircuits)}
		},
	}, out)
	if err != nil {
		return err
	}
	log.Infow("relay running", "network", *network, "limits", res.Limit, "reservations", res.MaxReservations, "circuits", res.MaxCircuits)
	<-ctx.Done()
	n.close()
	return nil
}
