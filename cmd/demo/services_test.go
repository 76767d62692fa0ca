package main

import (
	"strings"
	"testing"
)

// TestPeerModeServiceCommands: aggregate, set and sample on two peers.
func TestPeerModeServiceCommands(t *testing.T) {
	checkNoLeaks(t)
	a, aID, aAddr := startPeer(t, "-value", "4")
	b, bID, _ := startPeer(t, "-bootstrap", aAddr, "-value", "2")
	a.out.waitExact(t, 0, "neighbours (1): "+bID)
	b.out.waitExact(t, 0, "neighbours (1): "+aID)

	// aggregate: one line per aggregate, then ok.
	mark := a.out.len()
	a.send(t, "aggregate")
	okAt := a.out.waitExact(t, mark, "ok aggregate")
	answer := strings.Split(a.out.String(), "\n")[mark:okAt]
	for i, typ := range []string{"mean", "min", "max", "count"} {
		if i >= len(answer) || !strings.HasPrefix(answer[i], "aggregate "+typ+" ") {
			t.Fatalf("aggregate answered %q", answer)
		}
	}

	// sample: the other peer, the only one there is.
	mark = a.out.len()
	a.send(t, "sample")
	i, line := a.out.wait(t, mark, "sample ")
	if f := strings.Fields(line); len(f) < 2 || f[1] != bID {
		t.Fatalf("sample answered %q, want %s", line, bID)
	}
	a.out.waitExact(t, i+1, "ok sample")

	// set: a number is taken, anything else refused.
	mark = a.out.len()
	a.send(t, "set 7.5")
	a.out.waitExact(t, mark, "ok set")
	mark = a.out.len()
	a.send(t, "set seven")
	a.out.wait(t, mark, "error set: ")
}
