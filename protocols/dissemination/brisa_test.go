package dissemination_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
	"github.com/unsserv/go-unsserv/protocols/dissemination"
	"github.com/unsserv/go-unsserv/sim"
)

// ---- transcript tests: one core, inputs in, exact outputs out ----

// brisaScene drives one Brisa core with named peers and renders its outputs as text.
type brisaScene struct {
	t     *testing.T
	core  *dissemination.Brisa
	ids   map[string]peer.ID
	names map[peer.ID]string
	now   time.Time
}

func newBrisaScene(t *testing.T, cfg dissemination.BrisaConfig) *brisaScene {
	t.Helper()
	ids, err := sim.PeerIDs(11, 6)
	if err != nil {
		t.Fatal(err)
	}
	s := &brisaScene{t: t, ids: map[string]peer.ID{}, names: map[peer.ID]string{}, now: sim.Epoch}
	for i, n := range []string{"self", "A", "B", "C", "D", "O"} {
		s.ids[n] = ids[i]
		s.names[ids[i]] = n
	}
	s.core, err = dissemination.NewBrisa(s.ids["self"], cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *brisaScene) p(names ...string) []peer.ID {
	var out []peer.ID
	for _, n := range names {
		out = append(out, s.ids[n])
	}
	return out
}

func (s *brisaScene) b(origin string, seq uint64) *dissemination.Broadcast {
	return &dissemination.Broadcast{Origin: []byte(s.ids[origin]), Seq: seq, Payload: []byte("x")}
}

// data and replay carry broadcasts of a dense stream: seq's predecessor is seq - 1.
func (s *brisaScene) data(origin string, seq uint64, hops uint32) *dissemination.BrisaMessage {
	return &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: s.b(origin, seq), Hops: hops, Prev: seq - 1, HasPrev: seq > 1}}}
}

func (s *brisaScene) replay(origin string, seq uint64, hops uint32) *dissemination.BrisaMessage {
	return &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Replay{Replay: &dissemination.BrisaReplay{Broadcast: s.b(origin, seq), Hops: hops, Prev: seq - 1, HasPrev: seq > 1}}}
}

func (s *brisaScene) ctl(body string, origin string) *dissemination.BrisaMessage {
	o := []byte(s.ids[origin])
	switch body {
	case "DEACTIVATE":
		return &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Deactivate{Deactivate: &dissemination.BrisaDeactivate{Origin: o}}}
	case "REACTIVATE":
		return &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Reactivate{Reactivate: &dissemination.BrisaReactivate{Origin: o}}}
	}
	panic(body)
}

func (s *brisaScene) name(b []byte) string {
	if n, ok := s.names[peer.ID(b)]; ok {
		return n
	}
	return fmt.Sprintf("?%x", b)
}

func (s *brisaScene) render(m proto.Message) string {
	bm := m.(*dissemination.BrisaMessage)
	switch {
	case bm.GetData() != nil:
		b := bm.GetData().GetBroadcast()
		return fmt.Sprintf("DATA %s#%d hops=%d", s.name(b.GetOrigin()), b.GetSeq(), bm.GetData().GetHops())
	case bm.GetReplay() != nil:
		b := bm.GetReplay().GetBroadcast()
		return fmt.Sprintf("REPLAY %s#%d hops=%d", s.name(b.GetOrigin()), b.GetSeq(), bm.GetReplay().GetHops())
	case bm.GetDeactivate() != nil:
		return "DEACTIVATE " + s.name(bm.GetDeactivate().GetOrigin())
	case bm.GetReactivate() != nil:
		r := bm.GetReactivate()
		line := "REACTIVATE " + s.name(r.GetOrigin())
		if r.GetHasLast() {
			line += fmt.Sprintf(" last=%d", r.GetLast())
		}
		if r.GetDetached() {
			line += " detached"
		}
		return line
	case bm.GetPull() != nil:
		return fmt.Sprintf("PULL %s %v", s.name(bm.GetPull().GetOrigin()), bm.GetPull().GetSeqs())
	}
	return bm.Kind()
}

func (s *brisaScene) lines(out []protocols.Output) []string {
	var ls []string
	timer := func(tm protocols.Timer) string {
		k := map[uint8]string{40: "repair", 41: "pull"}[tm.Kind]
		return k + " " + s.name([]byte(tm.Key))
	}
	for _, o := range out {
		switch v := o.(type) {
		case protocols.Send:
			ls = append(ls, s.names[v.To]+" <- "+s.render(v.Msg))
		case protocols.SetTimer:
			ls = append(ls, fmt.Sprintf("set %s %v", timer(v.Timer), v.After))
		case protocols.CancelTimer:
			ls = append(ls, "cancel "+timer(v.Timer))
		case dissemination.Delivered:
			if !slices.Equal(v.ID, dissemination.BroadcastID(v.Broadcast)) {
				ls = append(ls, "BAD ID")
			}
			ls = append(ls, fmt.Sprintf("deliver %s#%d round=%d", s.name(v.Broadcast.GetOrigin()), v.Broadcast.GetSeq(), v.Round))
		default:
			ls = append(ls, fmt.Sprintf("%T", o))
		}
	}
	return ls
}

