package host

import (
	"testing"
	"time"

	"github.com/unsserv/go-unsserv/protocols"
)

func TestTimerQueue(t *testing.T) {
	q := newTimerQueue()
	t0 := time.Unix(0, 0)
	a, b, c := protocols.Timer{Kind: 1}, protocols.Timer{Kind: 2}, protocols.Timer{Kind: 1, Peer: "p"}
	q.set(t0, a, 3*time.Second)
	q.set(t0, b, 1*time.Second)
	q.set(t0, c, 2*time.Second)
	q.set(t0, a, 4*time.Second) // replaces a at 3s
	q.cancel(c)
	if at, ok := q.next(); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("next = %v %v, want 1s", at, ok)
	}
	var fired []protocols.Timer
	for _, now := range []time.Duration{time.Second, 3 * time.Second, 4 * time.Second} {
		for {
			tm, ok := q.due(t0.Add(now))
			if !ok {
				break
			}
			fired = append(fired, tm)
		}
	}
	if len(fired) != 2 || fired[0] != b || fired[1] != a {
		t.Fatalf("fired %v, want [b a]", fired)
	}
	if _, ok := q.next(); ok {
		t.Fatal("queue should be empty")
	}
}

func TestTimerQueueCompacts(t *testing.T) {
	q := newTimerQueue()
	for i := 0; i < 10000; i++ {
		q.set(time.Unix(0, 0), protocols.Timer{Kind: 1}, time.Duration(i))
	}
	if len(q.h) > 64 {
		t.Fatalf("heap holds %d entries for one live timer", len(q.h))
	}
}
