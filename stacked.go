package unsserv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Services stacked on an overlay (dissemination, aggregation, sampling) hand their core
// the overlay's neighbours at start, at every change, when a neighbour starts running
// the service (its send may have failed before, and the core dropped it), and every
// resyncPeriod. These helpers are shared by them.

// resyncPeriod is how often a stacked service's core is given the overlay's neighbours
// even when they did not change.
const resyncPeriod = 10 * time.Second

// neighbourIDs returns the IDs of the overlay's current neighbours.
func neighbourIDs(o Overlay) []peer.ID {
	ns := o.Neighbours()
	ids := make([]peer.ID, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

// resync calls update when a neighbour of o starts running pid (sub delivers
// event.EvtPeerProtocolsUpdated) and every resyncPeriod, and self (when not nil) when
// the host's addresses change (sub delivers event.EvtLocalAddressesUpdated), until
// done is closed or sub ends. It closes sub.
func resync(done <-chan struct{}, sub event.Subscription, o Overlay, pid protocol.ID, update, self func()) {
	defer sub.Close()
	tick := time.NewTicker(resyncPeriod)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			update()
		case ev, ok := <-sub.Out():
			if !ok {
				return
			}
			switch e := ev.(type) {
			case event.EvtPeerProtocolsUpdated:
				if neighbourStarted(o, pid, e) {
					update()
				}
			case event.EvtLocalAddressesUpdated:
				if self != nil {
					self()
				}
			}
		}
	}
}

// neighbourStarted reports whether e says that a neighbour of o now runs pid.
func neighbourStarted(o Overlay, pid protocol.ID, e event.EvtPeerProtocolsUpdated) bool {
	return slices.Contains(e.Added, pid) && slices.Contains(neighbourIDs(o), e.Peer)
}

// feed wires a stacked service's core to overlay o. self (when not nil) gives the core
// this node's descriptor: now, and whenever the host's addresses change. update gives
// it the overlay's neighbours: now, at every change of the overlay, when a neighbour
// starts running pid, and every resyncPeriod. The watching goroutine, counted in wg,
// runs until done is closed. The returned stop removes the overlay handler; on error
// nothing is left registered (the goroutine, if started, ends with done).
func feed(ctx context.Context, h p2phost.Host, o Overlay, pid protocol.ID, done <-chan struct{}, wg *sync.WaitGroup, update, self func(context.Context) error) (stop func(), err error) {
	events := []any{new(event.EvtPeerProtocolsUpdated)}
	var onAddrs func()
	if self != nil {
		if err := self(ctx); err != nil {
			return nil, err
		}
		events = append(events, new(event.EvtLocalAddressesUpdated))
		onAddrs = func() { _ = self(context.Background()) }
	}
	sub, err := h.EventBus().Subscribe(events)
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		resync(done, sub, o, pid, func() { _ = update(context.Background()) }, onAddrs)
	}()
	// Neighbour changes reach the core in order: each update reads the overlay's
	// current set (under the service's lock).
	stop = o.OnNeighboursChanged(func([]Node) { _ = update(context.Background()) })
	if err := update(ctx); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// stackedSetup checks what every service stacked on an overlay is given, and returns
// its options, its profile (the option's, else the overlay's) and the overlay's host.
// service names the service in errors ("new <service> <id>: ..."); withMeta says
// whether it takes the Meta option (only the clustering, which publishes a
// descriptor of its own, does).
func stackedSetup(service string, o Overlay, id string, opts []Option, withMeta bool) (*options, Profile, p2phost.Host, error) {
	if o == nil {
		return nil, 0, nil, fmt.Errorf("new %s: overlay is nil: pass the *Membership from JoinNetwork", service)
	}
	if id == "" || strings.ContainsAny(id, " \t\n") {
		return nil, 0, nil, fmt.Errorf("new %s: id %q must be non-empty and without spaces", service, id)
	}
	opt, err := buildOptions(opts)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("new %s %s: %w", service, id, err)
	}
	switch {
	case withMeta && len(opt.bootstrap) > 0:
		return nil, 0, nil, fmt.Errorf("new %s %s: Bootstrap is an option of JoinNetwork", service, id)
	case !withMeta && (len(opt.bootstrap) > 0 || opt.meta != nil):
		return nil, 0, nil, fmt.Errorf("new %s %s: Bootstrap and Meta are options of JoinNetwork", service, id)
	}
	profile := opt.profile
	if p, ok := o.(interface{ Profile() Profile }); ok && !opt.profileSet {
		profile = p.Profile()
	}
	h := o.Host()
	if h == nil {
		return nil, 0, nil, fmt.Errorf("new %s %s: the overlay has no host", service, id)
	}
	return opt, profile, h, nil
}
