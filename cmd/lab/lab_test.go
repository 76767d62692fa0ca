package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// A small membership run: the last line is JSON, the same seed gives the same line, and
// the figures say what HyParView promises at this size.
func TestMembershipExperimentSmall(t *testing.T) {
	args := []string{"membership", "-protocol", "hyparview,newscast", "-n", "300", "-fail", "0.5", "-seed", "3", "-warmup", "6", "-cycles", "4"}
	var out1, out2, errb bytes.Buffer
	dir := t.TempDir()
	if err := run(append(args, "-out", dir), &out1, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if err := run(args, &out2, &errb); err != nil {
		t.Fatal(err)
	}
	l1, l2 := lastLine(out1.String()), lastLine(out2.String())
	if l1 != l2 {
		t.Fatalf("same seed, different figures:\n%s\n%s", l1, l2)
	}
	var res membershipResult
	if err := json.Unmarshal([]byte(l1), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, l1)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs, want 2", len(res.Runs))
	}
	hv := res.Runs[0]
	if hv.Protocol != "hyparview" || !hv.Before.Connected || hv.Before.Reliability != 1 {
		t.Fatalf("HyParView before the crash: %+v", hv.Before)
	}
	if hv.InDegree.Max > 5 || hv.InDegree.Mean < 4 {
		t.Fatalf("HyParView in-degree %+v: want spread tight around the active view size 5", hv.InDegree)
	}
	if last := hv.After[len(hv.After)-1]; last.Reliability < 0.99 {
		t.Fatalf("HyParView reliability %d cycles after 50%% failed: %v", last.Cycle, last.Reliability)
	}
	if hv.Survivors != 150 {
		t.Fatalf("survivors %d, want 150", hv.Survivors)
	}
	if hv.MsgsPerCycle["SHUFFLE"] == 0 {
		t.Fatalf("no shuffle traffic counted: %v", hv.MsgsPerCycle)
	}
	for _, f := range []string{"membership.json", "membership-recovery.svg", "membership-indegree.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s not written: %v", f, err)
		}
	}
}

func TestLabUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{{}, {"nope"}, {"membership", "-protocol", "chord"}, {"membership", "-fail", "1.5"}} {
		if err := run(args, &out, &errb); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
}
