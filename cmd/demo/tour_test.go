package main

import (
	"fmt"
	"strings"
	"testing"
)

// The tour: five peers join, the overlay settles, peer0's broadcast and then peer4's
// reach every other peer, and Ctrl-C leaves cleanly.
func TestTourBroadcastsReachEveryPeer(t *testing.T) {
	checkNoLeaks(t)
	p := startDemo(t, "-n", "5")
	p.out.waitExact(t, 0, "starting 5 peers on 127.0.0.1 in network \"demo.network\" (stable profile)")
	p.out.wait(t, 0, "peer1   neighbours: [")
	settled, _ := p.out.wait(t, 0, "the overlay has settled")
	first := p.out.waitExact(t, settled, "peer0 broadcasts: hello")
	for i := 1; i < 5; i++ {
		p.out.waitExact(t, first, fmt.Sprintf("peer%d got broadcast from peer0: hello", i))
	}
	second := p.out.waitExact(t, first, "peer4 broadcasts: hello again")
	for i := 0; i < 4; i++ {
		p.out.waitExact(t, second, fmt.Sprintf("peer%d got broadcast from peer4: hello again", i))
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	out := p.out.String()
	if !strings.HasSuffix(out, "all 5 peers left the network and closed their hosts") {
		t.Fatalf("the tour did not end with its goodbye:\n%s", out)
	}
	// Each peer got each broadcast once.
	for _, b := range []string{"from peer0: hello", "from peer4: hello again"} {
		if n := strings.Count(out, "got broadcast "+b+"\n"); n != 4 {
			t.Errorf("%d peers got the broadcast %q, want 4:\n%s", n, b, out)
		}
	}
}

func TestTourFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "1"}, "-n 1: the tour needs at least 2 peers"},
		{[]string{"-profile", "fast"}, `-profile "fast": use stable or extreme`},
		{[]string{"walk"}, `unknown mode "walk"`},
	} {
		err := run(t.Context(), c.args, strings.NewReader(""), &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("demo %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