// step feeds one input and checks the exact outputs.
func (s *brisaScene) step(in protocols.Input, want ...string) {
	s.t.Helper()
	got := s.lines(s.core.Handle(s.now, in))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		s.t.Fatalf("after %T:\n got:\n  %s\nwant:\n  %s", in, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// pullTimer lets d pass and fires the pull timer of origin.
func (s *brisaScene) pullTimer(d time.Duration, origin string) protocols.TimerFired {
	s.now = s.now.Add(d)
	return protocols.TimerFired{Timer: protocols.Timer{Kind: 41, Key: string(s.ids[origin])}}
}

func (s *brisaScene) from(name string, m proto.Message) protocols.Receive {
	return protocols.Receive{From: s.ids[name], Msg: m}
}

func (s *brisaScene) parents(origin string) string {
	var ns []string
	for _, q := range s.core.Parents(s.ids[origin]) {
		ns = append(ns, s.names[q])
	}
	return strings.Join(ns, ",")
}

func TestBrisaConfig(t *testing.T) {
	for _, c := range []struct {
		cfg   dissemination.BrisaConfig
		field string
	}{
		{dissemination.BrisaConfig{Mode: 7}, "BrisaConfig.Mode"},
		{dissemination.BrisaConfig{Strategy: 9}, "BrisaConfig.Strategy"},
		{dissemination.BrisaConfig{Parents: 2}, "BrisaConfig.Parents"},
		{dissemination.BrisaConfig{Mode: dissemination.BrisaDAG, Parents: -1}, "BrisaConfig.Parents"},
		{dissemination.BrisaConfig{RepairTimeout: -1}, "BrisaConfig.RepairTimeout"},
		{dissemination.BrisaConfig{PullRetries: -1}, "BrisaConfig.PullRetries"},
		{dissemination.BrisaConfig{MaxSources: -3}, "BrisaConfig.MaxSources"},
		{dissemination.BrisaConfig{Window: 8}, "BrisaConfig.Cache"},
		{dissemination.BrisaConfig{Window: 100, Cache: 10}, "BrisaConfig.Missing"},
	} {
		var ce *protocols.ConfigError
		if err := c.cfg.Validate(); !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%+v: got %v, want an error naming %s", c.cfg, err, c.field)
		}
	}
	d := dissemination.BrisaConfig{}.WithDefaults()
	if d.Parents != 1 || d.RepairTimeout != time.Second || d.MaxSources != 32 || d.Cache != 256 || d.Window != 4096 {
		t.Fatalf("defaults: %+v", d)
	}
	if (dissemination.BrisaConfig{Mode: dissemination.BrisaDAG}).WithDefaults().Parents != 2 {
		t.Fatal("DAG default parents")
	}
	ids, _ := sim.PeerIDs(1, 1)
	if _, err := dissemination.NewBrisa(ids[0], dissemination.BrisaConfig{}, nil); err == nil {
		t.Fatal("nil rng accepted")
	}
	if _, err := dissemination.NewBrisa("", dissemination.BrisaConfig{}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("empty self accepted")
	}
}

// The first flood builds the tree: the first sender is the parent, every other sender
// is told to stop; a node that loses its parent reactivates its links, takes the first
// neighbour to push a fresh broadcast, and pulls what it missed.
func TestBrisaTranscriptFloodDeactivateRepair(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{})
	s.step(protocols.Neighbours{Peers: s.p("A", "B", "C")})
	// O's broadcast #1 arrives first from A (A is one hop below O).
	s.step(s.from("A", s.data("O", 1, 2)),
		"deliver O#1 round=2",
		"B <- DATA O#1 hops=3",
		"C <- DATA O#1 hops=3")
	if s.parents("O") != "A" || s.core.Level(s.ids["O"]) != 2 {
		t.Fatalf("parents %q level %d", s.parents("O"), s.core.Level(s.ids["O"]))
	}
	// A duplicate from B: that link is redundant.
	s.step(s.from("B", s.data("O", 1, 2)), "B <- DEACTIVATE O")
	// C received our copy as a duplicate and tells us to stop.
	s.step(s.from("C", s.ctl("DEACTIVATE", "O")))
	s.step(s.from("A", s.data("O", 2, 2)),
		"deliver O#2 round=2",
		"B <- DATA O#2 hops=3")
	// A leaves the overlay: repair. Every link is reactivated, with the last seq held.
	s.step(protocols.Neighbours{Peers: s.p("B", "C")},
		"B <- REACTIVATE O last=2",
		"C <- REACTIVATE O last=2",
		"set repair O 1s")
	// C is first to push a fresh broadcast: it becomes the parent (it cannot be a
	// descendant, which would have had nothing new). #3 is missing: chased after
	// PullTimeout.
	s.step(s.from("C", s.data("O", 4, 4)),
		"deliver O#4 round=4",
		"set pull O 500ms",
		"cancel repair O",
		"B <- DATA O#4 hops=5")
	if s.parents("O") != "C" || s.core.Level(s.ids["O"]) != 4 {
		t.Fatalf("parents %q level %d", s.parents("O"), s.core.Level(s.ids["O"]))
	}
	s.step(s.from("B", s.data("O", 4, 2)), "B <- DEACTIVATE O")
	s.step(s.pullTimer(500*time.Millisecond, "O"),
		"C <- PULL O [3]",
		"set pull O 1s")
	// The replay is delivered and passed on as a replay.
	s.step(s.from("C", s.replay("O", 3, 4)), "deliver O#3 round=4", "B <- REPLAY O#3 hops=5")
	s.step(s.pullTimer(time.Second, "O"))
	// Duplicates of a replay say nothing about links.
	s.step(s.from("B", s.replay("O", 3, 2)))
	// B asks for a replay of what it lacks beyond #2; then for #1 explicitly.
	s.step(s.from("B", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Reactivate{Reactivate: &dissemination.BrisaReactivate{Origin: []byte(s.ids["O"]), Last: 2, HasLast: true}}}),
		"B <- REPLAY O#3 hops=5",
		"B <- REPLAY O#4 hops=5")
	s.step(s.from("B", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pull{Pull: &dissemination.BrisaPull{Origin: []byte(s.ids["O"]), Seqs: []uint64{1, 99}}}}),
		"B <- REPLAY O#1 hops=3")
	s.step(s.from("C", s.data("O", 5, 4)),
		"deliver O#5 round=4",
		"B <- DATA O#5 hops=5")
	s.step(protocols.Leave{})
	s.step(s.from("C", s.data("O", 6, 4)))
}

