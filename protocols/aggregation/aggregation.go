// Package aggregation holds the aggregation core and its wire messages: push-pull
// anti-entropy averaging with epochs, after Jelasity, Montresor and Babaoglu,
// "Gossip-based aggregation in large dynamic networks", ACM Transactions on Computer
// Systems 23(3), 2005 (see PushPull).
//
// The core runs over a membership's neighbours: the driver passes them in as
// protocols.Neighbours at start and at every change. Every change of the node's estimate
// comes out as an Updated event; the application's new local value comes in as
// protocols.Call{Req: SetValue{...}} and counts from the next epoch on. Both profiles of
// UnsServ run this one algorithm.
package aggregation

import (
	"fmt"
	"strings"

	"github.com/unsserv/go-unsserv/protocols"
)

// Function is the aggregate a network computes. Every node of a network must compute
// the same one: a request for another is refused.
type Function uint8

const (
	// Mean is the average of the nodes' values (the zero value).
	Mean Function = iota
	// Min is the smallest value.
	Min
	// Max is the largest value.
	Max
	// Sum is the sum of the values: the mean times the network size (Count), both
	// computed in the same exchanges.
	Sum
	// Count is the number of nodes taking part, as the paper counts them: a few nodes
	// elected as leaders per epoch start an averaging instance each with 1 where every
	// other node has 0, so the instance converges to 1/N.
	Count
)

var functionNames = [...]string{Mean: "mean", Min: "min", Max: "max", Sum: "sum", Count: "count"}

func (f Function) String() string {
	if int(f) < len(functionNames) {
		return functionNames[f]
	}
	return fmt.Sprintf("Function(%d)", uint8(f))
}

// Valid reports whether f is one of the functions above.
func (f Function) Valid() bool { return int(f) < len(functionNames) }

// ParseFunction reads a function by its name: mean, min, max, sum or count.
func ParseFunction(s string) (Function, error) {
	for f, n := range functionNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return Function(f), nil
		}
	}
	return 0, fmt.Errorf("unknown aggregate function %q: use mean, min, max, sum or count", s)
}

// counts reports whether the function needs the counting instances.
func (f Function) counts() bool { return f == Sum || f == Count }

// Estimate is a node's view of the aggregate, with how settled it is.
type Estimate struct {
	// Value is the node's current estimate in Epoch. Right after an epoch starts it is
	// rough (the node's own value for mean, min and max); it converges as cycles pass.
	Value float64
	// Known is false while the node has nothing to estimate from: it takes part in no
	// epoch yet (it joined mid-epoch and waits for the next), or, for count and sum, no
	// counting instance has reached it yet in this epoch.
	Known bool
	// Epoch is the epoch the node takes part in; 0 while it waits for one.
	Epoch uint64
	// Cycle is the cycle of Epoch the node is in: 0 when the epoch starts, EpochCycles at
	// its end. A node that a message pulls into an epoch other nodes started before it
	// takes over their count (less one), so that all end the epoch together.
	Cycle int
	// Cycles is the length of an epoch in cycles.
	Cycles int
	// Final is the estimate the node ended its previous epoch with (the paper's output
	// of that epoch), valid when FinalEpoch is not 0.
	Final float64
	// FinalEpoch is the epoch Final belongs to; 0 if the node completed none.
	FinalEpoch uint64
}

// Updated is emitted whenever the node's estimate changes: after every exchange it
// takes part in, and when an epoch starts or ends.
type Updated struct {
	protocols.Event
	Estimate Estimate
	Stats    Stats
}

// SetValue is the Call that changes the node's local value. It counts from the next
// epoch the node starts, as in the paper: the current epoch's mass is left as it is.
type SetValue struct {
	Value float64
}

// Kind names a wire message's kind for counters.
func Kind(m *Message) string {
	switch m.GetBody().(type) {
	case *Message_Request:
		if m.GetRequest().GetEpoch() == 0 {
			return "AGG_PROBE"
		}
		return "AGG_REQUEST"
	case *Message_Reply:
		return "AGG_REPLY"
	case *Message_Refuse:
		return "AGG_REFUSE"
	}
	return "AGG_UNKNOWN"
}
