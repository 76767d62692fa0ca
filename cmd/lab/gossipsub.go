package main

// The GossipSub half of the broadcast comparison: go-libp2p-pubsub's GossipSub with its
// default parameters on a mockNet.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

const gossipTopic = "unsserv-lab-broadcast"

// runGossipSub runs spec over GossipSub on net: a GossipSub router with the default
// parameters (and default strict message signing) on every host, one topic that every
// host joins and subscribes to, then net.Connect. Once every host sees all its
// neighbours subscribed and has a non-empty mesh, it waits spec.Settle (heartbeats
// graft the mesh up to D), publishes spec's messages, waits until all are delivered
// (or spec.Timeout after the last publish), waits spec.Settle more and stops. Copies,
// control items and bytes come from a RawTracer on each host (RecvRPC, SendRPC).
// Each subscription buffers every message of spec (a subscription option, not a
// GossipSub parameter), so a stalled reader cannot make pubsub drop deliveries. Before
// it returns, the pubsub context is cancelled and the readers have stopped; the
// remaining stream goroutines end when the caller closes net (one mockNet per run).
func runGossipSub(ctx context.Context, net *mockNet, spec bcastSpec) (bcastRow, error) {
	start := time.Now()
	n := len(net.Hosts)
	msgs := len(spec.Payloads)
	for _, p := range spec.Publishers {
		if p < 0 || p >= n {
			return bcastRow{}, fmt.Errorf("gossipsub: publisher %d out of %d nodes", p, n)
		}
	}
	rec := newBcastRecorder(n, spec)

	psCtx, cancel := context.WithCancel(ctx)
	var readers sync.WaitGroup
	defer func() {
		cancel()
		readers.Wait()
	}()

	topics := make([]*pubsub.Topic, n)
	tracers := make([]*gsTracer, n)
	for i, h := range net.Hosts {
		tracers[i] = &gsTracer{rec: rec, msgs: msgs}
		ps, err := pubsub.NewGossipSub(psCtx, h, pubsub.WithRawTracer(tracers[i]))
		if err != nil {
			return bcastRow{}, fmt.Errorf("gossipsub: host %d: %w", i, err)
		}
		t, err := ps.Join(gossipTopic)
		if err != nil {
			return bcastRow{}, fmt.Errorf("gossipsub: host %d: join: %w", i, err)
		}
		sub, err := t.Subscribe(pubsub.WithBufferSize(msgs + 32))
		if err != nil {
			return bcastRow{}, fmt.Errorf("gossipsub: host %d: subscribe: %w", i, err)
		}
		topics[i] = t
		readers.Add(1)
		go func(node int) {
			defer readers.Done()
			for {
				m, err := sub.Next(psCtx)
				if err != nil {
					return
				}
				if k, ok := payloadSeq(m.Data, msgs); ok {
					rec.delivered(node, k, time.Now())
				}
			}
		}(i)
	}
	if err := net.Connect(ctx); err != nil {
		return bcastRow{}, err
	}

	// Wait for the overlay: every host sees each of its neighbours in the topic and has
	// grafted at least one of them.
	deadline := time.Now().Add(spec.Timeout)
	for {
		ready := true
		for i, t := range topics {
			if len(t.ListPeers()) < len(net.Neighbours[i]) || tracers[i].mesh.Load() < 1 {
				ready = false
				break
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			return bcastRow{}, fmt.Errorf("gossipsub: mesh not formed within %v", spec.Timeout)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return bcastRow{}, err
		}
	}
	if err := sleepCtx(ctx, spec.Settle); err != nil {
		return bcastRow{}, err
	}

	rec.startMeasuring()
	stopLag := startLagProbe()
	defer stopLag()
	err := publishAll(ctx, spec, rec, func(ctx context.Context, node int, payload []byte) error {
		return topics[node].Publish(ctx, payload)
	})
	if err != nil {
		return bcastRow{}, fmt.Errorf("gossipsub: %w", err)
	}
	t := time.NewTimer(spec.Timeout)
	select {
	case <-rec.done():
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	if err := sleepCtx(ctx, spec.Settle); err != nil {
		return bcastRow{}, err
	}
	rec.stopMeasuring()
	lag := stopLag()

	cancel()
	readers.Wait()
	row := summarise("gossipsub", n, net.Latency, spec, rec.trace())
	row.Wall, row.Lag = time.Since(start), lag
	return row, nil
}

// gsTracer is the RawTracer of one host: it counts payload copies of the run's
// messages and control items on the wire, and tracks the host's mesh size.
type gsTracer struct {
	rec  *bcastRecorder
	msgs int
	mesh atomic.Int32 // peers in this host's mesh for the topic (Graft - Prune)
}

var _ pubsub.RawTracer = (*gsTracer)(nil)

func (t *gsTracer) RecvRPC(rpc *pubsub.RPC) {
	if !t.rec.measuring.Load() {
		return
	}
	t.eachCopy(rpc, t.rec.copyRecv)
	t.rec.received(proto.Size(&rpc.RPC), controlItems(rpc))
}

func (t *gsTracer) SendRPC(rpc *pubsub.RPC, _ peer.ID) { t.eachCopy(rpc, t.rec.copySent) }

// DropRPC: an RPC that did not fit in the peer's outgoing queue (it is not passed to
// SendRPC).
func (t *gsTracer) DropRPC(rpc *pubsub.RPC, _ peer.ID) { t.eachCopy(rpc, t.rec.copyDropped) }

// eachCopy calls f with the message number of every payload copy of the run in rpc.
func (t *gsTracer) eachCopy(rpc *pubsub.RPC, f func(k int)) {
	if !t.rec.measuring.Load() {
		return
	}
	for _, m := range rpc.GetPublish() {
		if m.GetTopic() != gossipTopic {
			continue
		}
		if k, ok := payloadSeq(m.GetData(), t.msgs); ok {
			f(k)
		}
	}
}

// controlItems counts the control items of an RPC by kind: message IDs of IHAVE, IWANT
// and IDONTWANT, entries of GRAFT and PRUNE.
func controlItems(rpc *pubsub.RPC) map[string]int {
	c := rpc.GetControl()
	if c == nil {
		return nil
	}
	items := map[string]int{}
	for _, ih := range c.GetIhave() {
		items["IHAVE"] += len(ih.GetMessageIDs())
	}
	for _, iw := range c.GetIwant() {
		items["IWANT"] += len(iw.GetMessageIDs())
	}
	for _, idw := range c.GetIdontwant() {
		items["IDONTWANT"] += len(idw.GetMessageIDs())
	}
	if g := len(c.GetGraft()); g > 0 {
		items["GRAFT"] += g
	}
	if p := len(c.GetPrune()); p > 0 {
		items["PRUNE"] += p
	}
	for kind, v := range items {
		if v == 0 {
			delete(items, kind)
		}
	}
	return items
}

func (t *gsTracer) Graft(_ peer.ID, topic string) {
	if topic == gossipTopic {
		t.mesh.Add(1)
	}
}

func (t *gsTracer) Prune(_ peer.ID, topic string) {
	if topic == gossipTopic {
		t.mesh.Add(-1)
	}
}

func (t *gsTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *gsTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *gsTracer) Join(string)                                          {}
func (t *gsTracer) Leave(string)                                         {}
func (t *gsTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *gsTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *gsTracer) RejectMessage(*pubsub.Message, string)                {}
func (t *gsTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *gsTracer) ThrottlePeer(peer.ID)                                 {}
func (t *gsTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (t *gsTracer) UndeliverableMessage(*pubsub.Message)                 {}
