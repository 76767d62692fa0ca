package search_test

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
)

// FuzzMessage: whatever bytes arrive, decoding them and handing the message to any core
// (with neighbours, data published, a search in progress) never panics.
func FuzzMessage(f *testing.F) {
	ids := peers(4)
	q := &search.Query{Id: 1, Origin: origin(ids[2]), Key: "k", Ttl: 3, Hops: 4, Path: [][]byte{[]byte(ids[2])}}
	seeds := []*search.Message{
		{Body: &search.Message_Query{Query: q}},
		{Body: &search.Message_Query{Query: &search.Query{Id: 1, Origin: origin(ids[0]), Key: "k", Ttl: 0, Walker: 3}}},
		{Body: &search.Message_Hit{Hit: &search.Hit{Id: 1, Key: "k", Data: []byte("v"), Hops: 2, Node: origin(ids[1])}}},
		{Body: &search.Message_Check{Check: &search.Check{Id: 1}}},
		{Body: &search.Message_CheckReply{CheckReply: &search.CheckReply{Id: 1, Stop: true}}},
		{Body: &search.Message_Exhausted{Exhausted: &search.Exhausted{Id: 1, Walker: 2}}},
		{Body: &search.Message_Filter{Filter: filterWith(f, "k", 1)}},
	}
	for _, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(search.Message)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		_ = m.Kind()
		_ = m.Descriptors()
		_, _ = m.SearchID()
		for _, c := range []protocols.Core{
			must(search.NewKWalker(ids[0], search.KWalkerConfig{}, rng(1))),
			must(search.NewABloom(ids[0], search.ABloomConfig{}, rng(1))),
			must(search.NewFlood(ids[0], search.FloodConfig{}, rng(1))),
		} {
			c.Handle(t0, protocols.Neighbours{Peers: []peer.ID{ids[1], ids[3]}})
			c.Handle(t0, protocols.Call{Req: search.Publish{Key: "k", Data: []byte("v")}})
			c.Handle(t0, protocols.Call{Req: search.Search{ID: 1, Key: "other"}})
			for _, from := range []peer.ID{ids[1], ids[2]} {
				c.Handle(t0, protocols.Receive{From: from, Msg: proto.Clone(m)})
			}
			c.Handle(t0, protocols.PeerDown{Peer: ids[1]})
			c.Handle(t0, protocols.PeerDown{Peer: ids[3]})
			c.Handle(t0, protocols.Receive{From: ids[1], Msg: proto.Clone(m)})
		}
	})
}
