package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Two peers in this process, as two shells would run them: the second joins the first
// by the addr line it printed; then every stdin command of the contract, on both.
func TestPeerModeCommands(t *testing.T) {
	checkNoLeaks(t)
	a, aID, aAddr := startPeer(t, "-key", filepath.Join(t.TempDir(), "a.key"))
	b, bID, _ := startPeer(t, "-bootstrap", aAddr)
	a.out.waitExact(t, 0, "neighbours (1): "+bID)
	b.out.waitExact(t, 0, "neighbours (1): "+aID)

	// broadcast: handed over on one side, printed on the other.
	mark := a.out.len()
	a.send(t, "broadcast hello")
	a.out.waitExact(t, mark, "ok broadcast")
	b.out.waitExact(t, 0, "broadcast from "+aID+": hello")
	mark = b.out.len()
	b.send(t, "broadcast  two words  ")
	b.out.waitExact(t, mark, "ok broadcast")
	a.out.waitExact(t, 0, "broadcast from "+bID+": two words")

	// neighbours: the line again, then ok.
	mark = a.out.len()
	a.send(t, "neighbours")
	i := a.out.waitExact(t, mark, "neighbours (1): "+bID)
	a.out.waitExact(t, i+1, "ok neighbours")

	// peers: one conn line per connection (here direct ones to b), then ok.
	mark = a.out.len()
	a.send(t, "peers")
	okAt := a.out.waitExact(t, mark, "ok peers")
	conn := regexp.MustCompile(`^conn (\S+) (/\S+) (direct|relayed)$`)
	var toB int
	for _, l := range strings.Split(a.out.String(), "\n")[mark:okAt] {
		m := conn.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("peers answered %q, not a conn line", l)
		}
		if m[1] == bID && m[3] == "direct" {
			toB++
		}
	}
	if toB == 0 {
		t.Fatalf("peers lists no direct connection to %s:\n%s", bID, a.out)
	}

	// addrs: the addr lines again, each ending in /p2p/<id>, then ok.
	mark = a.out.len()
	a.send(t, "addrs")
	okAt = a.out.waitExact(t, mark, "ok addrs")
	answer := strings.Split(a.out.String(), "\n")[mark:okAt]
	if len(answer) == 0 || !contains(answer, "addr "+aAddr) {
		t.Fatalf("addrs answered %q, want the addr lines, among them %q", answer, "addr "+aAddr)
	}
	for _, l := range answer {
		if !strings.HasPrefix(l, "addr /") || !strings.HasSuffix(l, "/p2p/"+aID) {
			t.Fatalf("addrs answered %q", l)
		}
	}

	// Errors name the command.
	mark = a.out.len()
	a.send(t, "dance")
	a.out.wait(t, mark, "error dance: unknown command")
	a.send(t, "broadcast")
	a.out.wait(t, mark, "error broadcast: nothing to broadcast")

	// quit: b leaves and returns; a sees it go.
	aMark := a.out.len()
	mark = b.out.len()
	b.send(t, "quit")
	b.out.waitExact(t, mark, "ok quit")
	if err := b.wait(t); err != nil {
		t.Fatal(err)
	}
	a.out.waitExact(t, aMark, "neighbours (0): ")
	mark = a.out.len()
	a.send(t, "broadcast into the void")
	a.out.wait(t, mark, "error broadcast: no neighbours yet")
}

// The key file keeps the peer ID across restarts.
func TestPeerModeKeyFileKeepsID(t *testing.T) {
	checkNoLeaks(t)
	key := filepath.Join(t.TempDir(), "peer.key")
	first, id1, _ := startPeer(t, "-key", key)
	first.send(t, "quit")
	if err := first.wait(t); err != nil {
		t.Fatal(err)
	}
	_, id2, _ := startPeer(t, "-key", key)
	if id1 != id2 {
		t.Fatalf("restarted with the same key file: peer ID %s, then %s", id1, id2)
	}
}

// End of standard input (a peer started in the background) does not stop the peer.
func TestPeerModeOutlivesStdin(t *testing.T) {
	checkNoLeaks(t)
	a, _, aAddr := startPeer(t)
	_ = a.stdin.Close()
	_, bID, _ := startPeer(t, "-bootstrap", aAddr)
	a.out.waitExact(t, 0, "neighbours (1): "+bID)
}

// The HTTP endpoint answers what the commands answer, as JSON, and serves libp2p's and
// the services' metrics.
func TestPeerModeHTTP(t *testing.T) {
	checkNoLeaks(t)
	a, aID, aAddr := startPeer(t, "-http", "127.0.0.1:0")
	b, bID, _ := startPeer(t, "-bootstrap", aAddr, "-http", "127.0.0.1:0")
	a.out.waitExact(t, 0, "neighbours (1): "+bID)
	b.out.waitExact(t, 0, "neighbours (1): "+aID)
	url := a.httpURL(t)

	var ns neighboursJSON
	getJSON(t, url+"/neighbours", &ns)
	if ns.Count != 1 || len(ns.Neighbours) != 1 || ns.Neighbours[0].ID != bID || len(ns.Neighbours[0].Addrs) == 0 {
		t.Fatalf("GET /neighbours = %+v, want one neighbour %s with its addresses", ns, bID)
	}

	var as addrsJSON
	getJSON(t, url+"/addrs", &as)
	if as.ID != aID || !contains(as.Addrs, aAddr) {
		t.Fatalf("GET /addrs = %+v, want id %s and address %s", as, aID, aAddr)
	}

	var ps peersJSON
	getJSON(t, url+"/peers", &ps)
	found := false
	for _, c := range ps.Conns {
		found = found || (c.Peer == bID && c.Kind == "direct" && c.Addr != "")
	}
	if !found {
		t.Fatalf("GET /peers = %+v, want a direct connection to %s", ps, bID)
	}

	resp, err := http.Post(url+"/broadcast", "text/plain", strings.NewReader("over http\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /broadcast: %s", resp.Status)
	}
	b.out.waitExact(t, 0, "broadcast from "+aID+": over http")
	resp, err = http.Post(url+"/broadcast", "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST /broadcast with no text: %s, want 400", resp.Status)
	}
	if code, _ := httpGet(t, url+"/broadcast"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /broadcast: %d, want 405", code)
	}

	code, metrics := httpGet(t, url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, want := range []string{
		`unsserv_neighbours{algorithm="hyparview",protocol="/unsserv/membership/t.net",service="membership"} 1`,
		`unsserv_broadcasts_published_total{algorithm="plumtree",protocol="/unsserv/dissemination/t.net",service="dissemination"} 1`,
		"\nlibp2p_",
		"\ngo_goroutines ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	// b's registry counts the broadcast it received.
	_, metrics = httpGet(t, b.httpURL(t)+"/metrics")
	if want := `unsserv_broadcasts_delivered_total{algorithm="plumtree",protocol="/unsserv/dissemination/t.net",service="dissemination"} 1`; !strings.Contains(metrics, want) {
		t.Errorf("b's /metrics lacks %q", want)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
