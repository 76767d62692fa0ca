package membership

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// FuzzCoresTakeAnyMessage: whatever bytes decode as a membership message, both cores
// take it without panicking and keep their views sound.
func FuzzCoresTakeAnyMessage(f *testing.F) {
	for _, m := range []*Message{
		{Body: &Message_Join{Join: &Join{Sender: NewNode(ids[1], nil, nil)}}},
		{Body: &Message_ForwardJoin{ForwardJoin: &ForwardJoin{Joiner: NewNode(ids[2], nil, nil), Ttl: 3}}},
		{Body: &Message_Shuffle{Shuffle: &Shuffle{Origin: NewNode(ids[3], nil, nil), Nodes: []*Node{NewNode(ids[4], nil, nil)}, Ttl: 1}}},
		{Body: &Message_Newscast{Newscast: &NewscastExchange{Sender: NewNode(ids[1], nil, nil), Items: []*NewsItem{{Node: NewNode(ids[5], nil, nil), AgeMs: 7}}}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(Message)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		hv, _ := NewHyParView(NewNode(ids[0], nil, nil), HyParViewConfig{ActiveSize: 2, PassiveSize: 3}, rand.New(rand.NewPCG(1, 1)))
		nc, _ := NewNewscast(NewNode(ids[0], nil, nil), NewscastConfig{CacheSize: 3}, rand.New(rand.NewPCG(1, 1)))
		for _, c := range []protocols.Core{hv, nc} {
			c.Handle(t0, protocols.Start{Bootstrap: ids[1:2]})
			c.Handle(t0, protocols.Receive{From: ids[1], Msg: proto.Clone(m)})
			c.Handle(t0, protocols.Receive{From: ids[2], Msg: proto.Clone(m)})
		}
		if len(hv.Active()) > 2 || len(hv.Passive()) > 3 || len(nc.View()) > 3 {
			t.Fatalf("views over their bounds: %d %d %d", len(hv.Active()), len(hv.Passive()), len(nc.View()))
		}
		for _, p := range append(append(hv.Active(), hv.Passive()...), nc.View()...) {
			if p == ids[0] || p == "" {
				t.Fatalf("view holds %q", p)
			}
		}
	})
}
