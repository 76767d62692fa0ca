package unsserv

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

func loopbackHost(t *testing.T, listen ...string) p2phost.Host {
	t.Helper()
	h, err := host.New(context.Background(), host.ListenAddrs(listen...), host.NoNATTraversal(), host.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// addrOf returns h's first address whose string contains proto, with /p2p/<id>.
func addrOf(t *testing.T, h p2phost.Host, proto string) string {
	t.Helper()
	for _, a := range h.Addrs() {
		if strings.Contains(a.String(), proto) {
			return a.String() + "/p2p/" + h.ID().String()
		}
	}
	t.Fatalf("host has no %s address: %v", proto, h.Addrs())
	return ""
}

// ourGoroutines lists the stacks of running goroutines that are in go-unsserv's code
// (test code aside).
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/unsserv/go-unsserv") && !strings.Contains(g, "_test.go") && !strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return out
}

func TestRealTransportsJoinAndLeave(t *testing.T) {
	for _, tc := range []struct{ name, listen, match string }{
		{"tcp", "/ip4/127.0.0.1/tcp/0", "/tcp/"},
		{"quic", "/ip4/127.0.0.1/udp/0/quic-v1", "/quic-v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const n = 4
			var ms []*Membership
			var first p2phost.Host
			for i := 0; i < n; i++ {
				h := loopbackHost(t, tc.listen)
				var opts []Option
				if i == 0 {
					first = h
				} else {
					opts = append(opts, Bootstrap(addrOf(t, first, tc.match)))
				}
				m, err := JoinNetwork(ctx, h, "loopback.net", opts...)
				if err != nil {
					t.Fatal(err)
				}
				ms = append(ms, m)
			}
			for i, m := range ms {
				if err := m.WaitReady(ctx, 1); err != nil {
					t.Fatalf("node %d: %v", i, err)
				}
			}
			// Everyone ends up seeing someone, and the overlay is connected.
			deadline := time.Now().Add(20 * time.Second)
			for !graphOf(ms).connected() {
				if time.Now().After(deadline) {
					t.Fatalf("overlay of %d not connected: %v", n, graphOf(ms))
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Connections use the transport under test.
			for _, c := range ms[1].Host().Network().ConnsToPeer(first.ID()) {
				if !strings.Contains(c.RemoteMultiaddr().String(), tc.match) {
					t.Fatalf("connection over %s, want %s", c.RemoteMultiaddr(), tc.match)
				}
			}
			// A neighbour's descriptor carries its signed addresses.
			for _, nb := range ms[1].Neighbours() {
				if len(nb.Addrs) == 0 {
					t.Fatalf("neighbour %s has no addresses", nb.ID)
				}
			}
			for i, m := range ms {
				if err := m.Leave(); err != nil {
					t.Fatalf("leave %d: %v", i, err)
				}
				if err := m.Leave(); err != nil {
					t.Fatalf("second leave %d: %v", i, err)
				}
				if err := m.WaitReady(ctx, 1); !errors.Is(err, ErrClosed) {
					t.Fatalf("WaitReady after Leave: %v, want ErrClosed", err)
				}
			}
			// After Leave, no goroutine of ours runs (the hosts are still up).
			deadline = time.Now().Add(5 * time.Second)
			for len(ourGoroutines()) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("goroutines of ours left after Leave:\n%s", strings.Join(ourGoroutines(), "\n\n"))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestLeaveTellsNeighbours(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	b := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	ma, err := JoinNetwork(ctx, a, "leave.net")
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Leave()
	changes := make(chan []Node, 16)
	stop := ma.OnNeighboursChanged(func(ns []Node) { changes <- ns })
	defer stop()
	mb, err := JoinNetwork(ctx, b, "leave.net", Bootstrap(peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ma.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if ns := <-changes; len(ns) != 1 || ns[0].ID != b.ID() {
		t.Fatalf("first change %v, want [b]", ns)
	}
	if err := mb.Leave(); err != nil {
		t.Fatal(err)
	}
	select {
	case ns := <-changes:
		if len(ns) != 0 {
			t.Fatalf("after b left, a's neighbours are %v", ns)
		}
	case <-ctx.Done():
		t.Fatal("a never heard that b left")
	}
}

func TestJoinUnreachableBootstrapNamesAddress(t *testing.T) {
	h := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	// A peer that existed once: a real ID at a port where nothing listens.
	gone := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	addr := addrOf(t, gone, "/tcp/")
	_ = gone.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := JoinNetwork(ctx, h, "x.net", Bootstrap(addr))
	if err == nil {
		t.Fatal("join through a dead bootstrap peer succeeded")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "x.net") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error %q does not name the network and the address %s", err, addr)
	}
	if elapsed := time.Since(start); elapsed > 6*time.Second {
		t.Fatalf("join returned after %v, past the context's deadline", elapsed)
	}
	t.Logf("error: %v", err)
}

func TestJoinWrongNetworkID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	b := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	ma, err := JoinNetwork(ctx, a, "right.net")
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Leave()
	_, err = JoinNetwork(ctx, b, "wrong.net", Bootstrap(addrOf(t, a, "/tcp/")))
	if err == nil || !strings.Contains(err.Error(), "does not run /unsserv/membership/wrong.net") {
		t.Fatalf("got %v, want an error saying the bootstrap does not run wrong.net", err)
	}
}

func TestJoinOptionErrors(t *testing.T) {
	h := loopbackHost(t, "/ip4/127.0.0.1/tcp/0")
	ctx := context.Background()
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{Bootstrap("/ip4/127.0.0.1/tcp/1"), "/p2p/"},
		{Bootstrap("not a multiaddr"), "not a multiaddr"},
		{Bootstrap(42), "int is not a peer.AddrInfo"},
		{Bootstrap(peer.AddrInfo{ID: h.ID()}), "this host itself"},
		{Profile(7), "unknown profile"},
		{Meta(make([]byte, 5000)), "limit"},
		{WithHyParView(membership.HyParViewConfig{ActiveSize: -1}), "ActiveSize"},
	} {
		_, err := JoinNetwork(ctx, h, "opts.net", tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
	if _, err := JoinNetwork(ctx, nil, "x"); err == nil {
		t.Error("nil host accepted")
	}
	if _, err := JoinNetwork(ctx, h, ""); err == nil {
		t.Error("empty network id accepted")
	}
}

// TestMembershipBadInput: a raw stream that writes garbage, then one that announces a
// message over the limit: both are reset, and the node keeps serving others.
func TestMembershipBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mn, err := mocknet.FullMeshLinked(3)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts()
	node, err := JoinNetwork(ctx, hs[0], "bad.net")
	if err != nil {
		t.Fatal(err)
	}
	defer node.Leave()
	pid := MembershipProtocol("bad.net")
	for _, payload := range [][]byte{
		append(binary.AppendUvarint(nil, 6), 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff), // not a Message
		binary.AppendUvarint(nil, 10<<20),                                        // announces 10 MiB
	} {
		st, err := hs[1].NewStream(ctx, hs[0].ID(), pid)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(payload); err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, st)
		if !errors.Is(err, network.ErrReset) {
			t.Fatalf("bad stream ended with %v, want a reset", err)
		}
	}
	if v := node.Stats().Violations; v != 2 {
		t.Fatalf("violations counted: %d, want 2", v)
	}
	// A well-behaved peer still joins.
	good, err := JoinNetwork(ctx, hs[2], "bad.net", Bootstrap(peer.AddrInfo{ID: hs[0].ID()}))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Leave()
	if err := node.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if ns := node.Neighbours(); len(ns) != 1 || ns[0].ID != hs[2].ID() {
		t.Fatalf("neighbours %v, want only the good peer", ns)
	}
}
