package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"syscall"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	unsserv "github.com/unsserv/go-unsserv"
	"github.com/unsserv/go-unsserv/host"
	"github.com/unsserv/go-unsserv/protocols/membership"
)

// streamResult is what `lab stream` measures: one publisher sending a sustained stream of
// broadcasts to every other host, over real transports on loopback. Unlike the simulated
// experiments these figures are wall-clock measurements of this machine, and vary from
// run to run.
type streamResult struct {
	Experiment    string  `json:"experiment"`
	Measured      string  `json:"measured"`
	Protocol      string  `json:"protocol"`
	Transport     string  `json:"transport"`
	N             int     `json:"n"`
	Msgs          int     `json:"msgs"`
	Size          int     `json:"size"`
	Window        int     `json:"window"`
	Complete      int     `json:"complete"`   // broadcasts delivered to every other host
	Delivery      float64 `json:"delivery"`   // deliveries / (msgs * (n-1))
	Duplicates    uint64  `json:"duplicates"` // deliveries of a broadcast already handed over (must be 0)
	MsgsPerSec    float64 `json:"msgs_per_s"` // complete broadcasts per second of wall time
	DeliveriesPS  float64 `json:"deliveries_per_s"`
	CPUPerMsgMs   float64 `json:"cpu_ms_per_msg"`      // process CPU time (user+system, all hosts) per broadcast
	CPUPerDeliv   float64 `json:"cpu_us_per_delivery"` // the same per delivery to one host
	Overflow      uint64  `json:"overflow"`            // deliveries dropped by full handler queues
	DroppedOnWire uint64  `json:"dropped_on_wire"`     // messages not written (full per-peer queues)
	Seconds       float64 `json:"seconds"`
}

