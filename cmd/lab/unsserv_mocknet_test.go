package main

import (
	"context"
	"testing"
	"time"
)

// Our stack on 20 mocknet hosts, 5 ms links, each algorithm: every message reaches
// everyone once, copies and control are counted, and Plumtree's tree is settled after
// the warm-up (one copy per receiver).
func TestUnsservMocknet(t *testing.T) {
	if testing.Short() {
		t.Skip("mocknet runs skipped in -short mode")
	}
	const n, msgs = 20, 10
	for _, protocol := range []string{"plumtree", "brisa", "lpbcast", "mon"} {
		t.Run(protocol, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			net, err := newMockNet(ctx, n, 5*time.Millisecond, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer net.Close()
			spec, err := makeSpec(n, msgs, 0, 3, 1)
			if err != nil {
				t.Fatal(err)
			}
			spec.Gap = 20 * time.Millisecond
			spec.Settle = 1500 * time.Millisecond
			spec.Timeout = 30 * time.Second
			row, err := runUnsserv(ctx, net, spec, protocol, 5)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", row)
			if row.Delivery != 1 || !row.ExactlyOnce {
				t.Fatalf("delivery %v, duplicates %d", row.Delivery, row.Duplicates)
			}
			if row.CopiesRecv < row.Deliveries || row.CopiesRecv > row.CopiesSent {
				t.Fatalf("copies: %d received, %d sent, %d deliveries", row.CopiesRecv, row.CopiesSent, row.Deliveries)
			}
			if protocol == "plumtree" && (row.RMR > 0.2 || row.ControlPerMsg == 0) {
				t.Fatalf("plumtree after warm-up: RMR %v, control %v per message", row.RMR, row.ControlPerMsg)
			}
		})
	}
}
