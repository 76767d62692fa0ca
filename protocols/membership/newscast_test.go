package membership

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/unsserv/go-unsserv/protocols"
)

func newNC(t *testing.T, cfg NewscastConfig) *Newscast {
	t.Helper()
	c, err := NewNewscast(NewNode(ids[0], nil, nil), cfg, rand.New(rand.NewPCG(3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// news builds an exchange from `from` carrying the given (peer, age) items.
func news(from peer.ID, reply bool, items ...any) protocols.Input {
	ex := &NewscastExchange{Sender: NewNode(from, nil, nil), Reply: reply}
	for i := 0; i < len(items); i += 2 {
		ex.Items = append(ex.Items, &NewsItem{Node: NewNode(items[i].(peer.ID), nil, nil), AgeMs: uint64(items[i+1].(int))})
	}
	return recv(from, &Message{Body: &Message_Newscast{Newscast: ex}})
}

func TestNewscastStartAndTick(t *testing.T) {
	c := newNC(t, NewscastConfig{})
	out := c.Handle(t0, protocols.Start{Bootstrap: []peer.ID{ids[1]}})
	lines := transcript(out)
	if len(lines) != 3 || lines[0] != "link n1 true" || lines[2] != "neighbours [n1]" {
		t.Fatalf("start: %v", lines)
	}
	st := out[1].(protocols.SetTimer)
	if st.Timer.Kind != timerNews || st.After > 5*time.Second {
		t.Fatalf("first exchange timer %+v, want within the 5 s interval", st)
	}
	out = c.Handle(t0.Add(st.After), protocols.TimerFired{Timer: st.Timer})
	if len(out) != 2 || out[0].(protocols.SetTimer).After != 5*time.Second {
		t.Fatalf("tick: %v", transcript(out))
	}
	send := out[1].(protocols.Send)
	ex := send.Msg.(*Message).GetNewscast()
	if send.To != ids[1] || ex.GetReply() || len(ex.GetItems()) != 2 || ex.GetItems()[0].GetNode().PeerID() != ids[0] || ex.GetItems()[0].GetAgeMs() != 0 {
		t.Fatalf("exchange to %s: %v", name(send.To), ex)
	}
}

func TestNewscastAnswersAndMergesFreshest(t *testing.T) {
	c := newNC(t, NewscastConfig{CacheSize: 3})
	c.Handle(t0, protocols.Start{})
	// n1 sends its cache: itself (fresh), n2 (1 s old), n3 (5 s), n4 (9 s), and us.
	out := c.Handle(t0, news(ids[1], false, ids[1], 0, ids[2], 1000, ids[3], 5000, ids[4], 9000, ids[0], 0))
	reply := out[0].(protocols.Send)
	if reply.To != ids[1] || !reply.Msg.(*Message).GetNewscast().GetReply() {
		t.Fatalf("no reply first: %v", transcript(out))
	}
	if got := names(c.View()); got != "n1 n2 n3" {
		t.Fatalf("cache [%s], want the 3 freshest, never itself: [n1 n2 n3]", got)
	}
	// The reply carried the cache as it was (empty) plus a fresh item about this node.
	if items := reply.Msg.(*Message).GetNewscast().GetItems(); len(items) != 1 || items[0].GetNode().PeerID() != ids[0] {
		t.Fatalf("reply items %v", items)
	}
	// A fresher item about n4 replaces the stalest; an older copy of n2 changes nothing.
	c.Handle(t0.Add(2*time.Second), news(ids[5], true, ids[4], 0, ids[2], 9000))
	if got := names(c.View()); got != "n4 n1 n2" {
		t.Fatalf("cache [%s], want [n4 n1 n2]", got)
	}
	// Ages beyond a day are clamped, never in the future.
	c.Handle(t0.Add(3*time.Second), news(ids[6], true, ids[7], 1<<62))
	if got := names(c.View()); got != "n4 n1 n2" {
		t.Fatalf("an ancient item displaced a fresh one: [%s]", got)
	}
}

func TestNewscastPeerDownAndLeave(t *testing.T) {
	c := newNC(t, NewscastConfig{})
	c.Handle(t0, protocols.Start{Bootstrap: []peer.ID{ids[1], ids[2]}})
	wantLines(t, c.Handle(t0, protocols.PeerDown{Peer: ids[1]}), "link n1 false", "neighbours [n2]")
	wantLines(t, c.Handle(t0, protocols.Leave{}), "link n2 false", "cancel 10 -", "neighbours []")
	if out := c.Handle(t0, news(ids[3], false, ids[3], 0)); out != nil {
		t.Fatalf("answered after Leave: %v", transcript(out))
	}
}

func TestNewscastOversizedExchangeTruncated(t *testing.T) {
	c := newNC(t, NewscastConfig{CacheSize: 2})
	c.Handle(t0, protocols.Start{})
	var items []any
	for i := 1; i < 40; i++ {
		items = append(items, ids[i], 40-i) // later items are fresher
	}
	c.Handle(t0, news(ids[1], true, items...))
	// Only the first CacheSize+1 items are read: n1, n2, n3; the 2 freshest stay.
	if got := names(c.View()); got != "n3 n2" {
		t.Fatalf("cache [%s], want [n3 n2]", got)
	}
}

func TestNewscastConfigValidate(t *testing.T) {
	for _, cfg := range []NewscastConfig{{CacheSize: -1}, {CacheSize: 5000}, {Interval: -time.Second}} {
		var ce *protocols.ConfigError
		if err := cfg.Validate(); !errors.As(err, &ce) {
			t.Errorf("%+v: %v, want a ConfigError", cfg, err)
		}
	}
	if d := (NewscastConfig{}).WithDefaults(); d.CacheSize != 20 || d.Interval != 5*time.Second {
		t.Fatalf("defaults %+v", d)
	}
}
