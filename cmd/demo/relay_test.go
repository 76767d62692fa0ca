package main

import (
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/unsserv/go-unsserv/host"
)

// Relay mode: the relay starts the network; two peers join through it (and name it as
// their relay); a broadcast of one reaches the other and the relay; the relay serves
// /addrs and /metrics.
func TestRelayModeBootstrapsPeers(t *testing.T) {
	checkNoLeaks(t)
	r := startDemo(t, "relay", "-listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "-network", "t.net", "-http", "127.0.0.1:0")
	_, l := r.out.wait(t, 0, "peer ID ")
	rID := strings.TrimPrefix(l, "peer ID ")
	_, l = r.out.wait(t, 0, "addr /ip4/127.0.0.1/tcp/")
	rAddr := strings.TrimPrefix(l, "addr ")
	r.out.waitExact(t, 0, "joined network t.net")
	r.out.wait(t, 0, "relay service on: circuits last 1h0m0s and carry 64 MiB each way")

	a, aID, _ := startPeer(t, "-bootstrap", rAddr, "-relay", rAddr)
	a.out.waitExact(t, 0, "neighbours (1): "+rID)
	b, bID, _ := startPeer(t, "-bootstrap", rAddr, "-relay", rAddr)
	b.out.wait(t, 0, "neighbours (")
	r.out.waitFunc(t, 0, "naming both peers", func(l string) bool {
		return strings.HasPrefix(l, "neighbours (2): ") && strings.Contains(l, aID) && strings.Contains(l, bID)
	})

	mark := a.out.len()
	a.send(t, "broadcast through the relay's network")
	a.out.waitExact(t, mark, "ok broadcast")
	b.out.waitExact(t, 0, "broadcast from "+aID+": through the relay's network")
	r.out.waitExact(t, 0, "broadcast from "+aID+": through the relay's network")

	url := r.httpURL(t)
	var as addrsJSON
	getJSON(t, url+"/addrs", &as)
	if as.ID != rID || !contains(as.Addrs, rAddr) {
		t.Fatalf("relay's GET /addrs = %+v, want id %s and %s", as, rID, rAddr)
	}
	_, metrics := httpGet(t, url+"/metrics")
	for _, want := range []string{`unsserv_neighbours{algorithm="hyparview",protocol="/unsserv/membership/t.net",service="membership"} 2`, "\nlibp2p_"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("relay's /metrics lacks %q", want)
		}
	}
}

func TestRelayLimitsFitAnOverlay(t *testing.T) {
	r := relayResources()
	if r.Limit == nil || r.Limit.Duration < 30*60e9 || r.Limit.Data < 1<<20 {
		t.Fatalf("relayed connections limited to %+v: overlay links would be cut every few minutes", r.Limit)
	}
	if r.MaxReservations <= 0 || r.MaxCircuits <= 0 || r.MaxReservationsPerIP <= 0 {
		t.Fatalf("unbounded relay: %+v", r)
	}
}

// Through the relay: a peer holding a reservation prints its /p2p-circuit address
// when the host's addresses change, and a peer that dials that printed address shows in
// its peers answer as relayed.
//
// On loopback auto-relay never reserves (libp2p only uses public relay addresses), so
// the test makes the reservation itself and hands the host the circuit address as
// auto-relay would (EvtAutoRelayAddrsUpdated); the rest is the real path.
func TestPeerPrintsCircuitAddrAndRelayedConns(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	r := startDemo(t, "relay", "-listen", "/ip4/127.0.0.1/tcp/0", "-network", "t.net")
	_, l := r.out.wait(t, 0, "addr /ip4/127.0.0.1/tcp/")
	rAddr := strings.TrimPrefix(l, "addr ")
	r.out.waitExact(t, 0, "joined network t.net")
	relays, err := parseRelays([]string{rAddr})
	if err != nil {
		t.Fatal(err)
	}

	out := newTranscript()
	n, err := startNode(ctx, nodeConfig{
		listen: []string{"/ip4/127.0.0.1/tcp/0"}, network: "t.net", bootstrap: []string{rAddr},
		relays: relays, joinTimeout: waitTimeout,
	}, newPrinter(out))
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	nID := n.h.ID().String()
	if _, err := client.Reserve(ctx, n.h, relays[0]); err != nil {
		t.Fatal(err)
	}
	em, err := n.h.EventBus().Emitter(new(event.EvtAutoRelayAddrsUpdated))
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close()
	circuit := rAddr + "/p2p-circuit"
	if err := em.Emit(event.EvtAutoRelayAddrsUpdated{RelayAddrs: []ma.Multiaddr{ma.StringCast(circuit)}}); err != nil {
		t.Fatal(err)
	}
	full := circuit + "/p2p/" + nID
	out.waitExact(t, 0, "addr "+full)

	// Another host dials the printed address: the connection goes through the relay.
	c, err := host.New(ctx, host.ListenAddrs("/ip4/127.0.0.1/tcp/0"), host.NoNATTraversal(), host.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ai, err := peer.AddrInfoFromString(full)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	mark := out.len()
	n.command(ctx, "peers")
	okAt := out.waitExact(t, mark, "ok peers")
	var relayed, direct bool
	for _, l := range strings.Split(out.String(), "\n")[mark:okAt] {
		relayed = relayed || (strings.HasPrefix(l, "conn "+c.ID().String()+" ") && strings.Contains(l, "/p2p-circuit") && strings.HasSuffix(l, " relayed"))
		direct = direct || (strings.HasPrefix(l, "conn "+relays[0].ID.String()+" ") && strings.HasSuffix(l, " direct"))
	}
	if !relayed || !direct {
		t.Fatalf("peers answer lacks the relayed connection from %s (%v) or the direct one to the relay (%v):\n%s", c.ID(), relayed, direct, out)
	}
}

func TestConnKind(t *testing.T) {
	for addr, want := range map[string]string{
		"/ip4/1.2.3.4/tcp/7771":         "direct",
		"/ip4/1.2.3.4/udp/7771/quic-v1": "direct",
		"/ip4/1.2.3.1/tcp/7771/p2p/12D3KooWBCfYghbvjTzqiZsrH5efNxxPCbfPBis21AfnpAfK69yh/p2p-circuit": "relayed",
	} {
		if got := connKind(ma.StringCast(addr)); got != want {
			t.Errorf("connKind(%s) = %s, want %s", addr, got, want)
		}
	}
}
