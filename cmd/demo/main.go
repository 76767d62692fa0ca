// Command demo runs go-unsserv peers.
//
//	demo [-n 8] [-profile stable|extreme] [-for 0]
//	    The local tour: n real libp2p hosts on 127.0.0.1 (TCP and QUIC) form one network;
//	    every change of a peer's neighbours is printed. Ctrl-C (or -for) ends it cleanly.
//
//	demo peer [-listen ADDRS] [-bootstrap ADDRS] [-network ID] [-key FILE] [-profile P]
//	    One long-running peer: it listens, joins through the bootstrap multiaddrs (or
//	    starts a network without them), prints the full multiaddrs another machine can
//	    join it by, then its neighbours as they change. Ctrl-C leaves the network.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

const usage = `Usage:
  demo [flags]          the local tour: several peers on 127.0.0.1 form a network
  demo peer [flags]     one peer that others (on other machines) can join

Run "demo -h" or "demo peer -h" for the flags of each.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "peer" {
		return runPeer(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown mode %q", args[0])
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

// runTour starts n peers on loopback and prints how their neighbours settle.
func runTour(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage, "\nFlags of the local tour:\n")
		fs.PrintDefaults()
	}
	n := fs.Int("n", 8, "number of peers")
	profileName := fs.String("profile", "stable", "stable (HyParView) or extreme (Newscast)")
	network := fs.String("network", "demo.network", "network id")
	dur := fs.Duration("for", 0, "stop after this long (0: run until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
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

	var out sync.Mutex
	quiet := false // set while stopping: the goodbyes are not news
	printf := func(format string, a ...any) {
		out.Lock()
		defer out.Unlock()
		if !quiet {
			fmt.Fprintf(stdout, format, a...)
		}
	}

	hosts := make([]p2phost.Host, 0, *n)
	members := make([]*unsserv.Membership, 0, *n)
	defer func() {
		out.Lock()
		quiet = true
		out.Unlock()
		for _, m := range members {
			_ = m.Leave()
		}
		for _, h := range hosts {
			_ = h.Close()
		}
		fmt.Fprintf(stdout, "all %d peers left the network and closed their hosts\n", len(members))
	}()

	names := map[peer.ID]string{}
	var namesMu sync.Mutex
	nameOf := func(id peer.ID) string {
		namesMu.Lock()
		defer namesMu.Unlock()
		if s, ok := names[id]; ok {
			return s
		}
		return id.ShortString()
	}
	printf("starting %d peers on 127.0.0.1 in network %q (%s profile)\n", *n, *network, profile)
	for i := 0; i < *n; i++ {
		h, err := host.New(ctx,
			host.ListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"),
			host.NoNATTraversal(), host.DisableMetrics())
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
		name := fmt.Sprintf("peer%d", i)
		namesMu.Lock()
		names[h.ID()] = name
		namesMu.Unlock()

		opts := []unsserv.Option{profile}
		if i > 0 {
			// Join through the first peer, by the multiaddr another machine would use.
			opts = append(opts, unsserv.Bootstrap(fullAddrs(hosts[0])[0]))
		}
		m, err := unsserv.JoinNetwork(ctx, h, *network, opts...)
		if err != nil {
			return err
		}
		members = append(members, m)
		m.OnNeighboursChanged(func(ns []unsserv.Node) {
			list := make([]string, len(ns))
			for j, nb := range ns {
				list[j] = nameOf(nb.ID)
			}
			sort.Strings(list)
			printf("%-7s neighbours: [%s]\n", name, strings.Join(list, " "))
		})
		if i == 0 {
			printf("%s listens on %s\n", name, fullAddrs(h)[0])
		}
	}
	printf("all peers joined; Ctrl-C to stop\n")
	<-ctx.Done()
	printf("stopping\n")
	return nil
}

// runPeer runs one peer until ctx ends.
func runPeer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo peer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: demo peer [flags]\n\nOne long-running peer. Flags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "/ip4/0.0.0.0/tcp/7771,/ip4/0.0.0.0/udp/7771/quic-v1", "comma-separated multiaddrs to listen on")
	bootstrap := fs.String("bootstrap", "", "comma-separated multiaddrs (ending in /p2p/<id>) of peers to join through; empty starts a new network")
	network := fs.String("network", "demo.network", "network id")
	keyFile := fs.String("key", "", "identity key file: created on first run, reused after so the peer ID stays the same (empty: a new identity each run)")
	profileName := fs.String("profile", "stable", "stable (HyParView) or extreme (Newscast)")
	joinTimeout := fs.Duration("join-timeout", 30*time.Second, "give up joining after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	profile, err := parseProfile(*profileName)
	if err != nil {
		return err
	}
	hopts := []host.Option{host.ListenAddrs(splitList(*listen)...)}
	if *keyFile != "" {
		hopts = append(hopts, host.KeyFile(*keyFile))
	}
	h, err := host.New(ctx, hopts...)
	if err != nil {
		return err
	}
	defer h.Close()
	fmt.Fprintf(stdout, "peer ID %s\n", h.ID())
	for _, a := range fullAddrs(h) {
		fmt.Fprintf(stdout, "listening on %s\n", a)
	}

	opts := []unsserv.Option{profile}
	if bs := splitList(*bootstrap); len(bs) > 0 {
		var peers []any
		for _, b := range bs {
			peers = append(peers, b)
		}
		opts = append(opts, unsserv.Bootstrap(peers...))
	}
	jctx, cancel := context.WithTimeout(ctx, *joinTimeout)
	m, err := unsserv.JoinNetwork(jctx, h, *network, opts...)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if err := m.Leave(); err != nil {
			fmt.Fprintln(stderr, "leave:", err)
		}
		fmt.Fprintln(stdout, "left the network")
	}()
	fmt.Fprintf(stdout, "joined network %q (%s profile)\n", *network, profile)
	m.OnNeighboursChanged(func(ns []unsserv.Node) {
		list := make([]string, len(ns))
		for i, nb := range ns {
			list[i] = nb.ID.String()
		}
		fmt.Fprintf(stdout, "neighbours (%d): %s\n", len(ns), strings.Join(list, " "))
	})
	<-ctx.Done()
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// fullAddrs returns the host's addresses with /p2p/<id>, loopback last.
func fullAddrs(h p2phost.Host) []string {
	var out, loop []string
	for _, a := range h.Addrs() {
		s := a.String() + "/p2p/" + h.ID().String()
		if strings.HasPrefix(s, "/ip4/127.") || strings.HasPrefix(s, "/ip6/::1/") {
			loop = append(loop, s)
		} else {
			out = append(out, s)
		}
	}
	return append(out, loop...)
}
