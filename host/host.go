// Package host builds ready libp2p hosts for go-unsserv, and runs protocol cores over
// them.
//
// New returns a host with TCP and QUIC, Noise and TLS, yamux, an Ed25519 identity that
// can live in a key file, a connection manager, a resource manager, and NAT traversal
// (port mapping, AutoNAT v2, hole punching, the relay client) on by default. Every
// libp2p option stays reachable through Libp2pOptions. Applications that already have
// a libp2p host pass it to the services instead.
//
// Service runs one protocol core (package protocols) as one stream protocol
// /unsserv/<service>/<id> on a host: see docs/runtime.md for its goroutines, queues and
// failure handling.
package host

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultListenAddrs are the addresses New listens on without ListenAddrs: TCP and QUIC
// on every interface, IPv4 and IPv6, on ports the system picks.
var DefaultListenAddrs = []string{
	"/ip4/0.0.0.0/tcp/0",
	"/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/tcp/0",
	"/ip6/::/udp/0/quic-v1",
}

// Option configures New.
type Option func(*config) error

type config struct {
	listen       []string
	key          crypto.PrivKey
	keyFile      string
	connLow      int
	connHigh     int
	connGrace    time.Duration
	rm           network.ResourceManager
	nat          bool
	relays       []peer.AddrInfo
	peerSource   autorelay.PeerSource
	relayService bool
	relayOpts    []relay.Option
	holePunch    []holepunch.Option
	metrics      bool
	registerer   prometheus.Registerer
	extra        []libp2p.Option
}

// ListenAddrs replaces the default listen addresses (multiaddr strings).
func ListenAddrs(addrs ...string) Option {
	return func(c *config) error {
		for _, a := range addrs {
			if _, err := ma.NewMultiaddr(a); err != nil {
				return fmt.Errorf("listen address %q: %w", a, err)
			}
		}
		c.listen = append([]string(nil), addrs...)
		return nil
	}
}

// Identity sets the host's private key.
func Identity(key crypto.PrivKey) Option {
	return func(c *config) error {
		if key == nil {
			return fmt.Errorf("identity: nil key")
		}
		c.key = key
		return nil
	}
}

// KeyFile keeps the host's identity in a file: the key is loaded from it, or, when the
// file does not exist, a new Ed25519 key is created and saved there (mode 0600), so the
// peer keeps its ID across restarts.
func KeyFile(path string) Option {
	return func(c *config) error {
		if path == "" {
			return fmt.Errorf("key file: empty path")
		}
		c.keyFile = path
		return nil
	}
}

// ConnLimits sets the connection manager's watermarks: above high connections it trims
// down to low, sparing connections younger than grace and protected ones (overlay
// neighbours). Defaults: 160, 192, 1 min.
func ConnLimits(low, high int, grace time.Duration) Option {
	return func(c *config) error {
		if low < 0 || high < low || grace < 0 {
			return fmt.Errorf("connection limits: want 0 <= low (%d) <= high (%d) and grace (%v) >= 0", low, high, grace)
		}
		c.connLow, c.connHigh, c.connGrace = low, high, grace
		return nil
	}
}

// ResourceManager replaces the default resource manager (see DefaultLimits).
func ResourceManager(rm network.ResourceManager) Option {
	return func(c *config) error {
		c.rm = rm
		return nil
	}
}

// NoNATTraversal switches off port mapping, AutoNAT, hole punching and auto-relay:
// for hosts on loopback, in tests, or on known public addresses.
func NoNATTraversal() Option {
	return func(c *config) error {
		c.nat = false
		return nil
	}
}

// Relays names circuit relay v2 nodes to reserve a slot on when the host is behind a
// NAT, so that others can reach it through /p2p-circuit addresses.
func Relays(relays ...peer.AddrInfo) Option {
	return func(c *config) error {
		c.relays = append(c.relays, relays...)
		return nil
	}
}

// RelayPeerSource gives auto-relay a source of candidate relays (see
// autorelay.PeerSource), for example the members of an overlay that offer the relay
// service.
func RelayPeerSource(src autorelay.PeerSource) Option {
	return func(c *config) error {
		c.peerSource = src
		return nil
	}
}

// RelayService makes the host a circuit relay v2 and AutoNAT server for others, and
// declares it publicly reachable: for bootstrap nodes on public addresses. Without
// options the relay uses OverlayRelayResources; relay.WithResources or relay.WithLimit
// set others.
func RelayService(opts ...relay.Option) Option {
	return func(c *config) error {
		c.relayService = true
		c.relayOpts = append(c.relayOpts, opts...)
		return nil
	}
}

// HolePunching passes options (a tracer, for example) to the hole punching service that
// NAT traversal switches on.
func HolePunching(opts ...holepunch.Option) Option {
	return func(c *config) error {
		c.holePunch = append(c.holePunch, opts...)
		return nil
	}
}

