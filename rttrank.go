package unsserv

import (
	"context"
	"sync"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// RTTUnknown is the rank RTTRank gives a node whose round-trip time is not measured
// yet (or could not be): one minute, in milliseconds. It is finite, so such nodes rank
// after every measured one but still in a definite order (by peer ID).
const RTTUnknown = 60_000.0

const (
	rttMaxPings    = 16               // pings in flight at once
	rttPingTimeout = 10 * time.Second // one ping's deadline
	rttRetryAfter  = time.Minute      // a node whose ping failed is not pinged again before
	rttMaxFailed   = 4096             // failed pings remembered
)

// RTTRank returns a rank for NewClustering that matches the physical topology: the
// round-trip time to the node, in milliseconds, as the peerstore's moving average
// (EWMA) of libp2p ping measurements, lower being better. When the peerstore has no
// measurement of a node yet, the rank starts a libp2p ping to it in the background
// and returns RTTUnknown meanwhile; the next ranking (T-Man and X-BOT rank afresh
// every cycle) sees the measurement. Pings are deduplicated per node, at most 16 run
// at once (the others are started by later calls), each is bounded by 10 s, a node
// whose ping failed is tried again after a minute at the earliest, and no ping starts
// once ctx has ended. The other node must run libp2p's ping protocol (libp2p.New and
// host.New do by default). The rank itself never blocks and is safe for concurrent
// use. This node ranks itself 0.
func RTTRank(ctx context.Context, h p2phost.Host) func(Node) float64 {
	return newRTTRanker(ctx, h).rank
}

func newRTTRanker(ctx context.Context, h p2phost.Host) *rttRanker {
	return &rttRanker{ctx: ctx, h: h, pending: map[peer.ID]struct{}{}, failed: map[peer.ID]time.Time{}}
}

type rttRanker struct {
	ctx context.Context
	h   p2phost.Host

	mu      sync.Mutex
	pending map[peer.ID]struct{} // pings in flight
	failed  map[peer.ID]time.Time
}

func (r *rttRanker) rank(n Node) float64 {
	if n.ID == r.h.ID() {
		return 0
	}
	if lat := r.h.Peerstore().LatencyEWMA(n.ID); lat > 0 {
		return float64(lat) / float64(time.Millisecond)
	}
	r.start(n)
	return RTTUnknown
}

// start pings n in the background unless a ping to it is in flight, too many are, it
// failed lately, or ctx has ended.
func (r *rttRanker) start(n Node) {
	if r.ctx.Err() != nil || n.ID == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pending[n.ID]; ok || len(r.pending) >= rttMaxPings {
		return
	}
	if at, ok := r.failed[n.ID]; ok && time.Since(at) < rttRetryAfter {
		return
	}
	r.pending[n.ID] = struct{}{}
	if len(n.Addrs) > 0 {
		r.h.Peerstore().AddAddrs(n.ID, n.Addrs, time.Hour)
	}
	go r.ping(n.ID)
}

func (r *rttRanker) ping(p peer.ID) {
	ctx, cancel := context.WithTimeout(r.ctx, rttPingTimeout)
	res := <-ping.Ping(ctx, r.h, p) // a success is recorded in the peerstore by Ping
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pending, p)
	if res.Error != nil {
		if len(r.failed) >= rttMaxFailed {
			clear(r.failed)
		}
		r.failed[p] = time.Now()
	}
}