// The source pushes to every neighbour that has not deactivated it, never delivers its
// own broadcast, and tells whoever sends it back to stop.
func TestBrisaTranscriptSource(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{})
	s.step(protocols.Neighbours{Peers: s.p("A", "B", "self", "A")})
	pub := func(seq uint64) protocols.Call {
		return protocols.Call{Req: dissemination.Publish{Broadcast: s.b("self", seq)}}
	}
	s.step(pub(1), "A <- DATA self#1 hops=1", "B <- DATA self#1 hops=1")
	s.step(pub(1)) // republished: nothing
	s.step(s.from("B", s.ctl("DEACTIVATE", "self")))
	out := s.core.Handle(s.now, pub(2))
	if d := out[0].(protocols.Send).Msg.(*dissemination.BrisaMessage).GetData(); len(out) != 1 || d.GetPrev() != 1 || !d.GetHasPrev() {
		t.Fatalf("the source's push of #2 should name #1: %v", s.lines(out))
	}
	s.step(s.from("A", s.data("self", 2, 3)), "A <- DEACTIVATE self")
	s.step(s.from("B", s.ctl("REACTIVATE", "self")))
	s.step(pub(3), "A <- DATA self#3 hops=1", "B <- DATA self#3 hops=1")
	// Someone else's broadcast is no Publish of ours.
	s.step(protocols.Call{Req: dissemination.Publish{Broadcast: s.b("O", 1)}})
	s.step(protocols.Call{Req: dissemination.Publish{}})
	s.step(protocols.Call{Req: "nonsense"})
}

// A node without parent ignores stale pushes, asks again after RepairTimeout (now
// detached, so that its subtree looks elsewhere), and a child told so by its parent
// repairs too.
func TestBrisaTranscriptDetachedRepair(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{RepairTimeout: 2 * time.Second})
	s.step(protocols.Neighbours{Peers: s.p("A", "B")})
	s.step(s.from("A", s.data("O", 1, 1)), "deliver O#1 round=1", "B <- DATA O#1 hops=2")
	s.step(protocols.PeerDown{Peer: s.ids["A"]}, "B <- REACTIVATE O last=1", "set repair O 2s")
	// B pushes something we have: no parent yet, and the link stays open.
	s.step(s.from("B", s.data("O", 1, 2)))
	s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: string(s.ids["O"])}},
		"B <- REACTIVATE O last=1 detached", "set repair O 2s")
	s.step(s.from("B", s.data("O", 2, 5)), "deliver O#2 round=5", "cancel repair O")
	if s.parents("O") != "B" || s.core.Level(s.ids["O"]) != 5 {
		t.Fatalf("parents %q level %d", s.parents("O"), s.core.Level(s.ids["O"]))
	}
	// A timer of a repair already over does nothing.
	s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: string(s.ids["O"])}})
	// Our parent B has found no parent of its own: we let go of it and repair.
	s.step(s.from("B", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Reactivate{Reactivate: &dissemination.BrisaReactivate{Origin: []byte(s.ids["O"]), Last: 1, HasLast: true, Detached: true}}}),
		"B <- REACTIVATE O last=2", "set repair O 2s", "B <- REPLAY O#2 hops=6")
	if s.parents("O") != "" {
		t.Fatalf("parents %q", s.parents("O"))
	}
	// RepairRetries (3) rounds, then it waits quietly.
	for i := 0; i < 3; i++ {
		s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: string(s.ids["O"])}},
			"B <- REACTIVATE O last=2 detached", "set repair O 2s")
	}
	s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: string(s.ids["O"])}})
}

// DAG mode keeps up to Parents parents, never one deeper than itself, and on losing one
// reactivates only the links it had deactivated.
func TestBrisaTranscriptDAG(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{Mode: dissemination.BrisaDAG})
	s.step(protocols.Neighbours{Peers: s.p("A", "B", "C", "D")})
	s.step(s.from("A", s.data("O", 1, 2)),
		"deliver O#1 round=2", "B <- DATA O#1 hops=3", "C <- DATA O#1 hops=3", "D <- DATA O#1 hops=3")
	s.step(s.from("C", s.data("O", 1, 3)), "C <- DEACTIVATE O") // deeper than us
	s.step(s.from("B", s.data("O", 1, 2)))                      // second parent
	s.step(s.from("D", s.data("O", 1, 1)), "D <- DEACTIVATE O") // parents full
	if s.parents("O") != "A,B" {
		t.Fatalf("parents %q", s.parents("O"))
	}
	s.step(s.from("B", s.data("O", 2, 2)), "deliver O#2 round=2", "A <- DATA O#2 hops=3", "C <- DATA O#2 hops=3", "D <- DATA O#2 hops=3")
	s.step(s.from("A", s.data("O", 2, 2)))
	s.step(protocols.PeerDown{Peer: s.ids["B"]}, "C <- REACTIVATE O last=2", "D <- REACTIVATE O last=2")
	s.step(s.from("D", s.data("O", 3, 1)), "deliver O#3 round=1", "A <- DATA O#3 hops=3", "C <- DATA O#3 hops=3")
	if s.parents("O") != "A,D" {
		t.Fatalf("parents %q", s.parents("O"))
	}
	s.step(protocols.PeerDown{Peer: s.ids["A"]})
	// With no parent left, children are told at once to let go (they have others).
	s.step(protocols.PeerDown{Peer: s.ids["D"]}, "C <- REACTIVATE O last=3 detached", "set repair O 1s")
}

