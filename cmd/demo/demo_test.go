package main

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTourRunsAndStopsCleanly(t *testing.T) {
	var out, errb strings.Builder
	if err := run(context.Background(), []string{"-n", "4", "-for", "2s"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	s := out.String()
	for _, want := range []string{"starting 4 peers", "neighbours: [", "all peers joined", "all 4 peers left the network and closed their hosts"} {
		if !strings.Contains(s, want) {
			t.Fatalf("output lacks %q:\n%s", want, s)
		}
	}
}

// lineWriter hands each line written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		s := w.buf.String()
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- s[:i]
		w.buf.Reset()
		w.buf.WriteString(s[i+1:])
	}
}

func waitLine(t *testing.T, lines chan string, prefix string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line starting %q within 20s", prefix)
		}
	}
}

// Two peers in the flag form: the second joins the first by the address it printed.
func TestPeerModeJoinsByPrintedAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key := t.TempDir() + "/a.key"
	a := &lineWriter{lines: make(chan string, 100)}
	b := &lineWriter{lines: make(chan string, 100)}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- run(ctx, []string{"peer", "-listen", "/ip4/127.0.0.1/tcp/0", "-key", key, "-network", "t.net"}, a, io.Discard)
	}()
	addr := strings.TrimPrefix(waitLine(t, a.lines, "listening on /ip4/127.0.0.1/tcp/"), "listening on ")
	waitLine(t, a.lines, "joined network")
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- run(ctx, []string{"peer", "-listen", "/ip4/127.0.0.1/udp/0/quic-v1", "-bootstrap", addr, "-network", "t.net"}, b, io.Discard)
	}()
	waitLine(t, b.lines, "joined network")
	waitLine(t, b.lines, "neighbours (1): "+addr[strings.LastIndex(addr, "/")+1:])
	waitLine(t, a.lines, "neighbours (1):")
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
