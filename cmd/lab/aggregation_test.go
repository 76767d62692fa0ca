package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func runAggregationLab(t *testing.T, args ...string) (aggResult, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(append([]string{"aggregation"}, args...), &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	line := lastLine(out.String())
	var res aggResult
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, line)
	}
	return res, line
}

// The paper's setting at 400 nodes: the variance shrinks by about 0.303 per cycle and
// every node ends the epoch within 1e-6 of the mean; the same seed prints the same line;
// -out writes the JSON and the plots, a loss sweep included.
func TestAggregationExperimentSmall(t *testing.T) {
	args := []string{"-n", "400", "-membership", "random", "-loss", "0,0.05", "-epochs", "1", "-seed", "3"}
	dir := t.TempDir()
	res, l1 := runAggregationLab(t, append(args, "-out", dir)...)
	_, l2 := runAggregationLab(t, args...)
	if l1 != l2 {
		t.Fatalf("same seed, different figures:\n%s\n%s", l1, l2)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs, want 2", len(res.Runs))
	}
	r := res.Runs[0]
	if r.Factor < 0.25 || r.Factor > 0.36 || r.FinalMaxRelErr > 1e-6 || len(r.Epochs) != 1 || r.Epochs[0].Finals != 400 {
		t.Fatalf("lossless run: factor %v, worst final error %v, epochs %+v", r.Factor, r.FinalMaxRelErr, r.Epochs)
	}
	if r.MsgsPerNodeCycle["AGG_REQUEST"] < 0.9 || r.MsgsPerNodeCycle["AGG_REPLY"] < 0.9 {
		t.Fatalf("messages per node and cycle %v: want about one exchange per node and cycle", r.MsgsPerNodeCycle)
	}
	if l := res.Runs[1]; l.Loss != 0.05 || l.Core.Retransmits == 0 || l.FinalMaxRelErr > 1e-3 {
		t.Fatalf("5%% loss: %+v", l)
	}
	for _, f := range []string{"aggregation.json", "aggregation-variance.svg", "aggregation-error.svg", "aggregation-loss.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s not written: %v", f, err)
		}
	}
	// -replot draws the plots again from the JSON, and prints the same figures.
	dir2 := t.TempDir()
	if _, l3 := runAggregationLab(t, "-replot", filepath.Join(dir, "aggregation.json"), "-out", dir2); l3 != l1 {
		t.Fatalf("replot printed other figures:\n%s\n%s", l3, l1)
	}
	if st, err := os.Stat(filepath.Join(dir2, "aggregation-variance.svg")); err != nil || st.Size() == 0 {
		t.Fatalf("replot wrote no plot: %v", err)
	}
}

// Count over HyParView with churn (one node replaced per cycle): every estimate stays
// within 2% (on average) of the epoch's participants and within 5% of the live nodes.
func TestAggregationExperimentCountChurn(t *testing.T) {
	res, _ := runAggregationLab(t, "-n", "200", "-fn", "count", "-membership", "hyparview", "-churn", "0.005", "-epochs", "1", "-epoch", "40", "-seed", "2")
	r := res.Runs[0]
	e := r.Epochs[0]
	if r.Function != "count" || e.Finals < 150 || e.Participants < 195 || r.FinalMeanRelErr > 0.02 || r.FinalMaxRelErrLive > 0.05 {
		t.Fatalf("count under churn: %+v, epoch %+v", r, e)
	}
}

func TestAggregationUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		{"aggregation", "-fn", "median"},
		{"aggregation", "-membership", "chord"},
		{"aggregation", "-loss", "1"},
		{"aggregation", "-churn", "0.9"},
		{"aggregation", "-epoch", "2"},
		{"aggregation", "-values", "zipf"},
		{"aggregation", "-retries", "-2"},
	} {
		if err := run(args, &out, &errb); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
}
