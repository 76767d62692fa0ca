package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// mocknetResult is what `lab broadcast -mocknet` prints: our stack and, with -vs
// gossipsub, GossipSub, on fresh mocknet networks of the same topology, link latency,
// publishers and payloads, one after the other in one process. Unlike the simulated
// experiments these figures are real-time measurements of this machine and vary from run
// to run; each row's scheduling lag goes to stderr to tell a quiet run from a loaded one.
type mocknetResult struct {
	Experiment string             `json:"experiment"`
	Measured   string             `json:"measured"`
	N          int                `json:"n"`
	LatencyMs  float64            `json:"link_latency_ms"`
	Msgs       int                `json:"msgs"`
	Size       int                `json:"payload_bytes"`
	Publishers int                `json:"publishers"`
	GapMs      float64            `json:"gap_ms"`
	Seed       uint64             `json:"seed"`
	Rows       []bcastRow         `json:"rows"`
	Ratios     map[string]mnRatio `json:"ratios_vs_gossipsub,omitempty"` // per protocol of ours
}

// mnRatio compares one of our rows with GossipSub's: ours / GossipSub's.
type mnRatio struct {
	LatencyLastP50 float64 `json:"latency_last_p50"`
	LatencyMean    float64 `json:"latency_mean"`
	PayloadCopies  float64 `json:"payload_copies"` // copies received
	ControlPerMsg  float64 `json:"control_per_msg"`
	NetBytesPerMsg float64 `json:"net_bytes_per_msg"`
}

func isMocknet(args []string) bool {
	for _, a := range args {
		if a == "-mocknet" || a == "--mocknet" || a == "-mocknet=true" {
			return true
		}
	}
	return false
}

func runBroadcastMocknet(args []string, prog *progress) (any, []plotSpec, error) {
	fs := flag.NewFlagSet("lab broadcast -mocknet", flag.ContinueOnError)
	_ = fs.Bool("mocknet", true, "run real libp2p hosts on mocknet instead of the simulator")
	n := fs.Int("n", 100, "hosts")
	latency := fs.Duration("latency", 20*time.Millisecond, "one-way link latency")
	msgs := fs.Int("msgs", 50, "broadcasts measured")
	size := fs.Int("size", 1024, "payload bytes")
	publishers := fs.Int("publishers", 10, "distinct publishers taking turns")
	gap := fs.Duration("gap", 100*time.Millisecond, "time between two broadcasts")
	protos := fs.String("protocol", "plumtree", "our algorithms, comma-separated: plumtree, brisa, lpbcast, mon")
	vs := fs.String("vs", "", "gossipsub: also run go-libp2p-pubsub's GossipSub with default parameters")
	warmup := fs.Int("warmup", 10, "broadcasts before the measured ones on our stack (trees settle), not measured")
	seed := fs.Uint64("seed", 1, "seed of the topology, publishers and payloads")
	timeout := fs.Duration("timeout", 60*time.Second, "give up waiting for deliveries after this long")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if *vs != "" && *vs != "gossipsub" {
		return nil, nil, fmt.Errorf("-vs %q: only gossipsub", *vs)
	}
	spec, err := makeSpec(*n, *msgs, *size, *publishers, *seed)
	if err != nil {
		return nil, nil, err
	}
	spec.Gap, spec.Timeout = *gap, *timeout
	res := mocknetResult{Experiment: "broadcast-mocknet", Measured: "real time on mocknet on this machine; varies run to run",
		N: *n, LatencyMs: ms(*latency), Msgs: *msgs, Size: *size, Publishers: *publishers, GapMs: ms(*gap), Seed: *seed}
	ctx := context.Background()
	var stacks []string
	for _, p := range strings.Split(*protos, ",") {
		if p = strings.TrimSpace(p); p != "" {
			stacks = append(stacks, p)
		}
	}
	if *vs != "" {
		stacks = append(stacks, "gossipsub")
	}
	rows := map[string]bcastRow{}
	for _, stack := range stacks {
		prog.update("mocknet: %s on %d hosts", stack, *n)
		net, err := newMockNet(ctx, *n, *latency, *seed)
		if err != nil {
			return nil, nil, err
		}
		var row bcastRow
		if stack == "gossipsub" {
			row, err = runGossipSub(ctx, net, spec)
		} else {
			row, err = runUnsserv(ctx, net, spec, stack, *warmup)
		}
		_ = net.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", stack, err)
		}
		fmt.Fprintf(os.Stderr, "%-10s wall %v, %s\n", stack, row.Wall.Round(time.Millisecond), row.Lag)
		res.Rows = append(res.Rows, row)
		rows[stack] = row
	}
	if gs, ok := rows["gossipsub"]; ok {
		res.Ratios = map[string]mnRatio{}
		div := func(a, b float64) float64 {
			if b == 0 {
				return 0
			}
			return round3(a / b)
		}
		for _, stack := range stacks {
			if stack == "gossipsub" {
				continue
			}
			r := rows[stack]
			res.Ratios[stack] = mnRatio{
				LatencyLastP50: div(r.LatencyLast.P50, gs.LatencyLast.P50),
				LatencyMean:    div(r.LatencyMean, gs.LatencyMean),
				PayloadCopies:  div(float64(r.CopiesRecv), float64(gs.CopiesRecv)),
				ControlPerMsg:  div(r.ControlPerMsg, gs.ControlPerMsg),
				NetBytesPerMsg: div(r.NetBytesPerMsg, gs.NetBytesPerMsg),
			}
		}
	}
	return res, nil, nil
}
