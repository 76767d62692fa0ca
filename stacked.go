package unsserv

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
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
