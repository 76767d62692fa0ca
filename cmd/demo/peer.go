package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

// defaultListen is the listen flag's default in peer and relay mode: fixed ports, so
// that port mappings, firewall rules and the addresses others were given stay valid
// across restarts.
const defaultListen = "/ip4/0.0.0.0/tcp/7771,/ip4/0.0.0.0/udp/7771/quic-v1"

const peerUsage = `Usage: demo peer [flags]

One long-running peer with NAT traversal on (port mapping, AutoNAT, hole punching, and
auto-relay through the -relay nodes). It prints, one event per line:
  peer ID <peer-id>
  addr <multiaddr>/p2p/<peer-id>        every address others can use; printed again
                                        whenever the set changes (a /p2p-circuit one
                                        once a relay reservation exists)
  joined network <id>
  neighbours (<count>): <id> <id> ...   on every change
  broadcast from <peer-id>: <text>      every broadcast received
  holepunch <peer-id>: ...              the outcome of each hole punch
Ctrl-C (or the quit command) leaves the network.

`

// runPeer runs one peer until ctx ends or it is told to quit.
func runPeer(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo peer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, peerUsage, commandsHelp, "\nFlags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", defaultListen, "comma-separated multiaddrs to listen on")
	bootstrap := fs.String("bootstrap", "", "comma-separated multiaddrs (ending in /p2p/<id>) of members to join through, e.g. the relay's addr lines; empty starts a new network")
	network := fs.String("network", "demo.network", "network id; the broadcast service runs under the same id")
	keyFile := fs.String("key", "", "identity key `file`: created on first run, reused after so the peer ID stays the same (empty: a new identity each run)")
	relays := fs.String("relay", "", "comma-separated multiaddrs (ending in /p2p/<id>) of circuit relay v2 nodes to reserve a slot on, so that peers reach this one through /p2p-circuit addresses while it is behind a NAT")
	httpAddr := fs.String("http", "", "serve the HTTP/JSON endpoint and Prometheus /metrics on this `address`, e.g. 127.0.0.1:8080 (empty: no HTTP)")
	profileName := fs.String("profile", "stable", "stable (HyParView, Plumtree) or extreme (Newscast, LPBCast)")
	value := fs.Float64("value", 1, "this peer's value for the network-wide aggregates (mean, min, max); the command set V changes it")
	rank := fs.String("rank", "rtt", "the clustering service's rank: "+rankNames)
	joinTimeout := fs.Duration("join-timeout", 30*time.Second, "give up joining through the bootstrap peers after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo peer: unexpected argument %q (flags only; see demo peer -h)", fs.Arg(0))
	}
	profile, err := parseProfile(*profileName)
	if err != nil {
		return err
	}
	relayInfos, err := parseRelays(splitList(*relays))
	if err != nil {
		return err
	}
	out := newPrinter(stdout)
	n, err := startNode(ctx, nodeConfig{
		listen: splitList(*listen), keyFile: *keyFile, network: *network, profile: profile,
		bootstrap: splitList(*bootstrap), relays: relayInfos, httpAddr: *httpAddr,
		joinTimeout: *joinTimeout, value: *value, rank: *rank,
	}, out)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	lines := readLines(stdin, done)
	quit := false
	for !quit {
		select {
		case <-ctx.Done():
			n.close()
			return nil
		case l, ok := <-lines:
			if !ok {
				// End of standard input (e.g. run in the background with </dev/null):
				// keep running until Ctrl-C.
				lines = nil
				continue
			}
			quit = n.command(ctx, l)
		}
	}
	n.close()
	out.line("ok quit")
	return nil
}
