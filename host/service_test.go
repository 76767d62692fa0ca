package host

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	p2phost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/unsserv/go-unsserv/protocols"
)

const testProto = "/unsserv/test/t1"

// scriptCore records every input on a channel and answers with what its script says.
type scriptCore struct {
	inputs chan protocols.Input
	script func(now time.Time, in protocols.Input) []protocols.Output
}

func newScriptCore(script func(time.Time, protocols.Input) []protocols.Output) *scriptCore {
	return &scriptCore{inputs: make(chan protocols.Input, 1024), script: script}
}

func (c *scriptCore) Handle(now time.Time, in protocols.Input) []protocols.Output {
	c.inputs <- in
	if c.script == nil {
		return nil
	}
	return c.script(now, in)
}

// next waits for the first input of type T, skipping others.
func next[T protocols.Input](t *testing.T, c *scriptCore) T {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case in := <-c.inputs:
			if v, ok := in.(T); ok {
				return v
			}
		case <-deadline:
			var zero T
			t.Fatalf("no %T input within 10s", zero)
			return zero
		}
	}
}

func testConfig() ServiceConfig {
	return ServiceConfig{
		Protocol:       testProto,
		Name:           "unsserv.test",
		NewMessage:     func() proto.Message { return new(wrapperspb.StringValue) },
		MaxMessageSize: 1024,
		FlushTimeout:   500 * time.Millisecond,
	}
}

func mockHosts(t *testing.T, n int) (mocknet.Mocknet, []p2phost.Host) {
	t.Helper()
	mn, err := mocknet.FullMeshLinked(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mn.Close() })
	return mn, mn.Hosts()
}

func startService(t *testing.T, h p2phost.Host, c protocols.Core) *Service {
	t.Helper()
	s, err := NewService(h, c, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func TestServiceDeliversInOrder(t *testing.T) {
	_, hs := mockHosts(t, 2)
	a := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if st, ok := in.(protocols.Start); ok {
			var outs []protocols.Output
			for i := 0; i < 20; i++ {
				outs = append(outs, protocols.Send{To: st.Bootstrap[0], Msg: wrapperspb.String(strings.Repeat("x", i))})
			}
			return outs
		}
		return nil
	})
	b := newScriptCore(nil)
	sa := startService(t, hs[0], a)
	sb := startService(t, hs[1], b)
	if err := sa.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		r := next[protocols.Receive](t, b)
		if r.From != hs[0].ID() {
			t.Fatalf("message %d from %s, want %s", i, r.From, hs[0].ID())
		}
		if got := r.Msg.(*wrapperspb.StringValue).GetValue(); len(got) != i {
			t.Fatalf("message %d has length %d: out of order", i, len(got))
		}
	}
	if st := sb.Stats(); st.MsgsIn != 20 {
		t.Fatalf("receiver counted %d messages in, want 20", st.MsgsIn)
	}
	// The writer counts a message once its Write returned, which can be just after the
	// receiver got it.
	deadline := time.Now().Add(5 * time.Second)
	for st := sa.Stats(); st.MsgsOut != 20 || st.BytesOut == 0; st = sa.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("sender stats %+v, want 20 messages out", st)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestServiceTimers(t *testing.T) {
	_, hs := mockHosts(t, 1)
	t1 := protocols.Timer{Kind: 1}
	t2 := protocols.Timer{Kind: 2}
	c := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if _, ok := in.(protocols.Start); ok {
			return []protocols.Output{
				protocols.SetTimer{Timer: t1, After: time.Hour},            // replaced below
				protocols.SetTimer{Timer: t2, After: 5 * time.Millisecond}, // cancelled below
				protocols.SetTimer{Timer: t1, After: 10 * time.Millisecond},
				protocols.CancelTimer{Timer: t2},
			}
		}
		return nil
	})
	s := startService(t, hs[0], c)
	if err := s.Post(context.Background(), protocols.Start{}); err != nil {
		t.Fatal(err)
	}
	if f := next[protocols.TimerFired](t, c); f.Timer != t1 {
		t.Fatalf("fired %+v, want %+v (t2 was cancelled)", f.Timer, t1)
	}
	select {
	case in := <-c.inputs:
		t.Fatalf("unexpected input after the only live timer fired: %#v", in)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestServiceDialFailureIsPeerDown(t *testing.T) {
	mn, hs := mockHosts(t, 2)
	if err := mn.UnlinkPeers(hs[0].ID(), hs[1].ID()); err != nil {
		t.Fatal(err)
	}
	c := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if st, ok := in.(protocols.Start); ok {
			return []protocols.Output{protocols.Send{To: st.Bootstrap[0], Msg: wrapperspb.String("hello")}}
		}
		return nil
	})
	s := startService(t, hs[0], c)
	_ = s.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}})
	d := next[protocols.PeerDown](t, c)
	if d.Peer != hs[1].ID() || d.Err == nil || d.Misbehaved {
		t.Fatalf("got %+v, want PeerDown of %s with an error, not misbehaved", d, hs[1].ID())
	}
	if st := s.Stats(); st.Dropped != 1 {
		t.Fatalf("dropped %d, want 1", st.Dropped)
	}
}

