package unsserv

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/unsserv/go-unsserv/host"
)

// Every counter of a service's Stats comes out under its name, with the service's
// labels, at the value Stats had at the scrape.
func TestMetricsExposeStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.add(metricsSource{
		service: "membership", protocol: "/unsserv/membership/n", algorithm: "hyparview",
		stats: func() host.Stats {
			return host.Stats{MsgsIn: 1, MsgsOut: 2, BytesIn: 30, BytesOut: 40, Dropped: 5, Violations: 6, Neighbours: 4}
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.add(metricsSource{
		service: "dissemination", protocol: "/unsserv/dissemination/n", algorithm: "plumtree",
		neighbours: func() int { return 3 },
		dissemination: func() DisseminationStats {
			return DisseminationStats{
				Service:    host.Stats{MsgsIn: 7, MsgsOut: 8, BytesIn: 90, BytesOut: 100},
				Broadcasts: 11, Delivered: 12, Overflow: 13, Duplicates: 14, PayloadsIn: 15, Rejected: 16,
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	const mem = `service="membership",protocol="/unsserv/membership/n",algorithm="hyparview"`
	const dis = `service="dissemination",protocol="/unsserv/dissemination/n",algorithm="plumtree"`
	want := `
# HELP unsserv_neighbours Neighbours of the service (dissemination: those of the overlay it spreads over).
# TYPE unsserv_neighbours gauge
unsserv_neighbours{` + dis + `} 3
unsserv_neighbours{` + mem + `} 4
# HELP unsserv_messages_total Protocol messages read (direction=in) and written (direction=out).
# TYPE unsserv_messages_total counter
unsserv_messages_total{` + dis + `,direction="in"} 7
unsserv_messages_total{` + dis + `,direction="out"} 8
unsserv_messages_total{` + mem + `,direction="in"} 1
unsserv_messages_total{` + mem + `,direction="out"} 2
# HELP unsserv_bytes_total Framed bytes of the protocol messages read (in) and written (out).
# TYPE unsserv_bytes_total counter
unsserv_bytes_total{` + dis + `,direction="in"} 90
unsserv_bytes_total{` + dis + `,direction="out"} 100
unsserv_bytes_total{` + mem + `,direction="in"} 30
unsserv_bytes_total{` + mem + `,direction="out"} 40
# HELP unsserv_queue_dropped_total Messages not written: the peer's queue was full, or the peer failed.
# TYPE unsserv_queue_dropped_total counter
unsserv_queue_dropped_total{` + dis + `} 0
unsserv_queue_dropped_total{` + mem + `} 5
# HELP unsserv_violations_total Streams reset because the peer broke the protocol.
# TYPE unsserv_violations_total counter
unsserv_violations_total{` + dis + `} 0
unsserv_violations_total{` + mem + `} 6
# HELP unsserv_broadcasts_published_total Broadcasts this node published.
# TYPE unsserv_broadcasts_published_total counter
unsserv_broadcasts_published_total{` + dis + `} 11
# HELP unsserv_broadcasts_delivered_total Broadcasts of other nodes handed to the application.
# TYPE unsserv_broadcasts_delivered_total counter
unsserv_broadcasts_delivered_total{` + dis + `} 12
# HELP unsserv_broadcasts_overflow_total Broadcasts dropped because the delivery queue was full (slow handler).
# TYPE unsserv_broadcasts_overflow_total counter
unsserv_broadcasts_overflow_total{` + dis + `} 13
# HELP unsserv_broadcasts_duplicates_total Deliveries suppressed because the broadcast was already handed over.
# TYPE unsserv_broadcasts_duplicates_total counter
unsserv_broadcasts_duplicates_total{` + dis + `} 14
# HELP unsserv_broadcast_copies_received_total Broadcast copies received over the network (redundancy = copies / delivered).
# TYPE unsserv_broadcast_copies_received_total counter
unsserv_broadcast_copies_received_total{` + dis + `} 15
# HELP unsserv_broadcasts_rejected_total Broadcasts refused: bad signature or oversized payload.
# TYPE unsserv_broadcasts_rejected_total counter
unsserv_broadcasts_rejected_total{` + dis + `} 16
`
	if got := exposition(t, reg); got != strings.TrimPrefix(want, "\n") {
		t.Fatalf("exposition:\n%s\nwant:\n%s", got, want)
	}
	// The same service twice would give duplicate series: refused.
	if err := m.add(metricsSource{service: "membership", protocol: "/unsserv/membership/n"}); err == nil {
		t.Fatal("the same service added twice: no error")
	}
}

// Real services: two nodes, one broadcast. The receiver's registry shows one neighbour
// per service, the delivery, and message counters that match its services' Stats.
func TestMetricsOfRealServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mn := mocknet.New()
	defer mn.Close()
	h1, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	h2, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	m1, err := JoinNetwork(ctx, h1, "metrics.net")
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Leave()
	m2, err := JoinNetwork(ctx, h2, "metrics.net", Bootstrap(peer.AddrInfo{ID: h1.ID()}))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Leave()
	got := make(chan []byte, 1)
	d1, err := NewDissemination(ctx, m1, "metrics.net", func(b []byte) { got <- b })
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Leave()
	d2, err := NewDissemination(ctx, m2, "metrics.net", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Leave()
	for _, m := range []*Membership{m1, m2} {
		if err := m.WaitReady(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := metrics.AddMembership(m1); err != nil {
		t.Fatal(err)
	}
	if err := metrics.AddDissemination(d1); err != nil {
		t.Fatal(err)
	}
	if err := d2.Broadcast(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("broadcast not received")
	}
	// The delivery counter moves after the handler returns: wait for it.
	for d1.Stats().Delivered < 1 {
		select {
		case <-ctx.Done():
			t.Fatal("delivery not counted")
		case <-time.After(time.Millisecond):
		}
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
		metrics:
			for _, m := range f.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue metrics
					}
				}
				return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	mem := map[string]string{"service": "membership", "protocol": "/unsserv/membership/metrics.net", "algorithm": "hyparview"}
	dis := map[string]string{"service": "dissemination", "protocol": "/unsserv/dissemination/metrics.net", "algorithm": "plumtree"}
	with := func(l map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range l {
			out[a] = b
		}
		return out
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"unsserv_neighbours", mem, 1},
		{"unsserv_neighbours", dis, 1},
		{"unsserv_broadcasts_delivered_total", dis, 1},
		{"unsserv_broadcasts_published_total", dis, 0},
		{"unsserv_broadcasts_rejected_total", dis, 0},
		{"unsserv_broadcasts_overflow_total", dis, 0},
		{"unsserv_violations_total", mem, 0},
	} {
		v, ok := value(c.name, c.labels)
		if !ok || v != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	// The broadcast came in over the dissemination protocol: at least one message in,
	// and never more than Stats reports after the scrape.
	in, ok := value("unsserv_messages_total", with(dis, "direction", "in"))
	if !ok || in < 1 || in > float64(d1.Stats().Service.MsgsIn) {
		t.Errorf("dissemination messages in = %v (present %v), Stats says %d", in, ok, d1.Stats().Service.MsgsIn)
	}
	memIn, ok := value("unsserv_bytes_total", with(mem, "direction", "in"))
	if !ok || memIn < 1 || memIn > float64(m1.Stats().BytesIn) {
		t.Errorf("membership bytes in = %v (present %v), Stats says %d", memIn, ok, m1.Stats().BytesIn)
	}
}

// exposition renders what reg gathers like Prometheus's text format (HELP, TYPE, then
// the series with their labels in the order given; families and series sorted as
// the series sorted).
func exposition(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]int{}
	for i, f := range families {
		byName[f.GetName()] = i
	}
	var b strings.Builder
	for _, name := range []string{"unsserv_neighbours", "unsserv_messages_total", "unsserv_bytes_total",
		"unsserv_queue_dropped_total", "unsserv_violations_total", "unsserv_broadcasts_published_total",
		"unsserv_broadcasts_delivered_total", "unsserv_broadcasts_overflow_total",
		"unsserv_broadcasts_duplicates_total", "unsserv_broadcast_copies_received_total",
		"unsserv_broadcasts_rejected_total"} {
		i, ok := byName[name]
		if !ok {
			continue
		}
		f := families[i]
		delete(byName, name)
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, f.GetHelp(), name, strings.ToLower(f.GetType().String()))
		var lines []string
		for _, m := range f.GetMetric() {
			var ls []string
			for _, want := range []string{"service", "protocol", "algorithm", "direction"} {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == want {
						ls = append(ls, fmt.Sprintf("%s=%q", want, lp.GetValue()))
					}
				}
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %g\n", name, strings.Join(ls, ","), m.GetCounter().GetValue()+m.GetGauge().GetValue()))
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, ""))
	}
	for name := range byName {
		t.Errorf("unexpected metric family %s", name)
	}
	return b.String()
}
