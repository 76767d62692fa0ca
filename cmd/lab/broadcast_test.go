package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func runBroadcastLab(t *testing.T, args ...string) (broadcastRun, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(append([]string{"broadcast"}, args...), &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	line := lastLine(out.String())
	var res broadcastResult
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, line)
	}
	if len(res.Runs) != 1 {
		t.Fatalf("%d runs, want 1", len(res.Runs))
	}
	return res.Runs[0], line
}

// Plumtree over HyParView, no failure: every live node delivers every broadcast exactly
// once, the tree has settled during the warm-up (no redundant payload), and the same
// seed prints the same line.
func TestBroadcastExperimentSmall(t *testing.T) {
	args := []string{"-protocol", "plumtree", "-n", "200", "-msgs", "8", "-seed", "3"}
	dir := t.TempDir()
	r, l1 := runBroadcastLab(t, append(args, "-out", dir)...)
	_, l2 := runBroadcastLab(t, args...)
	if l1 != l2 {
		t.Fatalf("same seed, different figures:\n%s\n%s", l1, l2)
	}
	a := r.Aggregate
	if !a.ExactlyOnce || a.MinReliability != 1 || a.Duplicates != 0 || len(r.Broadcasts) != 8 {
		t.Fatalf("want every live node to deliver every broadcast exactly once: %+v", a)
	}
	if a.MeanRMR > 0.05 {
		t.Fatalf("mean RMR %v after the warm-up: the tree has not settled", a.MeanRMR)
	}
	for _, b := range r.Broadcasts {
		if b.Delivered != 199 || b.Payload < 199 || b.LDH < 2 || b.LatencyMs <= 0 {
			t.Fatalf("broadcast %+v", b)
		}
	}
	if r.MsgsByKind["GOSSIP"] == 0 || r.MsgsByKind["IHAVE"] == 0 || r.MembershipByKind["SHUFFLE"] == 0 {
		t.Fatalf("messages by kind: %v, %v", r.MsgsByKind, r.MembershipByKind)
	}
	for _, f := range []string{"broadcast.json", "broadcast-reliability.svg", "broadcast-rmr.svg", "broadcast-ldh.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s not written: %v", f, err)
		}
	}
}

// With 5% of the messages of both layers lost, lost payloads are recovered by IHAVE and
// GRAFT. Plumtree (as the paper, which assumes reliable links) gives up on a broadcast
// once it has grafted every peer that announced it, so a node whose payload and
// announcements were all lost, or whose last GRAFT was lost, can still miss one: rare at
// 5% (one node of 199 once in 30 broadcasts at seed 1), hence at least 99% here.
func TestBroadcastExperimentLoss(t *testing.T) {
	r, _ := runBroadcastLab(t, "-n", "200", "-msgs", "10", "-loss", "0.05", "-seed", "2")
	a := r.Aggregate
	if a.MinReliability < 0.99 || a.MeanReliability < 0.999 || a.Duplicates != 0 {
		t.Fatalf("with 5%% loss: %+v", a)
	}
	if r.MsgsByKind["GRAFT"] == 0 {
		t.Fatalf("no GRAFT with 5%% loss: %v", r.MsgsByKind)
	}
}

// Half the nodes crash at once after the warm-up: once the membership has replaced the
// dead neighbours (they are told of the crash after DetectDelay, 1 s) the broadcasts
// reach every survivor again, each once.
func TestBroadcastExperimentFail(t *testing.T) {
	r, _ := runBroadcastLab(t, "-n", "200", "-msgs", "15", "-fail", "0.5")
	a := r.Aggregate
	if r.Survivors != 100 || a.Duplicates != 0 {
		t.Fatalf("survivors %d, duplicates %d", r.Survivors, a.Duplicates)
	}
	if a.FullFrom == nil || *a.FullFrom > 5 {
		t.Fatalf("reliability not back to 1 within 5 broadcasts (5 s) of the crash: %+v", r.Broadcasts)
	}
}

func TestBroadcastUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		{"broadcast", "-protocol", "chord"},
		{"broadcast", "-membership", "chord"},
		{"broadcast", "-fail", "1"},
		{"broadcast", "-loss", "-0.1"},
		{"broadcast", "-msgs", "0"},
		{"broadcast", "-n", "1"},
	} {
		if err := run(args, &out, &errb); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
}
