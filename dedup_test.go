package unsserv

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestOriginWindows(t *testing.T) {
	w := newOriginWindows(128, 2)
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	steps := []struct {
		origin peer.ID
		seq    uint64
		want   bool
	}{
		{a, 1000, true}, {a, 1000, false}, // duplicate
		{a, 1002, true}, {a, 1001, true}, {a, 1001, false}, // out of order, then duplicate
		{a, 1002 + 127, true}, {a, 1002, false}, // 1002 still inside the window
		{a, 1001, false},                                               // below the window: refused
		{a, 5000, true}, {a, 5000 - 127, true}, {a, 5000 - 127, false}, // a big jump clears the window
		{b, 7, true}, {b, 7, false},
		{c, 9, true},    // a third origin evicts the least recent (a)
		{a, 5000, true}, // a forgotten: its old number is new again (the bound is real)
		{c, 9, false},   // c kept (a's return evicted b, then the least recent)
		{b, 7, true},    // b forgotten
	}
	for i, s := range steps {
		if got := w.first(s.origin, s.seq); got != s.want {
			t.Fatalf("step %d: first(%s, %d) = %v, want %v", i, s.origin, s.seq, got, s.want)
		}
	}
	if w.lru.Len() != 2 || len(w.byOrigin) != 2 {
		t.Fatalf("%d origins kept, want 2", w.lru.Len())
	}
}
