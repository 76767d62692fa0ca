package aggregation

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// FuzzCoreTakesAnyMessage: whatever bytes decode as an aggregation message, a core of
// every function takes it (as a first message or mid-exchange) without panicking, and its
// estimate stays a finite number with bounded state.
func FuzzCoreTakesAnyMessage(f *testing.F) {
	for _, m := range []*Message{
		{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 3, Cycle: 2, State: &State{Value: 5}}}},
		{Body: &Message_Request{Request: &Request{Exchange: 1, Epoch: 3, Function: uint32(Count), State: &State{Instances: []*Instance{{Id: 7, Value: 0.5}}}, Size: 100}}},
		{Body: &Message_Reply{Reply: &Reply{Exchange: 1, Epoch: 3, State: &State{Value: 1}}}},
		{Body: &Message_Refuse{Refuse: &Refuse{Exchange: 1, Reason: Refuse_EPOCH, Epoch: 4, Cycle: 9}}},
		{Body: &Message_Refuse{Refuse: &Refuse{Reason: Refuse_WAITING, Next: math.MaxUint64, Ticks: math.MaxUint32}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(Message)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		for _, fn := range []Function{Mean, Min, Max, Sum, Count} {
			c, err := NewPushPull(ids[0], PushPullConfig{Function: fn, Value: 2, MaxInstances: 8, ReplyCache: 4}, newRand())
			if err != nil {
				t.Fatal(err)
			}
			c.Handle(t0, protocols.Start{})
			c.Handle(t0, protocols.Neighbours{Peers: ids[1:3]})
			c.Handle(t0, protocols.Receive{From: ids[1], Msg: proto.Clone(m)})
			c.Handle(t0, protocols.Receive{From: ids[7], Msg: &Message{Body: &Message_Refuse{Refuse: &Refuse{Epoch: 3}}}})
			c.Handle(t0, protocols.TimerFired{Timer: protocols.Timer{Kind: timerCycle}})
			c.Handle(t0, protocols.Receive{From: ids[1], Msg: proto.Clone(m)})
			c.Handle(t0, protocols.Receive{From: ids[2], Msg: proto.Clone(m)})
			c.Handle(t0, protocols.TimerFired{Timer: protocols.Timer{Kind: timerTimeout}})
			for k := 0; k < 3; k++ {
				c.Handle(t0, protocols.TimerFired{Timer: protocols.Timer{Kind: timerCycle}})
			}
			e := c.Estimate()
			if math.IsNaN(e.Value) || math.IsInf(e.Value, 0) || math.IsNaN(e.Final) || math.IsInf(e.Final, 0) {
				t.Fatalf("%v: estimate %+v", fn, e)
			}
			if len(c.st.inst) > 8 || len(c.replies) > 4 || e.Cycle > e.Cycles {
				t.Fatalf("%v: state over its bounds: %d instances, %d replies, cycle %d", fn, len(c.st.inst), len(c.replies), e.Cycle)
			}
		}
	})
}
