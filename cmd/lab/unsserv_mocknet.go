package main

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// runUnsserv runs spec on our stack over net: a membership (HyParView, or Newscast for
// the extreme protocols) and the dissemination protocol on every host, the same
// publishers, payloads and link latency as runGossipSub. HyParView picks its own
// neighbours among all hosts, as it would on the internet, so every pair of hosts is
// linked (not connected) first; hosts join through one of their topology neighbours.
// Before measuring, warmup broadcasts (not counted) let the tree protocols settle.
func runUnsserv(ctx context.Context, net *mockNet, spec bcastSpec, protocol string, warmup int) (bcastRow, error) {
	start := time.Now()
	n := len(net.Hosts)
	msgs := len(spec.Payloads)
	var opts []unsserv.Option
	profile := unsserv.Stable
	switch protocol {
	case "plumtree":
	case "brisa":
		opts = append(opts, unsserv.OneToMany)
	case "lpbcast":
		profile = unsserv.Extreme
	case "mon":
		profile = unsserv.Extreme
		opts = append(opts, unsserv.OneToMany)
	default:
		return bcastRow{}, fmt.Errorf("unknown protocol %q", protocol)
	}
	if err := net.mn.LinkAll(); err != nil {
		return bcastRow{}, err
	}
	rec := newBcastRecorder(n, spec)

	ms := make([]*unsserv.Membership, n)
	ds := make([]*unsserv.Dissemination, n)
	defer func() {
		for i := range ms {
			if ds[i] != nil {
				_ = ds[i].Leave()
			}
			if ms[i] != nil {
				_ = ms[i].Leave()
			}
		}
	}()
	for i, h := range net.Hosts {
		o := []unsserv.Option{profile, unsserv.Seed(net.Seed*1000 + uint64(i)),
			unsserv.WithHyParView(membership.HyParViewConfig{ShuffleInterval: 2 * time.Second}),
			unsserv.WithNewscast(membership.NewscastConfig{Interval: 2 * time.Second})}
		if i > 0 {
			j := 0
			for _, q := range net.Neighbours[i] {
				if q < i {
					j = q
					break
				}
			}
			o = append(o, unsserv.Bootstrap(peer.AddrInfo{ID: net.Hosts[j].ID()}))
		}
		m, err := unsserv.JoinNetwork(ctx, h, "bcast.net", o...)
		if err != nil {
			return bcastRow{}, fmt.Errorf("unsserv: host %d: %w", i, err)
		}
		ms[i] = m
		node := i
		d, err := unsserv.NewDissemination(ctx, m, "bcast", nil, append(opts, unsserv.Seed(net.Seed*1000+uint64(n+i)),
			unsserv.DeliveryQueue(msgs+warmup+32),
			unsserv.OnBroadcast(func(b unsserv.Broadcast) {
				if k, ok := payloadSeq(b.Data, msgs); ok {
					rec.delivered(node, k, time.Now())
				}
			}),
			unsserv.TraceMessages(func(t unsserv.MessageTrace) { traceUnsserv(rec, msgs, t) }))...)
		if err != nil {
			return bcastRow{}, fmt.Errorf("unsserv: host %d: %w", i, err)
		}
		ds[i] = d
	}
	for i, m := range ms {
		wctx, cancel := context.WithTimeout(ctx, spec.Timeout)
		err := m.WaitReady(wctx, 1)
		cancel()
		if err != nil {
			return bcastRow{}, fmt.Errorf("unsserv: host %d: %w", i, err)
		}
	}
	if err := sleepCtx(ctx, spec.Settle); err != nil {
		return bcastRow{}, err
	}
	// Warm-up: broadcasts from the publishers whose numbers are past the measured
	// ones, so the recorder ignores them.
	for w := 0; w < warmup; w++ {
		p := make([]byte, len(spec.Payloads[0]))
		seq := uint64(msgs + w)
		for b := 0; b < 8; b++ {
			p[b] = byte(seq >> (56 - 8*b))
		}
		if err := ds[spec.Publishers[w%len(spec.Publishers)]].Broadcast(ctx, p); err != nil {
			return bcastRow{}, err
		}
		if err := sleepCtx(ctx, spec.Gap); err != nil {
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
		return ds[node].Broadcast(ctx, payload)
	})
	if err != nil {
		return bcastRow{}, fmt.Errorf("unsserv: %w", err)
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
	row := summarise(protocol, n, net.Latency, spec, rec.trace())
	row.Wall, row.Lag = time.Since(start), lag
	return row, nil
}

// traceUnsserv counts one message of our dissemination protocol: payload copies per
// measured broadcast, and control items (an IHAVE's announcements each, any other
// message without payload as one) with their kinds.
func traceUnsserv(rec *bcastRecorder, msgs int, t unsserv.MessageTrace) {
	c, ok := t.Msg.(dissemination.Carrier)
	if !ok {
		return
	}
	bs := c.Broadcasts()
	for _, b := range bs {
		k, ok := payloadSeq(b.GetPayload(), msgs)
		if !ok {
			continue
		}
		if t.Out {
			rec.copySent(k)
		} else {
			rec.copyRecv(k)
		}
	}
	if t.Out {
		return
	}
	control := map[string]int{}
	if len(bs) == 0 {
		items := 1
		if m, ok := t.Msg.(*dissemination.Message); ok && m.GetIhave() != nil {
			items = len(m.GetIhave().GetAnnouncements())
		}
		control[c.Kind()] = items
	}
	rec.received(t.Size, control)
}
