package main

import (
	"slices"
	"strings"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// fullAddrs returns addresses of peer id with /p2p/<id> appended: public ones first,
// then private, then relayed (/p2p-circuit), loopback last; sorted within each group.
func fullAddrs(id peer.ID, addrs []ma.Multiaddr) []string {
	type ranked struct {
		rank int
		s    string
	}
	rs := make([]ranked, 0, len(addrs))
	for _, a := range addrs {
		r := 0
		switch {
		case manet.IsIPLoopback(a):
			r = 3
		case connKind(a) == "relayed":
			r = 2
		case manet.IsPrivateAddr(a):
			r = 1
		}
		rs = append(rs, ranked{r, a.String() + "/p2p/" + id.String()})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return strings.Compare(a.s, b.s)
	})
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		if len(out) == 0 || out[len(out)-1] != r.s {
			out = append(out, r.s)
		}
	}
	return out
}

// hostAddrs returns the full multiaddrs others can reach h by, as the contract's addr
// lines carry them.
func hostAddrs(h p2phost.Host) []string { return fullAddrs(h.ID(), h.Addrs()) }

// connInfo is one connection of the host, as the peers command and GET /peers show it.
type connInfo struct {
	Peer string `json:"peer"`
	Addr string `json:"addr"`
	Kind string `json:"kind"` // "direct" or "relayed"
	Dir  string `json:"dir"`  // "inbound" or "outbound"
}

// connKind says whether a connection's remote address goes through a relay.
func connKind(remote ma.Multiaddr) string {
	for _, c := range remote {
		if c.Code() == ma.P_CIRCUIT {
			return "relayed"
		}
	}
	return "direct"
}

// conns lists h's connections, sorted by peer and address.
func conns(h p2phost.Host) []connInfo {
	var out []connInfo
	for _, c := range h.Network().Conns() {
		out = append(out, connInfo{
			Peer: c.RemotePeer().String(),
			Addr: c.RemoteMultiaddr().String(),
			Kind: connKind(c.RemoteMultiaddr()),
			Dir:  strings.ToLower(c.Stat().Direction.String()),
		})
	}
	slices.SortFunc(out, func(a, b connInfo) int {
		if a.Peer != b.Peer {
			return strings.Compare(a.Peer, b.Peer)
		}
		return strings.Compare(a.Addr, b.Addr)
	})
	return out
}
