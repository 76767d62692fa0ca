package unsserv

import (
	"container/list"

	"github.com/libp2p/go-libp2p/core/peer"
)

// originWindows tells whether a broadcast (origin, seq) is seen for the first time,
// with bounded memory: per origin, the highest sequence number seen and which of the
// window numbers below it were seen; at most maxOrigins origins, the least recently
// heard forgotten first. A sequence number below an origin's window counts as seen (a
// straggler too old to tell apart from a duplicate), so the application never gets a
// broadcast twice. Origins number their broadcasts from their clock (see Broadcast), so
// an origin that restarts keeps counting upwards.
type originWindows struct {
	window     uint64
	maxOrigins int
	byOrigin   map[peer.ID]*list.Element
	lru        *list.List // of *originWindow, most recent at the front
}

type originWindow struct {
	origin peer.ID
	high   uint64   // highest seq seen
	seen   []uint64 // bitmap over (high-window, high], bit (seq % window)
}

func newOriginWindows(window uint64, maxOrigins int) *originWindows {
	window = (window + 63) / 64 * 64
	return &originWindows{window: window, maxOrigins: maxOrigins, byOrigin: map[peer.ID]*list.Element{}, lru: list.New()}
}

// first records (origin, seq) and reports whether it was new.
func (w *originWindows) first(origin peer.ID, seq uint64) bool {
	e, ok := w.byOrigin[origin]
	if !ok {
		if w.lru.Len() >= w.maxOrigins {
			old := w.lru.Back()
			w.lru.Remove(old)
			delete(w.byOrigin, old.Value.(*originWindow).origin)
		}
		ow := &originWindow{origin: origin, high: seq, seen: make([]uint64, w.window/64)}
		ow.set(seq, w.window)
		w.byOrigin[origin] = w.lru.PushFront(ow)
		return true
	}
	w.lru.MoveToFront(e)
	ow := e.Value.(*originWindow)
	switch {
	case seq > ow.high:
		// Slide the window: clear the bits of the numbers that enter it.
		if seq-ow.high >= w.window {
			clear(ow.seen)
		} else {
			for s := ow.high + 1; s <= seq; s++ {
				ow.clear(s, w.window)
			}
		}
		ow.high = seq
		ow.set(seq, w.window)
		return true
	case ow.high-seq >= w.window:
		return false // older than the window
	case ow.has(seq, w.window):
		return false
	default:
		ow.set(seq, w.window)
		return true
	}
}

func (o *originWindow) set(seq, window uint64) {
	i := seq % window
	o.seen[i/64] |= 1 << (i % 64)
}

func (o *originWindow) clear(seq, window uint64) {
	i := seq % window
	o.seen[i/64] &^= 1 << (i % 64)
}

func (o *originWindow) has(seq, window uint64) bool {
	i := seq % window
	return o.seen[i/64]&(1<<(i%64)) != 0
}
