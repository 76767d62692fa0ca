package search_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/search"
	"github.com/unsserv/go-unsserv/sim"
)

var t0 = sim.Epoch

func peers(n int) []peer.ID {
	ids, _ := sim.PeerIDs(99, n)
	return ids
}

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// step feeds one input and returns the outputs (copied: the core reuses its slice).
func step(c protocols.Core, in protocols.Input) []protocols.Output {
	return slices.Clone(c.Handle(t0, in))
}

func sent(outs []protocols.Output) []protocols.Send {
	var ss []protocols.Send
	for _, o := range outs {
		if s, ok := o.(protocols.Send); ok {
			ss = append(ss, s)
		}
	}
	return ss
}

// kinds lists the messages of outs as "<destination index>:<kind>".
func kinds(ids []peer.ID, outs []protocols.Output) []string {
	var ks []string
	for _, s := range sent(outs) {
		ks = append(ks, name(ids, s.To)+":"+s.Msg.(*search.Message).Kind())
	}
	return ks
}

func name(ids []peer.ID, p peer.ID) string {
	return string(rune('A' + slices.Index(ids, p)))
}

func events[T any](outs []protocols.Output) []T {
	var evs []T
	for _, o := range outs {
		if e, ok := o.(T); ok {
			evs = append(evs, e)
		}
	}
	return evs
}

func query(m protocols.Send) *search.Query { return m.Msg.(*search.Message).GetQuery() }

func recv(from peer.ID, body any) protocols.Receive {
	m := &search.Message{}
	switch b := body.(type) {
	case *search.Query:
		m.Body = &search.Message_Query{Query: b}
	case *search.Hit:
		m.Body = &search.Message_Hit{Hit: b}
	case *search.Check:
		m.Body = &search.Message_Check{Check: b}
	case *search.CheckReply:
		m.Body = &search.Message_CheckReply{CheckReply: b}
	case *search.Exhausted:
		m.Body = &search.Message_Exhausted{Exhausted: b}
	case *search.Filter:
		m.Body = &search.Message_Filter{Filter: b}
	}
	return protocols.Receive{From: from, Msg: m}
}

func origin(id peer.ID) *search.Peer { return &search.Peer{Id: []byte(id), Record: []byte("rec")} }

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func eqs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
	}
}

func timers(outs []protocols.Output) []protocols.SetTimer { return events[protocols.SetTimer](outs) }