// OverlayRelayResources are libp2p's default relay resources with circuit limits that
// fit overlay links: libp2p's defaults cut a circuit after 2 minutes or 128 KiB per
// direction, which an overlay neighbourship carrying broadcasts outlives within minutes.
// Here a circuit lasts up to 30 minutes or 32 MiB per direction; hole punching usually
// replaces it with a direct connection within seconds, and a circuit that is cut is
// reopened by the next message (the runtime dials again). Reservations and circuits
// stay bounded as in libp2p's defaults (128 reservations, 16 circuits per peer).
func OverlayRelayResources() relay.Resources {
	rc := relay.DefaultResources()
	rc.Limit = &relay.RelayLimit{Duration: 30 * time.Minute, Data: 32 << 20}
	return rc
}

// DisableMetrics turns libp2p's Prometheus metrics off. Several hosts in one process
// should use it: libp2p's collectors are process-wide.
func DisableMetrics() Option {
	return func(c *config) error {
		c.metrics = false
		return nil
	}
}

// PrometheusRegisterer registers libp2p's metrics with reg instead of Prometheus's
// default registerer.
func PrometheusRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) error {
		c.registerer = reg
		return nil
	}
}

// Libp2pOptions appends libp2p options after the ones New builds, so they override
// them.
func Libp2pOptions(opts ...libp2p.Option) Option {
	return func(c *config) error {
		c.extra = append(c.extra, opts...)
		return nil
	}
}

// DefaultLimits returns the resource limits New uses: libp2p's defaults scaled to the
// machine, plus limits for the unsserv services (streams are attached to services named
// "unsserv.<service>" by the runtime).
func DefaultLimits() rcmgr.ScalingLimitConfig {
	cfg := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&cfg)
	// Membership keeps one long-lived stream per neighbour each way, plus short ones
	// for shuffles: a few hundred streams for the service, a handful per peer.
	cfg.AddServiceLimit("unsserv.membership",
		rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 16 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 128, StreamsOutbound: 128, Streams: 256, Memory: 8 << 20})
	cfg.AddServicePeerLimit("unsserv.membership",
		rcmgr.BaseLimit{StreamsInbound: 8, StreamsOutbound: 8, Streams: 16, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{})
	return cfg
}

// New builds and starts a host. See the package doc for what it contains.
func New(ctx context.Context, opts ...Option) (p2phost.Host, error) {
	c := &config{
		listen:    DefaultListenAddrs,
		connLow:   160,
		connHigh:  192,
		connGrace: time.Minute,
		nat:       true,
		metrics:   true,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(c); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
	}
	if c.key != nil && c.keyFile != "" {
		return nil, fmt.Errorf("host: both Identity and KeyFile given: use one")
	}
	key := c.key
	if c.keyFile != "" {
		var err error
		if key, err = LoadOrCreateKey(c.keyFile); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
	}
	if key == nil {
		var err error
		if key, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			return nil, fmt.Errorf("host: generate identity: %w", err)
		}
	}
	cm, err := connmgr.NewConnManager(c.connLow, c.connHigh, connmgr.WithGracePeriod(c.connGrace))
	if err != nil {
		return nil, fmt.Errorf("host: connection manager: %w", err)
	}
	rm := c.rm
	if rm == nil {
		limits := DefaultLimits()
		if rm, err = rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale())); err != nil {
			return nil, fmt.Errorf("host: resource manager: %w", err)
		}
	}

	lopts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(c.listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
	}
	if !c.metrics {
		lopts = append(lopts, libp2p.DisableMetrics())
	} else if c.registerer != nil {
		lopts = append(lopts, libp2p.PrometheusRegisterer(c.registerer))
	}
	if c.nat {
		lopts = append(lopts, libp2p.NATPortMap(), libp2p.EnableAutoNATv2(), libp2p.EnableHolePunching(c.holePunch...))
	}
	// Relays asked for by name are used even without the rest of NAT traversal.
	switch {
	case len(c.relays) > 0:
		lopts = append(lopts, libp2p.EnableAutoRelayWithStaticRelays(c.relays))
	case c.peerSource != nil && c.nat:
		lopts = append(lopts, libp2p.EnableAutoRelayWithPeerSource(c.peerSource, autorelay.WithMinCandidates(1)))
	}
	if c.relayService {
		ropts := append([]relay.Option{relay.WithResources(OverlayRelayResources())}, c.relayOpts...)
		lopts = append(lopts, libp2p.EnableRelayService(ropts...), libp2p.EnableNATService(), libp2p.ForceReachabilityPublic())
	}
	lopts = append(lopts, c.extra...)
	h, err := libp2p.New(lopts...)
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("host: %w", err)
	}
	if err := ctx.Err(); err != nil {
		_ = h.Close()
		return nil, err
	}
	return h, nil
}
