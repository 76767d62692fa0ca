package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// waitTimeout bounds every wait for a line; the waits usually take milliseconds.
const waitTimeout = 20 * time.Second

// transcript collects the lines written to it and lets a test wait for one.
type transcript struct {
	mu      sync.Mutex
	partial strings.Builder
	lines   []string
	changed chan struct{} // closed and replaced at every new line
}

func newTranscript() *transcript { return &transcript{changed: make(chan struct{})} }

func (t *transcript) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial.Write(p)
	s := t.partial.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		t.lines = append(t.lines, strings.Split(s[:i], "\n")...)
		t.partial.Reset()
		t.partial.WriteString(s[i+1:])
		close(t.changed)
		t.changed = make(chan struct{})
	}
	return len(p), nil
}

// len returns how many lines have been written so far.
func (t *transcript) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.lines)
}

func (t *transcript) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// wait returns the index and text of the first line at index from or later that
// starts with prefix, waiting for it if need be.
func (t *transcript) wait(tb testing.TB, from int, prefix string) (int, string) {
	tb.Helper()
	return t.waitFunc(tb, from, fmt.Sprintf("starting %q", prefix), func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// waitExact is wait for a whole line.
func (t *transcript) waitExact(tb testing.TB, from int, line string) int {
	tb.Helper()
	i, _ := t.waitFunc(tb, from, fmt.Sprintf("%q", line), func(l string) bool { return l == line })
	return i
}

func (t *transcript) waitFunc(tb testing.TB, from int, what string, match func(string) bool) (int, string) {
	tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		for i := from; i < len(t.lines); i++ {
			if match(t.lines[i]) {
				l := t.lines[i]
				t.mu.Unlock()
				return i, l
			}
		}
		from = max(from, len(t.lines))
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("no line %s within %v; output so far:\n%s", what, waitTimeout, t)
		}
	}
}

// checkNoLeaks fails the test if goroutines that were not there at its start are
// still running once its cleanups (which stop the demos it started) are done.
// libp2p's UPnP discovery (port mapping, on in peer and relay mode) is not cancelled
// by the host's Close: its SSDP search ends on its own timeout (5 s) later.
func checkNoLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/nat/internal/nat.discoverNATs.func1"))
	})
}

// demoProc is one run of the demo in this process, as if started from a shell.
type demoProc struct {
	out    *transcript
	errs   *transcript
	stdin  *io.PipeWriter
	cancel context.CancelFunc
	done   chan error
}

// startDemo runs the demo with args; the test's cleanup stops it (Ctrl-C) if it is
// still running, and fails the test if it returned an error.
func startDemo(t *testing.T, args ...string) *demoProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	p := &demoProc{out: newTranscript(), errs: newTranscript(), stdin: pw, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx, args, pr, p.out, p.errs) }()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("demo %s: %v\nstderr:\n%s", strings.Join(args, " "), err, p.errs)
		}
	})
	return p
}

// send writes one command line to the demo's standard input.
func (p *demoProc) send(t *testing.T, line string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		t.Fatalf("write %q to stdin: %v", line, err)
	}
}

// stop is Ctrl-C: it cancels the run, closes standard input and waits for run to
// return (at once if it already has).
func (p *demoProc) stop() error {
	p.cancel()
	_ = p.stdin.Close()
	if p.done == nil {
		return nil
	}
	err := <-p.done
	p.done = nil
	return err
}

// wait waits until run has returned by itself (after quit) and returns its error.
func (p *demoProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done = nil
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("the demo did not return within %v", waitTimeout)
		return nil
	}
}

// startPeer runs demo peer on loopback with extra flags, and waits for its peer ID,
// its TCP address and "joined network".
func startPeer(t *testing.T, extra ...string) (p *demoProc, id, addr string) {
	t.Helper()
	args := append([]string{"peer", "-listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "-network", "t.net"}, extra...)
	p = startDemo(t, args...)
	_, l := p.out.wait(t, 0, "peer ID ")
	id = strings.TrimPrefix(l, "peer ID ")
	_, l = p.out.wait(t, 0, "addr /ip4/127.0.0.1/tcp/")
	addr = strings.TrimPrefix(l, "addr ")
	p.out.waitExact(t, 0, "joined network t.net")
	return p, id, addr
}

// httpAddr waits for the demo's "http listening on" line and returns its URL.
func (p *demoProc) httpURL(t *testing.T) string {
	t.Helper()
	_, l := p.out.wait(t, 0, "http listening on ")
	return strings.TrimPrefix(l, "http listening on ")
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
