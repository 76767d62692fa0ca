package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// A small sampling run: the last line is JSON, the same seed gives the same figures,
// MRWB and RWD pass the uniformity test where the plain walk fails it, and the plots
// are written.
func TestSamplingExperimentSmall(t *testing.T) {
	args := []string{"sampling", "-n", "200", "-samples", "5000", "-seed", "2", "-walk", "10,40"}
	var out1, out2, errb bytes.Buffer
	dir := t.TempDir()
	if err := run(append(args, "-out", dir), &out1, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var res, again samplingResult
	if err := json.Unmarshal([]byte(lastLine(out1.String())), &res); err != nil {
		t.Fatalf("last line is not the result JSON: %v\n%s", err, out1.String())
	}
	// The same seed gives the same figures (each protocol and walk length builds its
	// network anew from the seed): run RWD with 40 steps alone.
	if err := run([]string{"sampling", "-n", "200", "-samples", "5000", "-seed", "2", "-walk", "40", "-protocol", "rwd"}, &out2, &errb); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lastLine(out2.String())), &again); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(again.Runs[0])
	b, _ := json.Marshal(res.Runs[3])
	if !bytes.Equal(a, b) {
		t.Fatalf("same seed, different figures:\n%s\n%s", a, b)
	}
	if len(res.Runs) != 6 || res.Degree.Max <= 4*res.Degree.Min {
		t.Fatalf("%d runs, degrees %+v", len(res.Runs), res.Degree)
	}
	for _, r := range res.Runs {
		if r.Answered != 5000 {
			t.Fatalf("%s/%d: %d of 5000 samples answered", r.Protocol, r.WalkLength, r.Answered)
		}
		if r.WalkLength != 40 {
			continue
		}
		// Gates at 1% for the uniform ones (fixed seeds: see protocols/sampling's
		// TestSimUniformity); the plain walk is far below either level.
		if r.Protocol != "naive" && r.P < 0.01 || r.Protocol == "naive" && (r.P > 1e-6 || r.Uniform) {
			t.Fatalf("%s with %d steps: p=%g", r.Protocol, r.WalkLength, r.P)
		}
		if r.Protocol == "naive" && r.ByDegree[len(r.ByDegree)-1].Ratio < 3 {
			t.Fatalf("the plain walk does not favour hubs: %+v", r.ByDegree)
		}
		if r.Protocol != "naive" && r.ExactTV > 0.05 || r.Protocol == "naive" && r.ExactTV < 0.2 || r.ExactOrigins != 200 {
			t.Fatalf("%s: exact distance from uniform %v over %d origins", r.Protocol, r.ExactTV, r.ExactOrigins)
		}
		if r.WalkMsgsPerSample < 10 || r.MsgsByKind["RESULT"] == 0 {
			t.Fatalf("%s: messages not counted: %+v", r.Protocol, r)
		}
	}
	for _, f := range []string{"sampling.json", "sampling-degree.svg", "sampling-kl.svg", "sampling-walk.svg", "sampling-walk-tv.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s not written: %v", f, err)
		}
	}
}

func TestSamplingUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		{"sampling", "-protocol", "chord"},
		{"sampling", "-walk", "0"},
		{"sampling", "-n", "2", "-m", "2"},
		{"sampling", "-batch", "0"},
	} {
		if err := run(args, &out, &errb); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
}
