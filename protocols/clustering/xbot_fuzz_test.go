package clustering_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/sim"
)

// FuzzXBOTMessage: whatever bytes decode as an X-BOT message, a core in any of its
// roles takes it (from two senders, twice, then at every deadline) without panicking,
// and its views stay within bounds, free of itself and of duplicates.
func FuzzXBOTMessage(f *testing.F) {
	ids, _ := sim.PeerIDs(5, 8)
	n := func(k int) *clustering.XBotNode { return &clustering.XBotNode{Id: []byte(ids[k])} }
	for _, m := range []*clustering.XBotMessage{
		{Sender: n(1), Body: &clustering.XBotMessage_Neighbor{Neighbor: &clustering.XBotNeighbor{HighPriority: true}}},
		{Sender: n(1), Body: &clustering.XBotMessage_Shuffle{Shuffle: &clustering.XBotShuffle{Origin: n(1), Nodes: []*clustering.XBotNode{n(4), n(0)}, Ttl: 9}}},
		{Sender: n(1), Body: &clustering.XBotMessage_Optimization{Optimization: &clustering.XBotOptimization{Old: n(2), Itoc: 1, Itoo: 2, Round: 1}}},
		{Sender: n(1), Body: &clustering.XBotMessage_Replace{Replace: &clustering.XBotReplace{Initiator: n(5), Old: n(6), Itoc: 1, Itoo: 9, Ctod: 9, Round: 2}}},
		{Sender: n(1), Body: &clustering.XBotMessage_Switch{Switch: &clustering.XBotSwitch{Initiator: n(2), Candidate: n(3), Round: 3}}},
		{Sender: n(1), Body: &clustering.XBotMessage_SwitchReply{SwitchReply: &clustering.XBotSwitchReply{Accepted: true, Initiator: []byte(ids[5]), Round: 2}}},
		{Sender: n(1), Body: &clustering.XBotMessage_OptimizationReply{OptimizationReply: &clustering.XBotOptimizationReply{Accepted: true, Round: 1}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(clustering.XBotMessage)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		rank := func(nd clustering.Node) float64 { return float64(slices.Index(ids, nd.ID)) }
		cfg := clustering.XBOTConfig{ActiveView: 3, PassiveView: 4, PassiveScan: 2, MaxPending: 1}
		x, err := clustering.NewXBOT(ids[0], cfg, rank, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		var timers []protocols.Timer
		do := func(in protocols.Input) {
			for _, o := range x.Handle(sim.Epoch, in) {
				if s, ok := o.(protocols.SetTimer); ok {
					timers = append(timers, s.Timer)
				}
			}
		}
		do(protocols.Start{})
		do(protocols.Neighbours{Peers: ids[1:4]})
		for _, k := range []int{1, 2, 3} {
			do(protocols.Receive{From: ids[k], Msg: &clustering.XBotMessage{Sender: n(k), Body: &clustering.XBotMessage_Neighbor{Neighbor: &clustering.XBotNeighbor{}}}})
		}
		for _, from := range []int{1, 2, 1} {
			do(protocols.Receive{From: ids[from], Msg: proto.Clone(m)})
		}
		for _, tm := range timers {
			do(protocols.TimerFired{Timer: tm})
		}
		do(protocols.Receive{From: ids[1], Msg: proto.Clone(m)})
		a, p := x.Active(), x.Passive()
		if len(a) > 3 || len(p) > 4 {
			t.Fatalf("views over their bounds: %d %d", len(a), len(p))
		}
		all := append(slices.Clone(a), p...)
		for _, q := range all {
			if q == ids[0] || q.Validate() != nil {
				t.Fatalf("view holds %q", q)
			}
		}
		slices.Sort(all)
		if len(slices.Compact(all)) != len(a)+len(p) {
			t.Fatalf("duplicates in %v %v", a, p)
		}
	})
}