// Delay-aware: round-trip times measured with PING/PONG decide between parents.
func TestBrisaTranscriptDelayAware(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{Strategy: dissemination.BrisaDelayAware})
	out := s.core.Handle(s.now, protocols.Neighbours{Peers: s.p("A", "B")})
	nonces := map[peer.ID]uint64{}
	for _, o := range out {
		snd := o.(protocols.Send)
		nonces[snd.To] = snd.Msg.(*dissemination.BrisaMessage).GetPing().GetNonce()
	}
	if len(nonces) != 2 {
		t.Fatalf("pings: %v", s.lines(out))
	}
	pong := func(n string, nonce uint64) protocols.Receive {
		return s.from(n, &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pong{Pong: &dissemination.BrisaPong{Nonce: nonce}}})
	}
	s.now = s.now.Add(10 * time.Millisecond)
	s.step(pong("B", nonces[s.ids["B"]]+1)) // wrong nonce: ignored
	s.step(pong("B", nonces[s.ids["B"]]))
	s.now = s.now.Add(70 * time.Millisecond)
	s.step(pong("A", nonces[s.ids["A"]]))
	// A (80 ms) delivers first and becomes the parent; B (10 ms) at the same level
	// replaces it when its copy arrives.
	s.step(s.from("A", s.data("O", 1, 2)), "deliver O#1 round=2", "B <- DATA O#1 hops=3")
	s.step(s.from("B", s.data("O", 1, 2)), "A <- DEACTIVATE O")
	if s.parents("O") != "B" {
		t.Fatalf("parents %q", s.parents("O"))
	}
	// A slower copy from A, still in flight, changes nothing.
	s.step(s.from("A", s.data("O", 2, 2)), "deliver O#2 round=2", "A <- DEACTIVATE O", "B <- REPLAY O#2 hops=3")
	// PING from a neighbour is answered; from a stranger it is not.
	s.step(s.from("A", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Ping{Ping: &dissemination.BrisaPing{Nonce: 7}}}), "A <- PONG")
	s.step(s.from("D", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Ping{Ping: &dissemination.BrisaPing{Nonce: 7}}}))
}

// A neighbour we had told to stop that qualifies later (its push left before our
// DEACTIVATE arrived, from a higher level) becomes a parent and is told to push again.
func TestBrisaTranscriptRaceReactivates(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{Mode: dissemination.BrisaDAG})
	s.step(protocols.Neighbours{Peers: s.p("A", "B")})
	s.step(s.from("A", s.data("O", 1, 3)), "deliver O#1 round=3", "B <- DATA O#1 hops=4")
	s.step(s.from("B", s.data("O", 1, 4)), "B <- DEACTIVATE O") // deeper than us
	s.step(s.from("B", s.data("O", 2, 2)), "deliver O#2 round=2", "B <- REACTIVATE O", "A <- DATA O#2 hops=4")
	if s.parents("O") != "A,B" {
		t.Fatalf("parents %q", s.parents("O"))
	}
	// A stranger's pushes are delivered, and it is told to stop.
	s.step(s.from("D", s.data("O", 3, 2)), "deliver O#3 round=2", "D <- DEACTIVATE O", "A <- REPLAY O#3 hops=4", "B <- REPLAY O#3 hops=4")
}

// Each push names the origin's previous broadcast, so a node chases exactly what it
// missed, even when the origin's sequence numbers are sparse, and a node that joins a
// stream late fetches one predecessor, not the history.
func TestBrisaTranscriptSparseStream(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{})
	s.step(protocols.Neighbours{Peers: s.p("A", "B")})
	push := func(seq, prev uint64, replay bool) *dissemination.BrisaMessage {
		if replay {
			return &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Replay{Replay: &dissemination.BrisaReplay{Broadcast: s.b("O", seq), Hops: 1, Prev: prev, HasPrev: true}}}
		}
		return &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: s.b("O", seq), Hops: 1, Prev: prev, HasPrev: true}}}
	}
	out := s.core.Handle(s.now, s.from("A", push(10, 9, false)))
	if got := strings.Join(s.lines(out), "; "); got != "deliver O#10 round=1; set pull O 500ms; B <- DATA O#10 hops=2" {
		t.Fatalf("got %s", got)
	}
	if d := out[2].(protocols.Send).Msg.(*dissemination.BrisaMessage).GetData(); d.GetPrev() != 9 || !d.GetHasPrev() {
		t.Fatalf("prev not passed on: %v", d)
	}
	// #14 follows #12: only #12 is chased, not #11 or #13.
	s.step(s.from("A", push(14, 12, false)), "deliver O#14 round=1", "B <- DATA O#14 hops=2")
	s.step(s.pullTimer(500*time.Millisecond, "O"), "A <- PULL O [9 12]", "set pull O 1s")
	// #12 names #11: chased in turn.
	s.step(s.from("A", push(12, 11, true)), "deliver O#12 round=1", "set pull O 500ms", "B <- REPLAY O#12 hops=2")
	// #9 names #8, older than the first broadcast seen: not chased.
	s.step(s.from("A", push(9, 8, true)), "deliver O#9 round=1", "B <- REPLAY O#9 hops=2")
	// The second pull goes to another neighbour: another branch may hold it.
	s.step(s.pullTimer(500*time.Millisecond, "O"), "B <- PULL O [11]", "set pull O 1s")
}

