package main

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// summarise on a hand-made trace: 4 nodes, 2 messages, figures worked out by hand.
func TestSummarise(t *testing.T) {
	spec := bcastSpec{Publishers: []int{0, 2}, Payloads: [][]byte{make([]byte, 16), make([]byte, 16)}}
	t0 := time.Unix(1000, 0)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	var zero time.Time
	tr := bcastTrace{
		Published: []time.Time{at(0), at(100)},
		Delivered: [][]time.Time{
			{at(0), at(130)},  // node 0 published message 0 (its own delivery ignored)
			{at(10), at(140)}, // 10, 40
			{at(20), at(100)}, // 20; node 2 published message 1
			{at(30), zero},    // 30; message 1 never reached node 3
		},
		Duplicates: 1,
		CopiesRecv: []int{4, 3},
		CopiesSent: []int{5, 3},
		Dropped:    []int{0, 2},
		Control:    map[string]int{"IHAVE": 6, "GRAFT": 1, "PRUNE": 0},
		NetBytes:   3001,
	}
	got := summarise("x", 4, 20*time.Millisecond, spec, tr)
	want := bcastRow{
		Stack: "x", N: 4, LinkLatency: 20, Msgs: 2, Publishers: 2, PayloadBytes: 16,
		Delivery: 0.8333, Deliveries: 5, // 5 of 2*3 pairs
		ExactlyOnce: false, Duplicates: 1,
		// lasts: message 0 at 30, message 1 at 40; nearest rank p50 = 30, p95 = 40
		LatencyLast: latencyFig{P50: 30, P95: 40, Max: 40},
		LatencyMean: 26,    // (10+20+30+30+40)/5
		RMR:         0.417, // ((4/3-1) + (3/2-1)) / 2 = (0.3333+0.5)/2
		CopiesRecv:  7, CopiesSent: 8, CopiesDropped: 2,
		ControlPerMsg: 3.5, ControlByKind: map[string]float64{"IHAVE": 3, "GRAFT": 0.5},
		NetBytesPerMsg: 1501, // 3001/2 rounded
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("summarise:\n got %+v\nwant %+v", got, want)
	}
	// Wall time never reaches the JSON.
	got.Wall = time.Hour
	b, _ := json.Marshal(got)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for k := range m {
		if k == "wall" || k == "Wall" || k == "wall_s" {
			t.Fatalf("wall clock in the JSON: %s", b)
		}
	}
}

func TestMakeSpecAndTopology(t *testing.T) {
	a, err := makeSpec(50, 20, 0, 4, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := makeSpec(50, 20, 0, 4, 7)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different specs")
	}
	pubs := map[int]bool{}
	for k, p := range a.Payloads {
		if len(p) != bcastDefaultPayload {
			t.Fatalf("payload %d: %d bytes", k, len(p))
		}
		if got, ok := payloadSeq(p, 20); !ok || got != k {
			t.Fatalf("payload %d carries %d, %v", k, got, ok)
		}
		pubs[a.Publishers[k]] = true
	}
	if len(pubs) != 4 {
		t.Fatalf("%d distinct publishers, want 4", len(pubs))
	}
	for _, bad := range [][4]int{{1, 1, 0, 1}, {10, 0, 0, 1}, {10, 1, 4, 1}, {10, 1, 0, 11}} {
		if _, err := makeSpec(bad[0], bad[1], bad[2], bad[3], 1); err == nil {
			t.Fatalf("makeSpec%v accepted", bad)
		}
	}

	for _, n := range []int{2, 5, 8, 20, 300} {
		e := sparseTopology(n, 3)
		if !reflect.DeepEqual(e, sparseTopology(n, 3)) {
			t.Fatalf("n=%d: same seed, different topology", n)
		}
		deg := make([]int, n)
		for _, x := range e {
			if x[0] >= x[1] {
				t.Fatalf("edge %v not i<j", x)
			}
			deg[x[0]]++
			deg[x[1]]++
		}
		for i, d := range deg {
			if d < min(mockDegree, n-1) || (n > 20 && d > mockMaxDegree) {
				t.Fatalf("n=%d: node %d has degree %d", n, i, d)
			}
		}
	}
}

// GossipSub on 20 mocknet hosts, 5 ms links: every message reaches everyone once, and
// the row's counts agree with one another. No goroutine survives.
func TestGossipSubMocknet(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n, msgs = 20, 10
	net, err := newMockNet(ctx, n, 5*time.Millisecond, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	for i, ns := range net.Neighbours {
		if len(ns) < mockDegree {
			t.Fatalf("node %d has %d neighbours", i, len(ns))
		}
	}
	spec, err := makeSpec(n, msgs, 0, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	spec.Gap = 20 * time.Millisecond
	spec.Settle = 1500 * time.Millisecond
	spec.Timeout = 20 * time.Second
	row, err := runGossipSub(ctx, net, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := net.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v (wall %v)", row, row.Wall)
	if row.Stack != "gossipsub" || row.N != n || row.Msgs != msgs || row.Publishers != 3 || row.PayloadBytes != 1024 {
		t.Fatalf("row set-up: %+v", row)
	}
	if row.Delivery != 1 || row.Deliveries != msgs*(n-1) {
		t.Fatalf("delivery %v (%d deliveries), want 1 (%d)", row.Delivery, row.Deliveries, msgs*(n-1))
	}
	if !row.ExactlyOnce || row.Duplicates != 0 {
		t.Fatalf("duplicate deliveries: %d", row.Duplicates)
	}
	if row.RMR < 0 {
		t.Fatalf("rmr %v < 0", row.RMR)
	}
	// Every receiver got at least one copy over the network; no copy arrives unsent.
	if row.CopiesRecv < row.Deliveries || row.CopiesRecv > row.CopiesSent {
		t.Fatalf("copies: %d received, %d sent, %d deliveries", row.CopiesRecv, row.CopiesSent, row.Deliveries)
	}
	// With every message reaching all n-1 receivers, mean RMR = copies/(msgs*(n-1)) - 1.
	if want := round3(float64(row.CopiesRecv)/float64(msgs*(n-1)) - 1); row.RMR != want {
		t.Fatalf("rmr %v, want %v from the copies", row.RMR, want)
	}
	var sum float64
	for _, v := range row.ControlByKind {
		sum += v
	}
	if d := sum - row.ControlPerMsg; d > 0.01 || d < -0.01 {
		t.Fatalf("control by kind %v does not add up to %v", row.ControlByKind, row.ControlPerMsg)
	}
	// Each broadcast moves at least its payload to every receiver.
	if row.NetBytesPerMsg < float64((n-1)*row.PayloadBytes) {
		t.Fatalf("%v bytes per broadcast, less than the payloads", row.NetBytesPerMsg)
	}
	l := row.LatencyLast
	if !(l.P50 > 0 && l.P50 <= l.P95 && l.P95 <= l.Max && row.LatencyMean > 0 && row.LatencyMean <= l.Max) {
		t.Fatalf("latencies %+v, mean %v", l, row.LatencyMean)
	}
	// At least one hop of 5 ms separates a publisher from its last receiver.
	if l.P50 < 5 {
		t.Fatalf("last delivery after %v ms, less than one link", l.P50)
	}
}
