package unsserv

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// RTTRank's ranker on three mocknet hosts, a near one (5 ms each way) and a far one (40 ms),
// in virtual time: unmeasured nodes rank RTTUnknown while one deduplicated ping each
// runs in the background; then the ranks are the round-trip times and order the nodes;
// once ctx ends no ping starts.
func TestRTTRank(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mocknet.New()
		defer mn.Close()
		var hs []p2phost.Host
		for range 4 {
			h, err := mn.GenPeer()
			if err != nil {
				t.Fatal(err)
			}
			ping.NewPingService(h) // mocknet hosts do not answer pings by themselves
			hs = append(hs, h)
		}
		for i, lat := range []time.Duration{5 * time.Millisecond, 40 * time.Millisecond} {
			l, err := mn.LinkPeers(hs[0].ID(), hs[i+1].ID())
			if err != nil {
				t.Fatal(err)
			}
			l.SetOptions(mocknet.LinkOptions{Latency: lat})
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := newRTTRanker(ctx, hs[0])
		rank := r.rank
		near, far := Node{ID: hs[1].ID()}, Node{ID: hs[2].ID()}
		if got := rank(Node{ID: hs[0].ID()}); got != 0 {
			t.Fatalf("self ranks %v, want 0", got)
		}
		for range 50 {
			if rank(near) != RTTUnknown || rank(far) != RTTUnknown {
				t.Fatal("a node ranked before any measurement")
			}
		}
		r.mu.Lock()
		inFlight := len(r.pending)
		r.mu.Unlock()
		if inFlight != 2 {
			t.Fatalf("%d pings in flight after 100 calls on 2 nodes, want 2 (deduplicated)", inFlight)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		rn, rf := rank(near), rank(far)
		if rn < 10 || rn > 12 || rf < 80 || rf > 85 {
			t.Fatalf("ranks %v ms (near, 5 ms links) and %v ms (far, 40 ms links)", rn, rf)
		}
		// A node that does not answer (no link) ranks RTTUnknown and is not pinged again
		// at once.
		lost := Node{ID: hs[3].ID()}
		rank(lost)
		time.Sleep(time.Second)
		synctest.Wait()
		if rank(lost) != RTTUnknown {
			t.Fatal("an unreachable node got a rank")
		}
		r.mu.Lock()
		_, failed := r.failed[lost.ID]
		inFlight = len(r.pending)
		r.mu.Unlock()
		if !failed || inFlight != 0 {
			t.Fatalf("unreachable node: failed %v, %d pings in flight", failed, inFlight)
		}
		cancel()
		hs[0].Peerstore().RemovePeer(near.ID)
		if rank(near) != RTTUnknown {
			t.Fatal("rank after forgetting the measurement")
		}
		r.mu.Lock()
		inFlight = len(r.pending)
		r.mu.Unlock()
		if inFlight != 0 {
			t.Fatal("a ping started after ctx ended")
		}
	})
}
