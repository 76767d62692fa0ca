package search_test

import (
	"testing"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
)

func TestFlood(t *testing.T) {
	ids := peers(6)
	f := must(search.NewFlood(ids[0], search.FloodConfig{TTL: 3}, rng(1)))
	step(f, protocols.Neighbours{Peers: ids[1:4]})
	eqs(t, "origin floods", kinds(ids, step(f, protocols.Call{Req: search.Search{ID: 1, Key: "x"}})), []string{"B:QUERY", "C:QUERY", "D:QUERY"})
	q := &search.Query{Id: 2, Origin: origin(ids[5]), Key: "x", Ttl: 1, Hops: 2}
	eqs(t, "forwarded but to the sender", kinds(ids, step(f, recv(ids[1], q))), []string{"C:QUERY", "D:QUERY"})
	eqs(t, "duplicate dropped", kinds(ids, step(f, recv(ids[2], q))), nil)
	step(f, protocols.Call{Req: search.Publish{Key: "x", Data: []byte("v")}})
	q0 := &search.Query{Id: 3, Origin: origin(ids[5]), Key: "x", Ttl: 0, Hops: 3}
	eqs(t, "hit, TTL spent", kinds(ids, step(f, recv(ids[1], q0))), []string{"F:HIT"})
	eq(t, "dups", f.Stats().Dups, uint64(1))
}