func runStream(args []string, prog *progress) (any, []plotSpec, error) {
	fs := flag.NewFlagSet("lab stream", flag.ContinueOnError)
	n := fs.Int("n", 20, "hosts (one process, real transports on 127.0.0.1)")
	msgs := fs.Int("msgs", 2000, "broadcasts from the publisher")
	size := fs.Int("size", 1024, "payload bytes")
	window := fs.Int("window", 64, "broadcasts in flight at most (not yet delivered to every host): the publisher's flow control")
	transport := fs.String("transport", "quic", "quic or tcp")
	protocol := fs.String("protocol", "plumtree", "plumtree (many-to-many, Stable) or brisa (one-to-many, Stable); lpbcast and mon with -profile extreme")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if *n < 2 || *msgs < 1 || *size < 8 || *window < 1 {
		return nil, nil, fmt.Errorf("need -n >= 2, -msgs >= 1, -size >= 8, -window >= 1")
	}
	var listen string
	switch *transport {
	case "quic":
		listen = "/ip4/127.0.0.1/udp/0/quic-v1"
	case "tcp":
		listen = "/ip4/127.0.0.1/tcp/0"
	default:
		return nil, nil, fmt.Errorf("-transport %q: use quic or tcp", *transport)
	}
	var opts []unsserv.Option
	switch *protocol {
	case "plumtree":
	case "brisa":
		opts = append(opts, unsserv.OneToMany)
	case "lpbcast":
		opts = append(opts, unsserv.Extreme)
	case "mon":
		opts = append(opts, unsserv.Extreme, unsserv.OneToMany)
	default:
		return nil, nil, fmt.Errorf("-protocol %q: use plumtree, brisa, lpbcast or mon", *protocol)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	hosts := make([]p2phost.Host, *n)
	defer func() {
		for _, h := range hosts {
			if h != nil {
				_ = h.Close()
			}
		}
	}()
	for i := range hosts {
		h, err := host.New(ctx, host.ListenAddrs(listen), host.NoNATTraversal(), host.DisableMetrics(),
			host.ConnLimits(1000, 2000, time.Minute))
		if err != nil {
			return nil, nil, err
		}
		hosts[i] = h
	}
	ms := make([]*unsserv.Membership, *n)
	defer func() {
		for _, m := range ms {
			if m != nil {
				_ = m.Leave()
			}
		}
	}()
	cfg := membership.HyParViewConfig{ShuffleInterval: 2 * time.Second}
	for i, h := range hosts {
		o := []unsserv.Option{unsserv.WithHyParView(cfg), unsserv.Seed(uint64(i))}
		if i > 0 {
			o = append(o, unsserv.Bootstrap(peer.AddrInfo{ID: hosts[i-1].ID(), Addrs: hosts[i-1].Addrs()}))
		}
		m, err := unsserv.JoinNetwork(ctx, h, "stream.net", o...)
		if err != nil {
			return nil, nil, err
		}
		ms[i] = m
	}
	for _, m := range ms {
		if err := m.WaitReady(ctx, 1); err != nil {
			return nil, nil, err
		}
	}
	time.Sleep(4 * time.Second) // a couple of shuffles: the overlay settles
	prog.update("%d hosts joined", *n)

	// Per broadcast (by payload index): how many hosts got it.
	var mu sync.Mutex
	got := make([]int, *msgs)
	completeCh := make(chan struct{}, *msgs)
	ds := make([]*unsserv.Dissemination, *n)
	defer func() {
		for _, d := range ds {
			if d != nil {
				_ = d.Leave()
			}
		}
	}()
	for i, m := range ms {
		d, err := unsserv.NewDissemination(ctx, m, "stream", nil, append(opts, unsserv.Seed(uint64(1000+i)),
			unsserv.DeliveryQueue(*msgs+1),
			unsserv.OnBroadcast(func(b unsserv.Broadcast) {
				k := int(uint64(b.Data[0]) | uint64(b.Data[1])<<8 | uint64(b.Data[2])<<16 | uint64(b.Data[3])<<24)
				if k < 0 || k >= *msgs {
					return
				}
				mu.Lock()
				got[k]++
				done := got[k] == *n-1
				mu.Unlock()
				if done {
					completeCh <- struct{}{}
				}
			}))...)
		if err != nil {
			return nil, nil, err
		}
		ds[i] = d
	}
	time.Sleep(time.Second)

	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	inFlight, complete := 0, 0
	payload := make([]byte, *size)
	for k := 0; k < *msgs; k++ {
		for inFlight >= *window {
			select {
			case <-completeCh:
				inFlight--
				complete++
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("stream stalled at %d of %d broadcasts complete, %d in flight: %w", complete, *msgs, inFlight, ctx.Err())
			}
		}
		payload[0], payload[1], payload[2], payload[3] = byte(k), byte(k>>8), byte(k>>16), byte(k>>24)
		if err := ds[0].Broadcast(ctx, payload); err != nil {
			return nil, nil, err
		}
		inFlight++
		prog.update("%d of %d broadcasts sent, %d complete", k+1, *msgs, complete)
	}
	// Wait for the rest; stragglers that never complete end the wait after 10 s idle.
	for inFlight > 0 {
		select {
		case <-completeCh:
			inFlight--
			complete++
		case <-time.After(10 * time.Second):
			inFlight = 0
		case <-ctx.Done():
			inFlight = 0
		}
	}
	elapsed := time.Since(start)
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())

	res := streamResult{
		Experiment: "stream", Measured: "wall-clock on this machine; varies run to run",
		Protocol: *protocol, Transport: *transport, N: *n, Msgs: *msgs, Size: *size, Window: *window,
		Complete: complete, Seconds: elapsed.Seconds(),
	}
	mu.Lock()
	deliveries := 0
	for _, c := range got {
		deliveries += c
	}
	mu.Unlock()
	for _, d := range ds {
		st := d.Stats()
		res.Duplicates += st.Duplicates
		res.Overflow += st.Overflow
		res.DroppedOnWire += st.Service.Dropped
	}
	res.Delivery = float64(deliveries) / float64(*msgs*(*n-1))
	res.MsgsPerSec = float64(complete) / elapsed.Seconds()
	res.DeliveriesPS = float64(deliveries) / elapsed.Seconds()
	res.CPUPerMsgMs = float64(cpu.Microseconds()) / 1000 / float64(*msgs)
	res.CPUPerDeliv = float64(cpu.Microseconds()) / float64(max(deliveries, 1))
	return res, nil, nil
}