// Nonsense never panics and changes nothing.
func TestBrisaIgnoresNonsense(t *testing.T) {
	s := newBrisaScene(t, dissemination.BrisaConfig{})
	s.step(protocols.Neighbours{Peers: s.p("A")})
	long := &dissemination.Broadcast{Origin: make([]byte, 1000), Seq: 1}
	for _, m := range []proto.Message{
		nil,
		(*dissemination.BrisaMessage)(nil),
		&dissemination.BrisaMessage{},
		&dissemination.Message{},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{}}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: &dissemination.Broadcast{}}}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: long}}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Replay{}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Deactivate{}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Reactivate{}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Reactivate{Reactivate: &dissemination.BrisaReactivate{Origin: []byte("zz"), HasLast: true}}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pull{Pull: &dissemination.BrisaPull{Origin: []byte("zz"), Seqs: []uint64{1, 2}}}},
		&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pong{}},
	} {
		s.step(s.from("A", m))
	}
	s.step(protocols.Receive{From: s.ids["self"], Msg: s.data("O", 1, 1)})
	s.step(protocols.Receive{From: "", Msg: s.data("O", 1, 1)})
	s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: "nobody"}})
	s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 41, Key: "nobody"}})
	s.step(protocols.TimerFired{Timer: protocols.Timer{Kind: 99}})
	s.step(protocols.PeerDown{Peer: s.ids["D"]})
	s.step(protocols.Start{})
	s.step(protocols.SelfUpdated{})
	// Extreme hop counts are clamped, not overflowed.
	s.step(s.from("A", s.data("O", 1, math.MaxUint32)), fmt.Sprintf("deliver O#1 round=%d", uint32(math.MaxUint32/2)))
	if s.core.Sources() != 1 {
		t.Fatalf("%d sources tracked, want 1", s.core.Sources())
	}
}

// Every per-node state is bounded by its config field.
func TestBrisaBoundedState(t *testing.T) {
	cfg := dissemination.BrisaConfig{MaxSources: 4, Window: 64, Cache: 5, Missing: 8}
	s := newBrisaScene(t, cfg)
	s.step(protocols.Neighbours{Peers: s.p("A")})
	ids, _ := sim.PeerIDs(99, 50)
	for _, o := range ids {
		b := &dissemination.Broadcast{Origin: []byte(o), Seq: 1}
		s.core.Handle(s.now, s.from("A", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: b, Hops: 1}}}))
		if s.core.Sources() > 4 {
			t.Fatalf("%d sources tracked, bound 4", s.core.Sources())
		}
	}
	// A gap of 1000: at most Missing seqs are chased.
	s.step(s.from("A", s.data("O", 1, 1)), "deliver O#1 round=1")
	s.step(s.from("A", s.data("O", 1001, 1)), "deliver O#1001 round=1", "set pull O 500ms")
	out := s.core.Handle(s.now, s.pullTimer(500*time.Millisecond, "O"))
	pull := out[0].(protocols.Send).Msg.(*dissemination.BrisaMessage).GetPull().GetSeqs()
	if len(pull) != 8 || pull[0] != 993 {
		t.Fatalf("pulled %v, want the 8 seqs below 1001", pull)
	}
	// Seqs below the window count as seen: #900 is not delivered.
	s.step(s.from("A", s.replay("O", 900, 1)))
	// Only Cache broadcasts are kept for replays: #1, #1001 and 4 more -> #1 is gone.
	for seq := uint64(995); seq < 999; seq++ {
		s.core.Handle(s.now, s.from("A", s.replay("O", seq, 1)))
	}
	s.step(s.from("A", &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pull{Pull: &dissemination.BrisaPull{Origin: []byte(s.ids["O"]), Seqs: []uint64{1, 995, 1001}}}}),
		"A <- REPLAY O#995 hops=2", "A <- REPLAY O#1001 hops=2")
	// After PullRetries (6) PULLs per seq, backing off, the chase gives up.
	for _, backoff := range []string{"2s", "4s", "8s", "8s", "8s"} {
		s.step(s.pullTimer(8*time.Second, "O"), "A <- PULL O [993 994 999 1000]", "set pull O "+backoff)
	}
	s.step(s.pullTimer(8*time.Second, "O"))
}

// ---- simulator tests ----

// brisaNet is the shared overlay (ring plus chords) with Brisa cores, built like
// newOverlayNet but with a loss rate, and publishing with per-origin sequence numbers.
type brisaNet struct {
	*overlayNet
	seqs  map[peer.ID]uint64
	refs  map[string]broadcastRef // id -> origin, seq
	round map[string]uint32       // max Round seen per broadcast
}

type broadcastRef struct {
	origin peer.ID
	seq    uint64
}

