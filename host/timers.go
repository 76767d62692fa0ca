package host

import (
	"container/heap"
	"time"

	"github.com/unsserv/go-unsserv/protocols"
)

// timerQueue holds a core's pending timers, earliest first. Setting a timer again
// replaces it: the old heap entry stays behind with a stale generation and is skipped
// when it surfaces. Only the service loop touches it.
type timerQueue struct {
	h    timerHeap
	live map[protocols.Timer]uint64 // timer -> generation of its pending entry
	gen  uint64
}

type timerEntry struct {
	at  time.Time
	t   protocols.Timer
	gen uint64
}

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func newTimerQueue() *timerQueue {
	return &timerQueue{live: make(map[protocols.Timer]uint64)}
}

func (q *timerQueue) set(now time.Time, t protocols.Timer, after time.Duration) {
	q.gen++
	q.live[t] = q.gen
	heap.Push(&q.h, timerEntry{at: now.Add(after), t: t, gen: q.gen})
	// Replaced and cancelled entries linger until they surface; compact when they
	// dominate so a core that re-arms timers often cannot grow the heap without bound.
	if len(q.h) > 64 && len(q.h) > 4*len(q.live) {
		q.compact()
	}
}

func (q *timerQueue) cancel(t protocols.Timer) { delete(q.live, t) }

func (q *timerQueue) compact() {
	kept := q.h[:0]
	for _, e := range q.h {
		if g, ok := q.live[e.t]; ok && g == e.gen {
			kept = append(kept, e)
		}
	}
	q.h = kept
	heap.Init(&q.h)
}

// next returns the time of the earliest pending timer.
func (q *timerQueue) next() (time.Time, bool) {
	for len(q.h) > 0 {
		e := q.h[0]
		if g, ok := q.live[e.t]; ok && g == e.gen {
			return e.at, true
		}
		heap.Pop(&q.h)
	}
	return time.Time{}, false
}

// due pops one timer that is due at now, if any.
func (q *timerQueue) due(now time.Time) (protocols.Timer, bool) {
	for {
		at, ok := q.next()
		if !ok || at.After(now) {
			return protocols.Timer{}, false
		}
		e := heap.Pop(&q.h).(timerEntry)
		delete(q.live, e.t)
		return e.t, true
	}
}
