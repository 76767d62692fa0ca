package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestKeyFileKeepsIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "peer.key")
	ctx := context.Background()
	h1, err := New(ctx, KeyFile(path), ListenAddrs("/ip4/127.0.0.1/tcp/0"), NoNATTraversal(), DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	id := h1.ID()
	h1.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	h2, err := New(ctx, KeyFile(path), ListenAddrs("/ip4/127.0.0.1/tcp/0"), NoNATTraversal(), DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if h2.ID() != id {
		t.Fatalf("restart changed the peer ID: %s then %s", id, h2.ID())
	}
	if pub := h2.Peerstore().PubKey(h2.ID()); pub == nil || pub.Type().String() != "Ed25519" {
		t.Fatalf("identity is not Ed25519: %v", pub)
	}
}

func TestKeyFileGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.key")
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), KeyFile(path), NoNATTraversal(), DisableMetrics())
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("got %v, want an error naming %s and what to do", err, path)
	}
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, ListenAddrs("/ip4/127.0.0.1/tcp/notaport")); err == nil || !strings.Contains(err.Error(), "notaport") {
		t.Fatalf("bad listen address: %v", err)
	}
	if _, err := New(ctx, ConnLimits(10, 5, 0)); err == nil {
		t.Fatal("low > high accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := New(cancelled, ListenAddrs("/ip4/127.0.0.1/tcp/0"), NoNATTraversal(), DisableMetrics()); err == nil {
		t.Fatal("New with a cancelled context succeeded")
	}
}

func TestTransports(t *testing.T) {
	for _, tc := range []struct{ name, listen, want string }{
		{"tcp", "/ip4/127.0.0.1/tcp/0", "/tcp/"},
		{"quic", "/ip4/127.0.0.1/udp/0/quic-v1", "/quic-v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a, err := New(ctx, ListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"), NoNATTraversal(), DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := New(ctx, ListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"), NoNATTraversal(), DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var kinds []string
			for _, ad := range b.Addrs() {
				kinds = append(kinds, ad.String())
			}
			joined := strings.Join(kinds, " ")
			if !strings.Contains(joined, "/tcp/") || !strings.Contains(joined, "/quic-v1") {
				t.Fatalf("host listens on %s, want TCP and QUIC", joined)
			}
			info := peer.AddrInfo{ID: b.ID()}
			for _, ad := range b.Addrs() {
				if strings.Contains(ad.String(), tc.want) {
					info.Addrs = append(info.Addrs, ad)
				}
			}
			if err := a.Connect(ctx, info); err != nil {
				t.Fatal(err)
			}
			conns := a.Network().ConnsToPeer(b.ID())
			if len(conns) == 0 || !strings.Contains(conns[0].RemoteMultiaddr().String(), tc.want) {
				t.Fatalf("connections %v, want one over %s", conns, tc.want)
			}
		})
	}
}

func TestDefaultsStartAndClose(t *testing.T) {
	// NAT traversal on (the default), but listening on loopback only.
	h, err := New(context.Background(), ListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"), DisableMetrics(),
		Libp2pOptions(libp2p.UserAgent("unsserv-test/1")))
	if err != nil {
		t.Fatal(err)
	}
	if av, _ := h.Peerstore().Get(h.ID(), "AgentVersion"); av != nil && av != "unsserv-test/1" {
		t.Fatalf("agent %v", av)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}

func ExampleNew() {
	h, err := New(context.Background(),
		ListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), // default: TCP and QUIC on every interface
		KeyFile(filepath.Join(os.TempDir(), "unsserv-example.key")),
		NoNATTraversal(), // a host on loopback needs no NAT traversal
	)
	if err != nil {
		panic(err)
	}
	defer h.Close()
	fmt.Println("listening:", len(h.Addrs()) > 0)
	// Output: listening: true
}
