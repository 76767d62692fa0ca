package main

import (
	"net/http"
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

// TestPeerModeSearchAndCluster: publish, search, unpublish and cluster on stdin, and
// the same over HTTP, on two peers clustered by port distance.
func TestPeerModeSearchAndCluster(t *testing.T) {
	checkNoLeaks(t)
	a, aID, aAddr := startPeer(t, "-rank", "port", "-http", "127.0.0.1:0")
	b, bID, _ := startPeer(t, "-bootstrap", aAddr, "-rank", "port")
	a.out.waitExact(t, 0, "neighbours (1): "+bID)
	b.out.waitExact(t, 0, "neighbours (1): "+aID)

	// publish on a, search from b: the text, and a as the answerer.
	mark := a.out.len()
	a.send(t, "publish greeting hello there")
	a.out.waitExact(t, mark, "ok publish")
	mark = b.out.len()
	b.send(t, "search greeting")
	i, line := b.out.wait(t, mark, "found greeting from ")
	if want := "found greeting from " + aID + " (hops 1): hello there"; line != want {
		t.Fatalf("search answered %q, want %q", line, want)
	}
	b.out.waitExact(t, i+1, "ok search")

	// unpublish: b no longer finds it, and says so.
	mark = a.out.len()
	a.send(t, "unpublish greeting")
	a.out.waitExact(t, mark, "ok unpublish")
	mark = b.out.len()
	b.send(t, "search greeting")
	_, line = b.out.wait(t, mark, "error search: ")
	if !strings.Contains(line, "not found") {
		t.Fatalf("search after unpublish answered %q", line)
	}
	// Malformed commands say how to use them.
	mark = b.out.len()
	b.send(t, "publish")
	b.out.wait(t, mark, "error publish: usage: publish ID TEXT")

	// cluster: b, the only other peer, with its port distance.
	mark = a.out.len()
	a.send(t, "cluster")
	i, line = a.out.wait(t, mark, "cluster (")
	if line != "cluster (1):" {
		t.Fatalf("cluster answered %q", line)
	}
	_, line = a.out.wait(t, i+1, "cluster "+bID+" rank ")
	if f := strings.Fields(line); len(f) != 4 || f[3] == "+Inf" {
		t.Fatalf("cluster line %q: want a finite rank", line)
	}

	// The same over HTTP.
	url := a.httpURL(t)
	resp, err := http.Post(url+"/publish/over-http", "text/plain", strings.NewReader("via http"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /publish: %s", resp.Status)
	}
	mark = b.out.len()
	b.send(t, "search over-http")
	b.out.waitExact(t, mark, "found over-http from "+aID+" (hops 1): via http")
	if code, body := httpGet(t, url+"/search/over-http"); code != http.StatusOK || !strings.Contains(body, `"data": "via http"`) || !strings.Contains(body, `"hops": 0`) {
		t.Fatalf("GET /search (held locally): %d %s", code, body)
	}
	if code, body := httpGet(t, url+"/search/nothing-here"); code != http.StatusNotFound || !strings.Contains(body, "not found") {
		t.Fatalf("GET /search of a missing id: %d %s", code, body)
	}
	if code, body := httpGet(t, url+"/cluster"); code != http.StatusOK || !strings.Contains(body, bID) {
		t.Fatalf("GET /cluster: %d %s", code, body)
	}
	resp, err = http.Post(url+"/unpublish/over-http", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /unpublish: %s", resp.Status)
	}
}