func newBrisaNet(t testing.TB, seed uint64, n int, loss float64, cfg dissemination.BrisaConfig) *brisaNet {
	t.Helper()
	bn := &brisaNet{seqs: map[peer.ID]uint64{}, refs: map[string]broadcastRef{}, round: map[string]uint32{}}
	bn.overlayNet = newOverlayNetWith(t, seed, n, func() proto.Message { return new(dissemination.BrisaMessage) },
		func(_ int, id peer.ID, rng *rand.Rand) (protocols.Core, error) {
			return dissemination.NewBrisa(id, cfg, rng)
		},
		func(c *sim.Config) {
			c.Loss = loss
			count := c.OnEvent
			c.OnEvent = func(now time.Time, node peer.ID, ev protocols.Output) {
				count(now, node, ev)
				if d, ok := ev.(dissemination.Delivered); ok {
					bn.round[string(d.ID)] = max(bn.round[string(d.ID)], d.Round)
				}
			}
		})
	return bn
}

// publish broadcasts the next of origin's stream (seqs 1, 2, 3... per origin).
func (n *brisaNet) publish(origin peer.ID) []byte {
	n.seqs[origin]++
	b := &dissemination.Broadcast{Origin: []byte(origin), Seq: n.seqs[origin], Payload: []byte("same payload")}
	_ = n.s.Input(origin, protocols.Call{Req: dissemination.Publish{Broadcast: b}})
	id := dissemination.BroadcastID(b)
	n.refs[string(id)] = broadcastRef{origin, b.Seq}
	return id
}

func (n *brisaNet) core(id peer.ID) *dissemination.Brisa { return n.s.Core(id).(*dissemination.Brisa) }

func (n *brisaNet) payloads() uint64 {
	st := n.s.Stats()
	return st.ByKind["DATA"].Msgs + st.ByKind["REPLAY"].Msgs
}

// crashExcept is the harness's crash, sparing the nodes in keep (the source): a
// fraction of all nodes crash and the survivors get new neighbour sets (their surviving
// links plus a ring over the survivors).
func (n *brisaNet) crashExcept(rng *rand.Rand, fraction float64, keep ...peer.ID) []peer.ID {
	dead := map[peer.ID]bool{}
	want := int(fraction * float64(len(n.ids)))
	for _, i := range rng.Perm(len(n.ids)) {
		if len(dead) == want {
			break
		}
		if !slices.Contains(keep, n.ids[i]) {
			dead[n.ids[i]] = true
			n.s.Crash(n.ids[i])
		}
	}
	var live []peer.ID
	for _, id := range n.ids {
		if !dead[id] {
			live = append(live, id)
		}
	}
	for i, id := range live {
		var ns []peer.ID
		for _, q := range n.adj[id] {
			if !dead[q] {
				ns = append(ns, q)
			}
		}
		for _, q := range []peer.ID{live[(i+1)%len(live)], live[(i+len(live)-1)%len(live)]} {
			if !slices.Contains(ns, q) {
				ns = append(ns, q)
			}
		}
		n.adj[id] = ns
		_ = n.s.Input(id, protocols.Neighbours{Peers: ns})
	}
	return live
}

