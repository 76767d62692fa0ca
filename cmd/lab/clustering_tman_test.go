package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// A small T-Man run over both memberships: the last line is JSON, the views converge
// to 95% ideal within a few times log2 N cycles and the clustered overlay is connected,
// a crash is purged, the same seed gives the same figures, and the plots are written.
func TestTManExperimentSmall(t *testing.T) {
	args := []string{"clustering", "-protocol", "tman", "-n", "200", "-seed", "3", "-cycles", "20",
		"-membership", "newscast,hyparview", "-fail", "0.3", "-fail-cycles", "45"}
	var out1, out2, errb bytes.Buffer
	dir := t.TempDir()
	if err := run(append(args, "-out", dir), &out1, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var res tmanResult
	if err := json.Unmarshal([]byte(lastLine(out1.String())), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, out1.String())
	}
	if len(res.Runs) != 2 || res.Protocol != "tman" || res.ViewSize != 20 {
		t.Fatalf("result %+v", res)
	}
	for _, r := range res.Runs {
		if r.Converged95 == nil || float64(*r.Converged95) > 2*res.Log2N {
			t.Fatalf("%s: 95%% ideal after %v cycles (log2 N = %v)", r.Membership, r.Converged95, res.Log2N)
		}
		last := r.Cycles[len(r.Cycles)-1]
		if last.IdealMean < 0.99 || last.LargestComponent != 1 {
			t.Fatalf("%s: at the end %+v", r.Membership, last)
		}
		if r.MsgsPerNodeCycle["TMAN_REQUEST"] < 0.9 || r.MsgsPerNodeCycle["TMAN_REPLY"] < 0.9 {
			t.Fatalf("%s: messages %v", r.Membership, r.MsgsPerNodeCycle)
		}
		if r.Fail == nil || r.Fail.Recovered95 == nil || r.Fail.Cycles[len(r.Fail.Cycles)-1].LargestComponent != 1 {
			t.Fatalf("%s: after the crash %+v", r.Membership, r.Fail)
		}
	}
	if err := run(args, &out2, &errb); err != nil {
		t.Fatal(err)
	}
	if lastLine(out1.String()) != lastLine(out2.String()) {
		t.Fatal("same seed, different figures")
	}
	for _, f := range []string{"clustering.json", "clustering-tman-convergence.svg", "clustering-tman-crash.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s not written: %v", f, err)
		}
	}
	if err := run([]string{"clustering", "-protocol", "tman", "-n", "10", "-view", "20"}, &out2, &errb); err == nil {
		t.Fatal("a view as large as the network was accepted")
	}
}
