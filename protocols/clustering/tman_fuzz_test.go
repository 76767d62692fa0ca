package clustering_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/clustering"
	"github.com/unsserv/go-unsserv/sim"
)

// FuzzTManMessage: whatever bytes arrive, decoding them and handing the message to a
// T-Man core (as a request, a reply or a goodbye, from a neighbour or a stranger, with
// a rank that gives NaN and infinities) never panics, and the view keeps its
// invariants: at most ViewSize entries, never the node itself, no duplicates, valid IDs.
func FuzzTManMessage(f *testing.F) {
	ids, _ := sim.PeerIDs(11, 6)
	seeds := []*clustering.TManMessage{
		msg(clustering.TManMessage_REQUEST, desc(ids[1], "m", 0), desc(ids[2], "", time.Second), desc(ids[3], "x", 0)),
		msg(clustering.TManMessage_REPLY, desc(ids[2], "", 0), desc(ids[0], "", 0), desc(ids[1], "", math.MaxInt64)),
		msg(clustering.TManMessage_LEAVE, desc(ids[1], "", 0)),
		{Kind: 7, Entries: []*clustering.TManDescriptor{{Id: []byte("junk"), Record: []byte("not a record")}}},
	}
	for _, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	rank := func(n clustering.Node) float64 {
		switch {
		case len(n.Meta) > 0 && n.Meta[0]%3 == 0:
			return math.NaN()
		case len(n.Meta) > 0 && n.Meta[0]%3 == 1:
			return math.Inf(-1)
		}
		return float64(len(n.ID) + len(n.Meta))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(clustering.TManMessage)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		_ = m.Descriptors()
		_ = clustering.TManKind(m)
		cfg := clustering.TManConfig{ViewSize: 4, MessageSize: 3, Interval: time.Second}
		c, err := clustering.NewTMan(ids[0], cfg, rank, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatal(err)
		}
		now := sim.Epoch
		c.Handle(now, protocols.Start{})
		c.Handle(now, protocols.Neighbours{Peers: []peer.ID{ids[1], ids[4]}})
		for k, from := range []peer.ID{ids[1], ids[2], ids[5]} {
			now = now.Add(time.Duration(k) * time.Second)
			c.Handle(now, protocols.Receive{From: from, Msg: proto.Clone(m)})
			c.Handle(now, protocols.TimerFired{Timer: protocols.Timer{Kind: 71}})
			check(t, c, ids[0], cfg.ViewSize)
		}
		c.Handle(now, protocols.PeerDown{Peer: ids[1]})
		check(t, c, ids[0], cfg.ViewSize)
		c.Handle(now, protocols.Leave{})
	})
}

func check(t *testing.T, c *clustering.TMan, self peer.ID, size int) {
	t.Helper()
	v := c.View()
	if len(v) > size {
		t.Fatalf("view of %d", len(v))
	}
	var seen []peer.ID
	for _, n := range v {
		if n.ID == self || slices.Contains(seen, n.ID) || n.ID.Validate() != nil {
			t.Fatalf("bad view %v", nodeIDs(v))
		}
		if _, err := peer.IDFromBytes([]byte(n.ID)); err != nil {
			t.Fatalf("unparsable ID in view: %v", err)
		}
		seen = append(seen, n.ID)
	}
}
