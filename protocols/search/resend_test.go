package search_test

import (
	"testing"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
)

// A query whose send failed (PeerDown for its next hop) goes on by another route, as
// if it had just arrived; a hit whose send failed goes to the origin once more, and
// not a third time.
func TestResendAfterPeerDown(t *testing.T) {
	ids := peers(6)
	for _, tc := range []struct {
		name string
		core func() protocols.Core
	}{
		{"kwalker", func() protocols.Core {
			return must(search.NewKWalker(ids[0], search.KWalkerConfig{Walkers: 1}, rng(1)))
		}},
		{"abloom", func() protocols.Core {
			return must(search.NewABloom(ids[0], search.ABloomConfig{}, rng(1)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.core()
			step(c, protocols.SelfUpdated{Record: []byte("rec")})
			step(c, protocols.Neighbours{Peers: ids[1:3]})

			// This node's own search: its one walker goes to B or C; that send fails.
			outs := step(c, protocols.Call{Req: search.Search{ID: 1, Key: "k"}})
			ss := sent(outs)
			eq(t, "walkers", len(ss), 1)
			first, q := ss[0].To, query(ss[0])
			outs = step(c, protocols.PeerDown{Peer: first})
			ss = sent(outs)
			if len(ss) != 1 || ss[0].To == first || ss[0].To == ids[0] {
				t.Fatalf("after the walker's send to %s failed: %v", name(ids, first), kinds(ids, outs))
			}
			if r := query(ss[0]); r.GetId() != 1 || r.GetTtl() != q.GetTtl() || r.GetHops() != q.GetHops() || len(r.GetPath()) != len(q.GetPath()) {
				t.Fatalf("rerouted query %+v, was %+v", r, q)
			}
			// The other neighbour fails too: no route is left, the search ends.
			outs = step(c, protocols.PeerDown{Peer: ss[0].To})
			if nf := events[search.NotFound](outs); len(nf) != 1 || nf[0].ID != 1 {
				t.Fatalf("no route left: %+v", outs)
			}

			// A hit to an origin (E) whose stream failed: sent again once.
			step(c, protocols.Call{Req: search.Publish{Key: "x", Data: []byte("v")}})
			outs = step(c, recv(ids[3], &search.Query{Id: 2, Origin: origin(ids[4]), Key: "x", Ttl: 5, Hops: 2, Path: [][]byte{[]byte(ids[3])}}))
			eqs(t, "hit", kinds(ids, outs), []string{"E:HIT"})
			eqs(t, "hit again", kinds(ids, step(c, protocols.PeerDown{Peer: ids[4]})), []string{"E:HIT"})
			eqs(t, "not a third time", kinds(ids, step(c, protocols.PeerDown{Peer: ids[4]})), nil)
		})
	}
}
