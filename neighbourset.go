package unsserv

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// neighbourSet is what an overlay (*Membership, *Clustering) keeps of its neighbours for
// the application: the current set, the handlers of OnNeighboursChanged and the
// goroutine that calls them, and the channel WaitReady waits on. Init it before use.
type neighbourSet struct {
	what string // what WaitReady waits for, e.g. "neighbours in network.id"

	mu         sync.Mutex
	closed     bool
	neighbours []Node
	changed    chan struct{} // closed and replaced at every change
	handlers   map[int]func([]Node)
	nextID     int
	notify     chan struct{} // wakes the notifier
}

func (s *neighbourSet) init(what string) {
	s.what = what
	s.changed = make(chan struct{})
	s.handlers = map[int]func([]Node){}
	s.notify = make(chan struct{}, 1)
}

// set records new neighbours and wakes WaitReady and the notifier. After close it
// does nothing.
func (s *neighbourSet) set(ns []Node) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.neighbours = ns
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// close marks the set closed, drops the handlers and wakes WaitReady; it reports
// whether the set was open.
func (s *neighbourSet) close() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	s.handlers = map[int]func([]Node){}
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// clear forgets the neighbours (after Leave).
func (s *neighbourSet) clear() {
	s.mu.Lock()
	s.neighbours = nil
	s.mu.Unlock()
}

// notifier calls the handlers with the latest neighbours, one call at a time, until
// stop is closed.
func (s *neighbourSet) notifier(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-s.notify:
		}
		s.mu.Lock()
		ns := s.neighbours
		hs := make([]func([]Node), 0, len(s.handlers))
		for i := 0; i < s.nextID; i++ {
			if f, ok := s.handlers[i]; ok {
				hs = append(hs, f)
			}
		}
		s.mu.Unlock()
		for _, f := range hs {
			f(slices.Clone(ns))
		}
	}
}

// Neighbours returns the current neighbours.
func (s *neighbourSet) Neighbours() []Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.neighbours)
}

// OnNeighboursChanged calls f with the neighbours every time they change (see
// Overlay). After Leave it does nothing.
func (s *neighbourSet) OnNeighboursChanged(f func([]Node)) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || f == nil {
		return func() {}
	}
	id := s.nextID
	s.nextID++
	s.handlers[id] = f
	return func() {
		s.mu.Lock()
		delete(s.handlers, id)
		s.mu.Unlock()
	}
}

// WaitReady blocks until there are at least n neighbours. It returns ErrClosed after
// Leave, and ctx's error (with the count reached) when ctx ends first.
func (s *neighbourSet) WaitReady(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		closed, have, ch := s.closed, len(s.neighbours), s.changed
		s.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if have >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d %s: %d so far: %w", n, s.what, have, ctx.Err())
		}
	}
}