// checkStructure: over the live nodes, every node but the source has between 1 and
// maxParents parents, each a live neighbour, and the parent graph has no cycle (so every
// node reaches the source). In a tree, each parent is also one level above its child.
func (n *brisaNet) checkStructure(source peer.ID, maxParents int) error {
	const (
		visiting = 1
		done     = 2
	)
	state := map[peer.ID]int{}
	var visit func(id peer.ID) error
	visit = func(id peer.ID) error {
		if id == source || state[id] == done {
			return nil
		}
		if state[id] == visiting {
			return fmt.Errorf("cycle through %s", id.ShortString())
		}
		state[id] = visiting
		c := n.core(id)
		ps := c.Parents(source)
		if len(ps) < 1 || len(ps) > maxParents {
			return fmt.Errorf("%s has %d parents", id.ShortString(), len(ps))
		}
		for _, p := range ps {
			if !n.s.Alive(p) || !slices.Contains(n.adj[id], p) {
				return fmt.Errorf("%s has a parent that is dead or no neighbour", id.ShortString())
			}
			if maxParents == 1 && p != source && n.core(p).Level(source)+1 != c.Level(source) {
				return fmt.Errorf("%s at level %d has a parent at level %d", id.ShortString(), c.Level(source), n.core(p).Level(source))
			}
			if err := visit(p); err != nil {
				return err
			}
		}
		state[id] = done
		return nil
	}
	for _, id := range n.ids {
		if n.s.Alive(id) {
			if err := visit(id); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestBrisaTreeEmergesAndDeliversOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  dissemination.BrisaConfig
	}{
		{"first-come", dissemination.BrisaConfig{}},
		{"delay-aware", dissemination.BrisaConfig{Strategy: dissemination.BrisaDelayAware}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const n = 200
			net := newBrisaNet(t, 1, n, 0, c.cfg)
			source := net.ids[17]
			var rmr []float64
			for k := 0; k < 20; k++ {
				before := net.payloads()
				id := net.publish(source)
				net.s.RunFor(2 * time.Second)
				if err := net.check(id, source); err != nil {
					t.Fatalf("broadcast %d: %v", k, err)
				}
				rmr = append(rmr, float64(net.payloads()-before)/float64(n-1)-1)
			}
			t.Logf("RMR per broadcast: first %.2f, second %.3f, third %.3f, 20th %.3f; last delivery hop %d",
				rmr[0], rmr[1], rmr[2], rmr[19], net.round[string(dissemination.ID([]byte(source), 20, []byte("same payload")))])
			if rmr[0] < 1 {
				t.Fatalf("the first broadcast did not flood (RMR %.2f)", rmr[0])
			}
			// First-come settles after one broadcast; delay-aware swaps parents during
			// the first and then sees one duplicate per swap on the old parent's link.
			for k := 3; k < 20; k++ {
				if rmr[k] != 0 {
					t.Fatalf("broadcast %d: RMR %.3f, want 0 on a settled tree", k, rmr[k])
				}
			}
			if err := net.checkStructure(source, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBrisaDAGKeepsTwoParents(t *testing.T) {
	const n = 200
	net := newBrisaNet(t, 2, n, 0, dissemination.BrisaConfig{Mode: dissemination.BrisaDAG, Parents: 2})
	source := net.ids[3]
	var last float64
	for k := 0; k < 10; k++ {
		before := net.payloads()
		id := net.publish(source)
		net.s.RunFor(2 * time.Second)
		if err := net.check(id, source); err != nil {
			t.Fatalf("broadcast %d: %v", k, err)
		}
		last = float64(net.payloads()-before)/float64(n-1) - 1
	}
	if err := net.checkStructure(source, 2); err != nil {
		t.Fatal(err)
	}
	two := 0
	for _, id := range net.ids {
		if len(net.core(id).Parents(source)) == 2 {
			two++
		}
	}
	t.Logf("DAG: %d of %d nodes have two parents; settled RMR %.3f", two, n-1, last)
	if two < n/2 || last > 1 || last < 0.5 {
		t.Fatalf("DAG: %d nodes with two parents, RMR %.3f", two, last)
	}
}

// Headline: 20% of the nodes crash while the source keeps streaming; the membership
// gives the survivors new neighbours. Every survivor still gets every broadcast exactly
// once (none lost across the repair), and the tree settles again.
func TestBrisaRepairsAfterCrashesWithoutLoss(t *testing.T) {
	for _, c := range []struct {
		name    string
		cfg     dissemination.BrisaConfig
		parents int
	}{
		{"tree", dissemination.BrisaConfig{}, 1},
		{"dag", dissemination.BrisaConfig{Mode: dissemination.BrisaDAG}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			const n = 200
			net := newBrisaNet(t, 3, n, 0, c.cfg)
			rng := rand.New(rand.NewPCG(4, 4))
			source := net.ids[0]
			var all [][]byte
			stream := func(k int) {
				for i := 0; i < k; i++ {
					all = append(all, net.publish(source))
					net.s.RunFor(100 * time.Millisecond)
				}
			}
			stream(10)
			live := net.crashExcept(rng, 0.2, source)
			during := net.payloads()
			stream(20)
			net.s.RunFor(5 * time.Second)
			during = net.payloads() - during
			for k, id := range all {
				if err := net.check(id, source); err != nil {
					t.Fatalf("broadcast %d (of %d, crash after 10): %v", k, len(all), err)
				}
			}
			if err := net.checkStructure(source, c.parents); err != nil {
				t.Fatal(err)
			}
			st := net.s.Stats()
			before := net.payloads()
			id := net.publish(source)
			net.s.RunFor(2 * time.Second)
			if err := net.check(id, source); err != nil {
				t.Fatal(err)
			}
			rmr := float64(net.payloads()-before)/float64(len(live)-1) - 1
			t.Logf("%s: %d survivors; REACTIVATE %d, REPLAY %d, PULL %d during the run; RMR of the 20 broadcasts across the repair %.3f, after it %.3f",
				c.name, len(live), st.ByKind["REACTIVATE"].Msgs, st.ByKind["REPLAY"].Msgs, st.ByKind["PULL"].Msgs,
				float64(during)/float64(20*(len(live)-1))-1, rmr)
			if c.parents == 1 && rmr > 0.01 {
				t.Fatalf("tree did not settle after the repair: RMR %.3f", rmr)
			}
		})
	}
}

// With 5% and 10% of messages lost, gaps are pulled and retried: every broadcast of
// the stream reaches every node exactly once. (A gap shows only when a later broadcast
// arrives, so a few trailing broadcasts end the stream; they are not checked.)
func TestBrisaRecoversFromMessageLoss(t *testing.T) {
	for _, loss := range []float64{0.05, 0.1} {
		t.Run(fmt.Sprint(loss), func(t *testing.T) {
			const n = 200
			net := newBrisaNet(t, 5, n, loss, dissemination.BrisaConfig{})
			source := net.ids[9]
			var all [][]byte
			for i := 0; i < 35; i++ {
				all = append(all, net.publish(source))
				net.s.RunFor(200 * time.Millisecond)
			}
			net.s.RunFor(30 * time.Second)
			for k, id := range all[:30] {
				if err := net.check(id, source); err != nil {
					t.Fatalf("broadcast %d: %v", k, err)
				}
			}
			st := net.s.Stats()
			t.Logf("loss %.2f: lost %d messages; DATA %d, REPLAY %d, PULL %d, DEACTIVATE %d",
				loss, st.Lost, st.ByKind["DATA"].Msgs, st.ByKind["REPLAY"].Msgs, st.ByKind["PULL"].Msgs, st.ByKind["DEACTIVATE"].Msgs)
		})
	}
}

// Several sources, each with its own tree; the harness's broadcasts use one global
// counter, so each origin's seqs are sparse: still exactly once, and no PULL.
func TestBrisaSeveralSources(t *testing.T) {
	const n = 150
	net := newBrisaNet(t, 6, n, 0, dissemination.BrisaConfig{})
	rng := rand.New(rand.NewPCG(6, 6))
	sources := []peer.ID{net.ids[1], net.ids[50], net.ids[100]}
	for k := 0; k < 15; k++ {
		origin := sources[rng.IntN(len(sources))]
		id := net.overlayNet.broadcast(origin)
		net.s.RunFor(2 * time.Second)
		if err := net.check(id, origin); err != nil {
			t.Fatalf("broadcast %d: %v", k, err)
		}
	}
	for _, src := range sources {
		if err := net.checkStructure(src, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := net.core(net.ids[7]).Sources(); got != 3 {
		t.Fatalf("%d sources tracked, want 3", got)
	}
	// Pushes name each origin's previous broadcast: nobody chases the seqs skipped.
	if st := net.s.Stats(); st.ByKind["PULL"].Msgs != 0 {
		t.Fatalf("%d PULLs for seqs that never existed", st.ByKind["PULL"].Msgs)
	}
}

func TestBrisaSameSeedSameTrace(t *testing.T) {
	run := func() uint64 {
		net := newBrisaNet(t, 9, 100, 0.02, dissemination.BrisaConfig{Strategy: dissemination.BrisaDelayAware})
		rng := rand.New(rand.NewPCG(9, 9))
		for k := 0; k < 5; k++ {
			net.publish(net.ids[k*7])
			net.s.RunFor(time.Second)
		}
		net.crashExcept(rng, 0.3)
		for k := 0; k < 5; k++ {
			net.publish(net.ids[1])
			net.s.RunFor(time.Second)
		}
		return net.s.TraceHash()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("traces differ: %x %x", a, b)
	}
}

// Any bytes that decode as a BrisaMessage, fed to a core in any state, never panic.
func FuzzBrisaTakesAnyMessage(f *testing.F) {
	ids, _ := sim.PeerIDs(3, 3)
	b := &dissemination.Broadcast{Origin: []byte(ids[2]), Seq: 5, Payload: []byte("p")}
	for _, m := range []*dissemination.BrisaMessage{
		{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: b, Hops: 3}}},
		{Body: &dissemination.BrisaMessage_Replay{Replay: &dissemination.BrisaReplay{Broadcast: b}}},
		{Body: &dissemination.BrisaMessage_Deactivate{Deactivate: &dissemination.BrisaDeactivate{Origin: []byte(ids[2])}}},
		{Body: &dissemination.BrisaMessage_Reactivate{Reactivate: &dissemination.BrisaReactivate{Origin: []byte(ids[2]), Last: 1, HasLast: true}}},
		{Body: &dissemination.BrisaMessage_Pull{Pull: &dissemination.BrisaPull{Origin: []byte(ids[2]), Seqs: []uint64{1, 2, 3}}}},
		{Body: &dissemination.BrisaMessage_Ping{Ping: &dissemination.BrisaPing{Nonce: 1}}},
		{Body: &dissemination.BrisaMessage_Pong{Pong: &dissemination.BrisaPong{Nonce: 1}}},
	} {
		bs, _ := proto.Marshal(m)
		f.Add(bs, uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		m := new(dissemination.BrisaMessage)
		if proto.Unmarshal(data, m) != nil {
			return
		}
		cfg := dissemination.BrisaConfig{MaxSources: 2, Window: 16, Cache: 4, Missing: 4}
		if mode&1 != 0 {
			cfg.Mode = dissemination.BrisaDAG
		}
		if mode&2 != 0 {
			cfg.Strategy = dissemination.BrisaDelayAware
		}
		c, err := dissemination.NewBrisa(ids[0], cfg, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		now := sim.Epoch
		c.Handle(now, protocols.Neighbours{Peers: ids[1:]})
		warm := &dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: b, Hops: 1}}}
		c.Handle(now, protocols.Receive{From: ids[1], Msg: warm})
		for i := 0; i < 3; i++ {
			_ = m.Broadcasts()
			_ = m.Kind()
			c.Handle(now, protocols.Receive{From: ids[1+i%2], Msg: m})
			if mode&4 != 0 {
				c.Handle(now, protocols.PeerDown{Peer: ids[1]})
				c.Handle(now, protocols.TimerFired{Timer: protocols.Timer{Kind: 40, Key: string(ids[2])}})
				c.Handle(now, protocols.TimerFired{Timer: protocols.Timer{Kind: 41, Key: string(m.GetData().GetBroadcast().GetOrigin())}})
			}
		}
	})
}

func TestBrisaCarrier(t *testing.T) {
	b := &dissemination.Broadcast{Origin: []byte("o"), Seq: 1}
	for _, c := range []struct {
		m    *dissemination.BrisaMessage
		kind string
		n    int
	}{
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{Broadcast: b}}}, "DATA", 1},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Replay{Replay: &dissemination.BrisaReplay{Broadcast: b}}}, "REPLAY", 1},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Data{Data: &dissemination.BrisaData{}}}, "DATA", 0},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Deactivate{}}, "DEACTIVATE", 0},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Reactivate{}}, "REACTIVATE", 0},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pull{}}, "PULL", 0},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Ping{}}, "PING", 0},
		{&dissemination.BrisaMessage{Body: &dissemination.BrisaMessage_Pong{}}, "PONG", 0},
		{&dissemination.BrisaMessage{}, "UNKNOWN", 0},
		{nil, "UNKNOWN", 0},
	} {
		if c.m.Kind() != c.kind || len(c.m.Broadcasts()) != c.n {
			t.Errorf("%v: kind %s, %d broadcasts", c.m, c.m.Kind(), len(c.m.Broadcasts()))
		}
	}
}
