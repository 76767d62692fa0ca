package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// A small search run: the last line is JSON, the same seed gives the same figures,
// KWalker and ABloom find what is there at under half of flooding's messages (a tenth at 10,000 nodes, see docs/results/search.md), and the
// plots are written.
func TestSearchExperimentSmall(t *testing.T) {
	args := []string{"search", "-n", "300", "-replicas", "0.01,0.05", "-queries", "100", "-flood-queries", "20", "-items", "20", "-seed", "3"}
	var out1, out2, errb bytes.Buffer
	dir := t.TempDir()
	if err := run(append(args, "-out", dir), &out1, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if err := run(args, &out2, &errb); err != nil {
		t.Fatal(err)
	}
	if lastLine(out1.String()) != lastLine(out2.String()) {
		t.Fatal("same seed, different figures")
	}
	var res searchResult
	if err := json.Unmarshal([]byte(lastLine(out1.String())), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, out1.String())
	}
	if len(res.Runs) != 3 || len(res.Runs[0].Levels) != 2 {
		t.Fatalf("%d runs", len(res.Runs))
	}
	flood := res.Runs[2].Levels[0].MsgsMean
	for _, r := range res.Runs {
		for _, l := range r.Levels {
			if l.Success < 0.99 || l.Unanswered > 0 {
				t.Fatalf("%s at %v: success %v, %d unanswered", r.Protocol, l.Replication, l.Success, l.Unanswered)
			}
			if r.Protocol != "flood" && l.MsgsMean >= flood/2 {
				t.Fatalf("%s at %v: %v messages per query, flood %v", r.Protocol, l.Replication, l.MsgsMean, flood)
			}
		}
	}
	for _, f := range []string{"search.json", "search-success.svg", "search-messages.svg", "search-hops.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// Search after a crash and under loss: the crash's figures are reported, queries ask
// only for items with a live holder, and ABloom's retry and KWalker's replacement of
// lost walkers are what keep them finding (the same run without them loses about one
// query in five, and one in thirty).
func TestSearchExperimentFailLoss(t *testing.T) {
	figures := func(again string) searchResult {
		// One replication level: the JSON is written, no plots (a point per protocol).
		dir := t.TempDir()
		args := []string{"search", "-protocol", "kwalker,abloom", "-n", "600", "-replicas", "0.01", "-queries", "200", "-items", "20",
			"-seed", "3", "-fail", "0.3", "-loss", "0.05", "-retry", again, "-replace", again, "-out", dir}
		res := runSearchLab(t, args...)
		if fs, _ := filepath.Glob(filepath.Join(dir, "*")); len(fs) != 1 || filepath.Base(fs[0]) != "search.json" {
			t.Fatalf("wrote %v, want search.json only", fs)
		}
		return res
	}
	res := figures("0")
	if res.Fail != 0.3 || res.Loss != 0.05 {
		t.Fatalf("fail %v, loss %v recorded", res.Fail, res.Loss)
	}
	for _, r := range res.Runs {
		l := r.Levels[0]
		// 6 replicas, 30% of the nodes crashed: about 4.2 live per item, some items lost.
		if l.LiveReplicas <= 0 || l.LiveReplicas >= 6 || l.Unanswered > 0 {
			t.Fatalf("%s: %+v", r.Protocol, l)
		}
		if l.Success < 0.99 {
			t.Fatalf("%s: success %v", r.Protocol, l.Success)
		}
	}
	without := figures("-1s")
	if l := without.Runs[0].Levels[0]; l.Success > 0.98 {
		t.Fatalf("kwalker without replacement under 5%% loss: success %v, expected losses", l.Success)
	}
	if l := without.Runs[1].Levels[0]; l.Success > 0.9 {
		t.Fatalf("abloom without retry under 5%% loss: success %v, expected losses", l.Success)
	}
	var out, errb bytes.Buffer
	if err := run([]string{"search", "-n", "100", "-fail", "0.95"}, &out, &errb); err == nil {
		t.Fatal("-fail leaving 5 nodes accepted")
	}
}

// Nodes crashing one by one while the queries run: the crashes are counted, queries
// whose origin crashed are left out, and the rest find what a live node holds.
func TestSearchExperimentCrashes(t *testing.T) {
	res := runSearchLab(t, "search", "-protocol", "kwalker,abloom", "-n", "600", "-replicas", "0.02", "-queries", "300", "-items", "20",
		"-seed", "5", "-crashes", "10")
	for _, r := range res.Runs {
		l := r.Levels[0]
		// 300 queries 20 ms apart: 6 s, 10 crashes a second.
		if l.Crashed < 55 || l.Crashed > 61 || l.Success < 0.99 || l.Unanswered > 0 {
			t.Fatalf("%s: %+v", r.Protocol, l)
		}
	}
	var out, errb bytes.Buffer
	if err := run([]string{"search", "-n", "100", "-queries", "100", "-crashes", "100"}, &out, &errb); err == nil {
		t.Fatal("-crashes taking every node accepted")
	}
}

// runSearchLab runs the lab with args and returns the result its last line holds.
func runSearchLab(t *testing.T, args ...string) searchResult {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(args, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var res searchResult
	if err := json.Unmarshal([]byte(lastLine(out.String())), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v", err)
	}
	return res
}
