package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// A small X-BOT run: the last line is JSON, the same seed gives the same figures, the
// link cost falls well below the random overlay's while the overlay stays connected,
// and the plots are written.
func TestXBOTExperimentSmall(t *testing.T) {
	args := []string{"clustering", "-protocol", "xbot", "-n", "150", "-cycles", "8", "-fail-cycles", "3", "-seed", "3", "-unbiased", "0,1"}
	var out1, out2, errb bytes.Buffer
	dir := t.TempDir()
	if err := run(append(args, "-out", dir), &out1, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var res, again xbotResult
	if err := json.Unmarshal([]byte(lastLine(out1.String())), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, out1.String())
	}
	if err := run([]string{"clustering", "-protocol", "xbot", "-n", "150", "-cycles", "8", "-fail-cycles", "3", "-seed", "3", "-unbiased", "1"}, &out2, &errb); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lastLine(out2.String())), &again); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(again.Runs[0])
	b, _ := json.Marshal(res.Runs[1])
	if !bytes.Equal(a, b) {
		t.Fatalf("same seed, different figures:\n%s\n%s", a, b)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs", len(res.Runs))
	}
	for _, r := range res.Runs {
		last := r.PerCycle[len(r.PerCycle)-1]
		if r.Reduction < 0.3 || last.LargestComponent != 1 || r.Symmetric < 0.99 || r.Fail == nil ||
			r.MsgsByKind["OPTIMIZATION"] == 0 || r.RandomCost < 0.4 {
			t.Errorf("unbiased %d: reduction %.3f, component %.3f, symmetric %.3f, messages %v, random cost %.3f",
				r.Unbiased, r.Reduction, last.LargestComponent, r.Symmetric, r.MsgsByKind, r.RandomCost)
		}
		if r.Unbiased == 1 && last.UnbiasedLinks < 0.2 || r.Unbiased == 0 && last.UnbiasedLinks != 0 {
			t.Errorf("unbiased %d: %.3f of the links unbiased", r.Unbiased, last.UnbiasedLinks)
		}
	}
	if res.Runs[0].FinalCost >= res.Runs[1].FinalCost {
		t.Errorf("no unbiased links should cost less than one: %v vs %v", res.Runs[0].FinalCost, res.Runs[1].FinalCost)
	}
	for _, f := range []string{"clustering.json", "clustering-xbot-cost.svg", "clustering-xbot-crash-component.svg", "clustering-xbot-crash-cost.svg", "clustering-xbot-degree.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	for _, bad := range [][]string{{"-unbiased", "x"}, {"-unbiased", "5"}, {"-n", "2"}, {"-fail", "1"}} {
		if err := run(append([]string{"clustering", "-protocol", "xbot"}, bad...), &out1, &errb); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
