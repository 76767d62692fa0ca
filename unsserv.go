package unsserv

import (
	"context"
	"errors"
	"fmt"
	"strings"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// ErrClosed is returned by calls on a service after Leave.
var ErrClosed = host.ErrClosed

// Node is a peer of the network as a service sees it.
type Node struct {
	// ID is the peer's libp2p identity.
	ID peer.ID
	// Addrs are the addresses the peer signed in its peer record (empty if the peer sent
	// no record and the host knows none).
	Addrs []ma.Multiaddr
	// Meta is the application metadata the peer published (see the Meta option).
	Meta []byte
}

// AddrInfo returns the node as a libp2p peer.AddrInfo.
func (n Node) AddrInfo() peer.AddrInfo { return peer.AddrInfo{ID: n.ID, Addrs: n.Addrs} }

// String returns the peer ID in its short form.
func (n Node) String() string { return n.ID.ShortString() }

// Overlay is what every service is built on: a set of neighbours that changes over
// time. *Membership satisfies it.
type Overlay interface {
	// Neighbours returns the current neighbours.
	Neighbours() []Node
	// OnNeighboursChanged calls f with the new neighbours whenever they change, from
	// one goroutine, never concurrently; calls may coalesce (f always gets the latest
	// set). stop removes f.
	OnNeighboursChanged(f func([]Node)) (stop func())
	// WaitReady blocks until there are at least n neighbours, or ctx ends.
	WaitReady(ctx context.Context, n int) error
	// Leave stops the service and says goodbye to the neighbours.
	Leave() error
	// Host returns the libp2p host the overlay runs on; services stacked on the overlay
	// run on the same host.
	Host() p2phost.Host
}

// Profile picks the algorithms behind the services. It is an Option.
type Profile int

const (
	// Stable favours reliability: HyParView membership (the default).
	Stable Profile = iota
	// Extreme favours resilience to very high churn: Newscast membership.
	Extreme
)

func (p Profile) String() string {
	switch p {
	case Stable:
		return "stable"
	case Extreme:
		return "extreme"
	}
	return fmt.Sprintf("Profile(%d)", int(p))
}

func (p Profile) apply(o *options) error {
	if p != Stable && p != Extreme {
		return fmt.Errorf("unknown profile %d: use unsserv.Stable or unsserv.Extreme", int(p))
	}
	o.profile = p
	o.profileSet = true
	return nil
}

// Option configures a service.
type Option interface{ apply(*options) error }

type optionFunc func(*options) error

func (f optionFunc) apply(o *options) error { return f(o) }

type options struct {
	profile    Profile
	profileSet bool
	bootstrap  []peer.AddrInfo
	meta       []byte
	hyparview  membership.HyParViewConfig
	newscast   membership.NewscastConfig
	seed       *uint64

	dissemination disseminationOptions
	aggregation   aggregationOptions
	sampling      samplingOptions
	search        searchOptions
	clustering    clusteringOptions
}

func buildOptions(opts []Option) (*options, error) {
	o := &options{}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.apply(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Bootstrap names peers already in the network to join through. Each argument is a
// peer.AddrInfo (or a pointer to one), a multiaddr, or a multiaddr string ending in
// /p2p/<peer ID>, e.g. "/ip4/192.0.2.7/udp/7771/quic-v1/p2p/12D3KooW...". Addresses of
// the same peer are merged. Without Bootstrap the node starts a new network.
func Bootstrap(peers ...any) Option {
	return optionFunc(func(o *options) error {
		var addrs []ma.Multiaddr
		for _, p := range peers {
			switch v := p.(type) {
			case peer.AddrInfo:
				o.bootstrap = append(o.bootstrap, v)
			case *peer.AddrInfo:
				if v == nil {
					return errors.New("bootstrap: nil *peer.AddrInfo")
				}
				o.bootstrap = append(o.bootstrap, *v)
			case string:
				a, err := ma.NewMultiaddr(strings.TrimSpace(v))
				if err != nil {
					return fmt.Errorf("bootstrap address %q: %w", v, err)
				}
				addrs = append(addrs, a)
			case ma.Multiaddr:
				addrs = append(addrs, v)
			default:
				return fmt.Errorf("bootstrap: %T is not a peer.AddrInfo or multiaddr; pass peer.AddrInfo values or strings like /ip4/1.2.3.4/tcp/7771/p2p/12D3KooW...", p)
			}
		}
		for _, a := range addrs {
			if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
				return fmt.Errorf("bootstrap address %s: %w (it must end in /p2p/<peer ID>)", a, err)
			}
		}
		infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		o.bootstrap = append(o.bootstrap, infos...)
		for _, ai := range o.bootstrap {
			if err := ai.ID.Validate(); err != nil {
				return fmt.Errorf("bootstrap: peer.AddrInfo without a valid ID: %w", err)
			}
		}
		return nil
	})
}

// Meta sets the application metadata this node publishes with its descriptor (the
// Python library's "extra"); clustering ranks nodes by it. Keep it small: it travels
// in every shuffle.
func Meta(b []byte) Option {
	return optionFunc(func(o *options) error {
		if len(b) > maxMeta {
			return fmt.Errorf("meta is %d bytes; the limit is %d", len(b), maxMeta)
		}
		o.meta = append([]byte(nil), b...)
		return nil
	})
}

const maxMeta = 4096

// WithHyParView sets the HyParView parameters of the Stable profile; its zero value
// means the paper's defaults.
func WithHyParView(cfg membership.HyParViewConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.hyparview = cfg
		return nil
	})
}

// WithNewscast sets the Newscast parameters of the Extreme profile; its zero value
// means the paper's defaults.
func WithNewscast(cfg membership.NewscastConfig) Option {
	return optionFunc(func(o *options) error {
		if err := cfg.Validate(); err != nil {
			return err
		}
		o.newscast = cfg
		return nil
	})
}

// Seed fixes the seed of the protocol's random choices (tests, experiments). By
// default each service draws a seed from the system's random source.
func Seed(seed uint64) Option {
	return optionFunc(func(o *options) error {
		o.seed = &seed
		return nil
	})
}

// recordAddrs returns the addresses of id's signed peer record rec (already checked by
// the runtime), or nil if rec is empty, unreadable or another peer's.
func recordAddrs(id peer.ID, rec []byte) []ma.Multiaddr {
	if len(rec) == 0 {
		return nil
	}
	_, r, err := record.ConsumeEnvelope(rec, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return nil
	}
	if pr, ok := r.(*peer.PeerRecord); ok && pr.PeerID == id {
		return pr.Addrs
	}
	return nil
}
