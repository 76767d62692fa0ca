// Command demo runs go-unsserv peers: a tour of a local network, and real peers that
// join each other across machines and NATs.
//
//	demo [-n 8] [-profile stable|extreme] [-for 0]
//	    The local tour: n real libp2p hosts on 127.0.0.1 (TCP and QUIC) form one
//	    network and run a broadcast service; every change of a peer's neighbours and
//	    every broadcast received is printed. Ctrl-C (or -for) ends it cleanly.
//
//	demo peer [-listen ADDRS] [-bootstrap ADDRS] [-relay ADDRS] [-key FILE] [-http ADDR] ...
//	    One long-running peer, NAT traversal on: it prints its peer ID and the full
//	    multiaddrs others can join it by (a /p2p-circuit one once it holds a relay
//	    reservation), joins through the bootstrap peers, and takes commands on stdin
//	    (neighbours, broadcast TEXT, peers, addrs, quit), and over HTTP with -http.
//
//	demo relay [-listen ADDRS] [-key FILE] [-http ADDR] [-network ID]
//	    A public bootstrap node and circuit relay v2: the first member of the network,
//	    through which peers at home join and are reached.
//
// Every line on standard output is one event; the prefixes "peer ID", "addr",
// "joined network", "neighbours (", "broadcast from", "conn", "ok" and "error" are
// reserved and machine-parsable (docs/demo.md). Logs go to standard error through
// go-log, quiet by default: GOLOG_LOG_LEVEL=info (or e.g. "error,unsserv/demo=info,
// p2p-holepunch=debug") raises them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	unsserv "github.com/unsserv/go-unsserv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

const usage = `Usage:
  demo [flags]          the local tour: several peers on 127.0.0.1 form a network
                        and broadcast to each other
  demo peer [flags]     one peer that others (on other machines, behind NATs) can join;
                        commands on stdin: neighbours | broadcast TEXT | peers | addrs | quit
  demo relay [flags]    a public bootstrap node and circuit relay for peers behind NATs

Run "demo -h", "demo peer -h" or "demo relay -h" for the flags of each.
Logs (standard error) are quiet by default; GOLOG_LOG_LEVEL=info shows one line per event.
`

// run runs the demo with the arguments after the program name; stdin is read in peer
// mode only. It returns when ctx ends, or when a peer is told to quit.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "peer":
			return runPeer(ctx, args[1:], stdin, stdout, stderr)
		case "relay":
			return runRelay(ctx, args[1:], stdout, stderr)
		case "tour":
			return runTour(ctx, args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stderr, usage)
			return flag.ErrHelp
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprint(stderr, usage)
			return fmt.Errorf("unknown mode %q: use peer, relay, or flags of the tour", args[0])
		}
	}
	return runTour(ctx, args, stdout, stderr)
}

func parseProfile(s string) (unsserv.Profile, error) {
	switch strings.ToLower(s) {
	case "stable", "":
		return unsserv.Stable, nil
	case "extreme":
		return unsserv.Extreme, nil
	}
	return 0, fmt.Errorf("-profile %q: use stable or extreme", s)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
