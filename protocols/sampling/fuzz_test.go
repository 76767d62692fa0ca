package sampling_test

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
)

// FuzzMessage: whatever bytes arrive, decoding them and handing the message to any core
// (with neighbours, a sample in progress, a walk passed on) never panics.
func FuzzMessage(f *testing.F) {
	ids := peers(4)
	seeds := []*sampling.Message{
		walkMsg(&sampling.Walk{Id: 3, Origin: origin(ids[2]), Ttl: 5, Degree: 2, Path: [][]byte{[]byte(ids[1])}}),
		walkMsg(&sampling.Walk{Id: 3, Origin: origin(ids[0]), Ttl: 0, Kind: sampling.Walk_BOUNCE, Path: [][]byte{[]byte(ids[0])}}),
		walkMsg(&sampling.Walk{Id: 4, Origin: origin(ids[2]), Ttl: 2, Kind: sampling.Walk_BACKTRACK}),
		resultMsg(7, ids[1], false),
		resultMsg(7, "", true),
		{Body: &sampling.Message_Link{Link: &sampling.Link{Up: true}}},
		{Body: &sampling.Message_Weight{Weight: &sampling.Weight{Version: 9, Extra: 4}}},
		{Body: &sampling.Message_WeightAck{WeightAck: &sampling.WeightAck{Version: 1, Ok: true, Extra: 1}}},
		{Body: &sampling.Message_Ask{Ask: &sampling.Ask{Delta: -1}}},
		{Body: &sampling.Message_AskRefused{AskRefused: &sampling.AskRefused{}}},
	}
	for _, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(sampling.Message)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		_ = m.Kind()
		_ = m.Descriptors()
		for _, c := range []protocols.Core{
			must(sampling.NewMRWB(ids[0], sampling.MRWBConfig{}, rng(1))),
			must(sampling.NewRWD(ids[0], sampling.RWDConfig{}, rng(1))),
			must(sampling.NewRandomWalk(ids[0], sampling.RandomWalkConfig{}, rng(1))),
		} {
			c.Handle(t0, protocols.Neighbours{Peers: []peer.ID{ids[1], ids[3]}})
			c.Handle(t0, protocols.Call{Req: sampling.Sample{ID: 1}})
			for _, from := range []peer.ID{ids[1], ids[2]} {
				c.Handle(t0, protocols.Receive{From: from, Msg: proto.Clone(m)})
			}
			c.Handle(t0, protocols.PeerDown{Peer: ids[1]})
			c.Handle(t0, protocols.PeerDown{Peer: ids[3]})
		}
	})
}
