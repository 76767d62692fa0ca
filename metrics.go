package unsserv

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/unsserv/go-unsserv/host"
)

// Metrics exports the counters of services (their Stats) to Prometheus, under the
// namespace unsserv_, read at every scrape: nothing is counted twice and nothing runs
// between scrapes. Every series carries the labels service ("membership",
// "dissemination"), protocol (the stream protocol, e.g. /unsserv/membership/network.id)
// and algorithm ("hyparview", "plumtree"...).
//
//	unsserv_neighbours                       gauge: the service's neighbours (for
//	                                         dissemination: the overlay's it spreads over)
//	unsserv_messages_total{direction}        messages read (in) and written (out)
//	unsserv_bytes_total{direction}           their framed sizes
//	unsserv_queue_dropped_total              messages not written: queue full, or the peer failed
//	unsserv_violations_total                 streams reset because the peer broke the protocol
//	unsserv_broadcasts_published_total       broadcasts this node published (dissemination)
//	unsserv_broadcasts_delivered_total       broadcasts handed to the application
//	unsserv_broadcasts_overflow_total        broadcasts dropped: delivery queue full
//	unsserv_broadcasts_rejected_total        broadcasts refused: bad signature, oversized
//	unsserv_broadcasts_duplicates_total      deliveries suppressed as already handed over
//	unsserv_broadcast_copies_received_total  broadcast copies received over the network
//
// Register it on the registry libp2p uses (host.PrometheusRegisterer) and serve both
// with promhttp.HandlerFor. A service is reported from Add until the process ends
// (after Leave its counters stay as they were).
type Metrics struct {
	mu      sync.Mutex
	sources []metricsSource
}

// metricsSource is one service as Metrics reads it.
type metricsSource struct {
	service, protocol, algorithm string
	stats                        func() host.Stats
	dissemination                func() DisseminationStats // nil for other services
	neighbours                   func() int                // nil: Stats().Neighbours
}

var (
	metricLabels = []string{"service", "protocol", "algorithm"}
	dirLabels    = []string{"service", "protocol", "algorithm", "direction"}

	descNeighbours = prometheus.NewDesc("unsserv_neighbours",
		"Neighbours of the service (dissemination: those of the overlay it spreads over).", metricLabels, nil)
	descMessages = prometheus.NewDesc("unsserv_messages_total",
		"Protocol messages read (direction=in) and written (direction=out).", dirLabels, nil)
	descBytes = prometheus.NewDesc("unsserv_bytes_total",
		"Framed bytes of the protocol messages read (in) and written (out).", dirLabels, nil)
	descDropped = prometheus.NewDesc("unsserv_queue_dropped_total",
		"Messages not written: the peer's queue was full, or the peer failed.", metricLabels, nil)
	descViolations = prometheus.NewDesc("unsserv_violations_total",
		"Streams reset because the peer broke the protocol.", metricLabels, nil)
	descPublished = prometheus.NewDesc("unsserv_broadcasts_published_total",
		"Broadcasts this node published.", metricLabels, nil)
	descDelivered = prometheus.NewDesc("unsserv_broadcasts_delivered_total",
		"Broadcasts of other nodes handed to the application.", metricLabels, nil)
	descOverflow = prometheus.NewDesc("unsserv_broadcasts_overflow_total",
		"Broadcasts dropped because the delivery queue was full (slow handler).", metricLabels, nil)
	descRejected = prometheus.NewDesc("unsserv_broadcasts_rejected_total",
		"Broadcasts refused: bad signature or oversized payload.", metricLabels, nil)
	descDuplicates = prometheus.NewDesc("unsserv_broadcasts_duplicates_total",
		"Deliveries suppressed because the broadcast was already handed over.", metricLabels, nil)
	descCopies = prometheus.NewDesc("unsserv_broadcast_copies_received_total",
		"Broadcast copies received over the network (redundancy = copies / delivered).", metricLabels, nil)
)

// NewMetrics returns a collector of service metrics registered on reg (nil: not
// registered; register it yourself). Add services to it with AddMembership and
// AddDissemination.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, fmt.Errorf("unsserv metrics: %w", err)
		}
	}
	return m, nil
}

// AddMembership exports a membership's counters.
func (m *Metrics) AddMembership(ms *Membership) error {
	if ms == nil {
		return fmt.Errorf("unsserv metrics: nil *Membership")
	}
	algorithm := "hyparview"
	if ms.Profile() == Extreme {
		algorithm = "newscast"
	}
	return m.add(metricsSource{
		service: "membership", protocol: string(MembershipProtocol(ms.NetworkID())),
		algorithm: algorithm, stats: ms.Stats,
	})
}

// AddDissemination exports a dissemination service's counters.
func (m *Metrics) AddDissemination(d *Dissemination) error {
	if d == nil {
		return fmt.Errorf("unsserv metrics: nil *Dissemination")
	}
	return m.add(metricsSource{
		service: "dissemination", protocol: string(DisseminationProtocol(d.id)),
		algorithm: d.Algorithm(), stats: func() host.Stats { return d.Stats().Service },
		dissemination: d.Stats,
		// The broadcast cores keep no links of their own: they spread over the
		// overlay's neighbours.
		neighbours: func() int { return len(d.o.Neighbours()) },
	})
}

func (m *Metrics) add(s metricsSource) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.sources {
		if o.service == s.service && o.protocol == s.protocol {
			return fmt.Errorf("unsserv metrics: %s %s is already exported (one Metrics per host: several hosts in one process need one registry each)", s.service, s.protocol)
		}
	}
	m.sources = append(m.sources, s)
	return nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNeighbours, descMessages, descBytes, descDropped,
		descViolations, descPublished, descDelivered, descOverflow, descRejected, descDuplicates, descCopies} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads every service's Stats.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	sources := append([]metricsSource(nil), m.sources...)
	m.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, s := range sources {
		l := []string{s.service, s.protocol, s.algorithm}
		var st host.Stats
		var ds DisseminationStats
		if s.dissemination != nil {
			ds = s.dissemination()
			st = ds.Service
		} else {
			st = s.stats()
		}
		neighbours := st.Neighbours
		if s.neighbours != nil {
			neighbours = s.neighbours()
		}
		ch <- prometheus.MustNewConstMetric(descNeighbours, prometheus.GaugeValue, float64(neighbours), l...)
		counter(descMessages, st.MsgsIn, append(l, "in")...)
		counter(descMessages, st.MsgsOut, append(l, "out")...)
		counter(descBytes, st.BytesIn, append(l, "in")...)
		counter(descBytes, st.BytesOut, append(l, "out")...)
		counter(descDropped, st.Dropped, l...)
		counter(descViolations, st.Violations, l...)
		if s.dissemination == nil {
			continue
		}
		counter(descPublished, ds.Broadcasts, l...)
		counter(descDelivered, ds.Delivered, l...)
		counter(descOverflow, ds.Overflow, l...)
		counter(descRejected, ds.Rejected, l...)
		counter(descDuplicates, ds.Duplicates, l...)
		counter(descCopies, ds.PayloadsIn, l...)
	}
}
