package sampling_test

import (
	"math"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/sampling"
)

// A proposal from a node of degree dx to one of degree dy is accepted with probability
// min(1, dx/dy); a rejected one bounces back to the proposer, the step taken.
func TestMRWBAcceptance(t *testing.T) {
	ids := peers(6)
	y, _ := sampling.NewMRWB(ids[0], sampling.MRWBConfig{}, rng(5))
	step(y, protocols.Neighbours{Peers: ids[1:5]}) // degree 4
	for _, tc := range []struct {
		dx   uint32
		want float64
	}{{1, 0.25}, {2, 0.5}, {4, 1}, {9, 1}} {
		const n = 4000
		accepted := 0
		for k := 0; k < n; k++ {
			w := &sampling.Walk{Id: uint64(k + 1), Origin: origin(ids[5]), Ttl: 3, Degree: tc.dx, Path: [][]byte{[]byte(ids[1])}}
			to, ws := walks(step(y, protocols.Receive{From: ids[1], Msg: walkMsg(w)}))
			if len(ws) != 1 {
				t.Fatalf("proposal gave %d walk messages", len(ws))
			}
			if ws[0].Kind == sampling.Walk_BOUNCE {
				if to[0] != ids[1] || ws[0].Ttl != 3 || !pathIs(ws[0].Path, ids[1]) {
					t.Fatalf("bounce %v to %s", ws[0], to[0].ShortString())
				}
				continue
			}
			accepted++
			if ws[0].Ttl != 2 || ws[0].Degree != 4 || !pathIs(ws[0].Path, ids[1], ids[0]) {
				t.Fatalf("accepted walk moved on as %v", ws[0])
			}
		}
		got := float64(accepted) / n
		if math.Abs(got-tc.want) > 4*math.Sqrt(tc.want*(1-tc.want)/n)+1e-9 {
			t.Fatalf("degree %d -> 4: accepted %.3f, want %.3f", tc.dx, got, tc.want)
		}
	}
}

// At the proposer, a bounce puts the walk back: it proposes again (one step fewer), or
// with no step left, this node is the sample.
func TestMRWBBounceAtProposer(t *testing.T) {
	ids := peers(4)
	x, _ := sampling.NewMRWB(ids[1], sampling.MRWBConfig{}, rng(5))
	step(x, protocols.Neighbours{Peers: []peer.ID{ids[2], ids[3]}})
	b := &sampling.Walk{Id: 3, Origin: origin(ids[0]), Ttl: 2, Kind: sampling.Walk_BOUNCE, Path: [][]byte{[]byte(ids[0]), []byte(ids[1])}}
	_, ws := walks(step(x, protocols.Receive{From: ids[2], Msg: walkMsg(b)}))
	if len(ws) != 1 || ws[0].Kind != sampling.Walk_FORWARD || ws[0].Ttl != 1 || ws[0].Degree != 2 || !pathIs(ws[0].Path, ids[0], ids[1]) {
		t.Fatalf("after a bounce: %v", ws)
	}
	b = &sampling.Walk{Id: 4, Origin: origin(ids[0]), Ttl: 0, Kind: sampling.Walk_BOUNCE, Path: [][]byte{[]byte(ids[1])}}
	ss := sent(step(x, protocols.Receive{From: ids[2], Msg: walkMsg(b)}))
	if len(ss) != 1 || ss[0].To != ids[0] || ss[0].Msg.(*sampling.Message).GetResult().GetNode().PeerID() != ids[1] {
		t.Fatalf("a bounce with no step left must make the proposer the sample: %v", ss)
	}
}

// An isolated node refuses every proposal: it is not part of the graph.
func TestMRWBIsolatedRefuses(t *testing.T) {
	ids := peers(3)
	y, _ := sampling.NewMRWB(ids[0], sampling.MRWBConfig{}, rng(5))
	_, ws := walks(step(y, protocols.Receive{From: ids[1], Msg: walkMsg(&sampling.Walk{Id: 1, Origin: origin(ids[2]), Ttl: 4, Degree: 50})}))
	if len(ws) != 1 || ws[0].Kind != sampling.Walk_BOUNCE {
		t.Fatalf("%v", ws)
	}
}