func TestServiceProtocolNotSupportedIsPeerDown(t *testing.T) {
	_, hs := mockHosts(t, 2)
	c := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if st, ok := in.(protocols.Start); ok {
			return []protocols.Output{protocols.Send{To: st.Bootstrap[0], Msg: wrapperspb.String("hello")}}
		}
		return nil
	})
	s := startService(t, hs[0], c) // hs[1] runs no service
	_ = s.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}})
	if d := next[protocols.PeerDown](t, c); d.Peer != hs[1].ID() {
		t.Fatalf("got %+v", d)
	}
}

// rawStream opens a stream to the service on h from another host, as a broken or
// malicious peer would.
func rawStream(t *testing.T, from p2phost.Host, to peer.ID) network.Stream {
	t.Helper()
	st, err := from.NewStream(context.Background(), to, testProto)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitReset reads from st until the remote resets it.
func waitReset(t *testing.T, st network.Stream) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, st)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, network.ErrReset) {
			t.Fatalf("stream ended with %v, want a reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream was not reset within 10s")
	}
}

func TestServiceResetsBadInput(t *testing.T) {
	cases := []struct {
		name  string
		bytes []byte
	}{
		{"garbage", []byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff}},                                  // 5 bytes that are not a StringValue
		{"oversized", binary.AppendUvarint(nil, 1<<20)},                                          // announces 1 MiB, limit 1 KiB
		{"bad varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}}, // overflows
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, hs := mockHosts(t, 3)
			c := newScriptCore(nil)
			s := startService(t, hs[0], c)
			bad := rawStream(t, hs[1], hs[0].ID())
			if _, err := bad.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			waitReset(t, bad)
			d := next[protocols.PeerDown](t, c)
			if d.Peer != hs[1].ID() || !d.Misbehaved {
				t.Fatalf("got %+v, want %s dropped as misbehaved", d, hs[1].ID())
			}
			if st := s.Stats(); st.Violations != 1 {
				t.Fatalf("violations %d, want 1", st.Violations)
			}
			// The node goes on serving others.
			good := rawStream(t, hs[2], hs[0].ID())
			frame, _ := appendFrame(nil, wrapperspb.String("still here"))
			if _, err := good.Write(frame); err != nil {
				t.Fatal(err)
			}
			r := next[protocols.Receive](t, c)
			if r.From != hs[2].ID() || r.Msg.(*wrapperspb.StringValue).GetValue() != "still here" {
				t.Fatalf("got %+v", r)
			}
			_ = good.Close()
		})
	}
}

func TestServiceQueueOverflowIsCounted(t *testing.T) {
	_, hs := mockHosts(t, 2)
	// Nobody reads on hs[1]: the writer soon blocks on a write (mocknet may take the
	// first frame or two before it does), so the rest pile up in the queue of 128.
	hs[1].SetStreamHandler(testProto, func(s network.Stream) {})
	c := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if st, ok := in.(protocols.Start); ok {
			outs := make([]protocols.Output, 300)
			for i := range outs {
				outs[i] = protocols.Send{To: st.Bootstrap[0], Msg: wrapperspb.String("m")}
			}
			return outs
		}
		return nil
	})
	s := startService(t, hs[0], c)
	_ = s.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}})
	// 300 sent: at most 128 queued and one blocked in a write; every other one was
	// either written or dropped and counted.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Stats()
		if st.Dropped > 0 && st.Dropped+st.MsgsOut >= 300-129 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d and written %d, want at least %d together", st.Dropped, st.MsgsOut, 300-129)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestServiceQueueBytesBound(t *testing.T) {
	_, hs := mockHosts(t, 2)
	hs[1].SetStreamHandler(testProto, func(s network.Stream) {}) // nobody reads
	big := wrapperspb.Bytes(make([]byte, 1000))                  // 1003 bytes encoded
	c := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if st, ok := in.(protocols.Start); ok {
			outs := make([]protocols.Output, 100)
			for i := range outs {
				outs[i] = protocols.Send{To: st.Bootstrap[0], Msg: big}
			}
			return outs
		}
		return nil
	})
	cfg := testConfig()
	cfg.QueueBytes = 10 * 1003
	s, err := NewService(hs[0], c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	_ = s.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}})
	// 100 sent, 10 fit in the bytes bound; meanwhile the writer may take up to three
	// off the queue (one in mocknet's transport, one blocked in Write, one being
	// written), freeing their bytes: 87 to 90 dropped, however long the count queue is.
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Dropped < 87 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, want at least 87", s.Stats().Dropped)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if d := s.Stats().Dropped; d > 90 {
		t.Fatalf("dropped %d, want at most 90", d)
	}
}

func TestServiceCloseLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mn, err := mocknet.FullMeshLinked(2)
	if err != nil {
		t.Fatal(err)
	}
	hs := mn.Hosts()
	var mu sync.Mutex
	var got []string
	mk := func() *scriptCore {
		joined := false
		return newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
			switch v := in.(type) {
			case protocols.Start:
				if len(v.Bootstrap) > 0 {
					joined = true
					return []protocols.Output{
						protocols.Link{Peer: v.Bootstrap[0], Up: true},
						protocols.Send{To: v.Bootstrap[0], Msg: wrapperspb.String("hi")},
						protocols.SetTimer{Timer: protocols.Timer{Kind: 1}, After: time.Hour},
					}
				}
			case protocols.Leave:
				if joined {
					return []protocols.Output{protocols.Send{To: hs[1].ID(), Msg: wrapperspb.String("bye")}}
				}
			case protocols.Receive:
				mu.Lock()
				got = append(got, v.Msg.(*wrapperspb.StringValue).GetValue())
				mu.Unlock()
			}
			return nil
		})
	}
	ca, cb := mk(), mk()
	sa, err := NewService(hs[0], ca, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewService(hs[1], cb, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	_ = sa.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}})
	_ = sb.Post(context.Background(), protocols.Start{})
	next[protocols.Receive](t, cb)
	if err := sa.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	next[protocols.Receive](t, cb) // the goodbye was flushed before the close
	if err := sa.Post(context.Background(), protocols.Start{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("post after close: %v, want ErrClosed", err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(got) != 2 || got[0] != "hi" || got[1] != "bye" {
		t.Fatalf("received %q, want [hi bye]", got)
	}
	mu.Unlock()
	if err := mn.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestServiceConfigErrors(t *testing.T) {
	_, hs := mockHosts(t, 1)
	for _, tc := range []struct {
		cfg   ServiceConfig
		field string
	}{
		{ServiceConfig{}, "Protocol"},
		{ServiceConfig{Protocol: testProto}, "Name"},
		{ServiceConfig{Protocol: testProto, Name: "x"}, "NewMessage"},
	} {
		_, err := NewService(hs[0], newScriptCore(nil), tc.cfg)
		var ce *protocols.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Fatalf("config %+v: error %v, want one naming %s", tc.cfg, err, tc.field)
		}
	}
}

// A Close followed at once by more sends must not reorder messages (one stream stays).
func TestServiceCloseKeepsOrder(t *testing.T) {
	_, hs := mockHosts(t, 2)
	a := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if st, ok := in.(protocols.Start); ok {
			var outs []protocols.Output
			for i := 0; i < 30; i++ {
				outs = append(outs, protocols.Send{To: st.Bootstrap[0], Msg: wrapperspb.String(strings.Repeat("x", i))})
				if i%3 == 0 {
					outs = append(outs, protocols.Close{Peer: st.Bootstrap[0]})
				}
			}
			return outs
		}
		return nil
	})
	b := newScriptCore(nil)
	sa := startService(t, hs[0], a)
	startService(t, hs[1], b)
	_ = sa.Post(context.Background(), protocols.Start{Bootstrap: []peer.ID{hs[1].ID()}})
	for i := 0; i < 30; i++ {
		r := next[protocols.Receive](t, b)
		if got := len(r.Msg.(*wrapperspb.StringValue).GetValue()); got != i {
			t.Fatalf("message %d arrived as number %d: a Close reordered the stream", got, i)
		}
	}
}

// TestServiceReopensStreamOnLiveConnection: a stream that dies while the peer is still
// connected (as when a relayed connection gives way to a direct one) is reopened for
// the next message; the peer is not reported down.
func TestServiceReopensStreamOnLiveConnection(t *testing.T) {
	// Real hosts: mocknet streams do not fail a write after the remote reset.
	var hs []p2phost.Host
	for i := 0; i < 2; i++ {
		h, err := New(context.Background(), ListenAddrs("/ip4/127.0.0.1/tcp/0"), NoNATTraversal(), DisableMetrics())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hs = append(hs, h)
	}
	if err := hs[0].Connect(context.Background(), peer.AddrInfo{ID: hs[1].ID(), Addrs: hs[1].Addrs()}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	streams := make(chan network.Stream, 10)
	hs[1].SetStreamHandler(testProto, func(st network.Stream) {
		streams <- st
		mr := newMsgReader(st, 1024)
		for {
			m := new(wrapperspb.StringValue)
			if _, err := mr.next(m); err != nil {
				return
			}
			got <- m.GetValue()
		}
	})
	c := newScriptCore(func(_ time.Time, in protocols.Input) []protocols.Output {
		if call, ok := in.(protocols.Call); ok {
			return []protocols.Output{protocols.Send{To: hs[1].ID(), Msg: wrapperspb.String(call.Req.(string))}}
		}
		return nil
	})
	s := startService(t, hs[0], c)
	ctx := context.Background()
	_ = s.Post(ctx, protocols.Call{Req: "one"})
	if m := <-got; m != "one" {
		t.Fatalf("got %q", m)
	}
	(<-streams).Reset() // the stream dies; the connection stays
	time.Sleep(50 * time.Millisecond)
	_ = s.Post(ctx, protocols.Call{Req: "two"})
	select {
	case m := <-got:
		if m != "two" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message after the reset never arrived")
	}
	for len(c.inputs) > 0 {
		if pd, ok := (<-c.inputs).(protocols.PeerDown); ok {
			t.Fatalf("peer reported down: %v", pd.Err)
		}
	}
}
