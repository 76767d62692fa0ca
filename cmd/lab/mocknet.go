package main

// The mocknet harness shared by the broadcast comparison: the same sparse topology of
// in-process libp2p hosts for go-libp2p-pubsub's GossipSub and for our own stack, and
// the measurement both report (bcastRow).
//
// Figures measured on mocknet are real time: link latency is a real sleep in mocknet's
// stream pipes, and scheduling on a loaded machine adds to it, so latencies vary from
// run to run (counts such as delivery, duplicates and copies are close but not exactly
// repeatable either: gossip timing depends on the heartbeat phase). The figures are
// for a side-by-side comparison in one run, not for bit-for-bit reproduction.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// Target degree of the sparse topology: every node has at least mockDegree links
// (ring neighbours included) and random links go only to nodes with fewer than
// mockMaxDegree, so degrees stay within [6, 8] (n > 8).
const (
	mockDegree    = 6
	mockMaxDegree = 8
)

// mockNet is n mocknet hosts linked in a sparse random topology. Hosts are made and
// linked by newMockNet but not connected: a stack registers its stream handlers (or
// starts its pubsub) on every host first, then calls Connect, which dials every edge.
// Connecting before the handlers exist would let peers cache stale protocol lists
// (identify race) and makes go-libp2p-pubsub give up on peers it could not open a
// stream to. A mockNet serves one run; build another with the same seed for the other
// stack: node i has the same neighbours (by index) in both.
type mockNet struct {
	mn mocknet.Mocknet

	// Hosts are the mocknet hosts; node i of a bcastSpec or of a row is Hosts[i].
	Hosts []host.Host
	// Index maps a host's peer ID to its index in Hosts.
	Index map[peer.ID]int
	// Edges are the undirected links, {i, j} with i < j, sorted; each one is a mocknet
	// link, and Connect opens one connection per edge (dialled from i).
	Edges [][2]int
	// Neighbours[i] lists the indices linked to i, ascending.
	Neighbours [][]int
	// Latency is the one-way latency of every link.
	Latency time.Duration
	// Seed chose the topology.
	Seed uint64

	connected atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// newMockNet makes n mocknet hosts (GenPeer: fresh ECDSA keys, so peer IDs differ from
// run to run; the topology by index does not) and links them with the given one-way
// latency in a sparse random topology chosen by seed: a ring plus random links until
// every node has at least 6 links (at most 8 where possible). Nothing is connected
// yet: see Connect. ctx bounds the construction only.
func newMockNet(ctx context.Context, n int, latency time.Duration, seed uint64) (*mockNet, error) {
	if n < 2 {
		return nil, fmt.Errorf("mocknet: %d hosts, need at least 2", n)
	}
	if latency < 0 {
		return nil, fmt.Errorf("mocknet: negative latency %v", latency)
	}
	m := &mockNet{mn: mocknet.New(), Index: make(map[peer.ID]int, n), Latency: latency, Seed: seed}
	m.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			_ = m.Close()
			return nil, err
		}
		h, err := m.mn.GenPeer()
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("mocknet: host %d: %w", i, err)
		}
		m.Index[h.ID()] = len(m.Hosts)
		m.Hosts = append(m.Hosts, h)
	}
	m.Edges = sparseTopology(n, seed)
	m.Neighbours = make([][]int, n)
	for _, e := range m.Edges {
		m.Neighbours[e[0]] = append(m.Neighbours[e[0]], e[1])
		m.Neighbours[e[1]] = append(m.Neighbours[e[1]], e[0])
		if _, err := m.mn.LinkPeers(m.Hosts[e[0]].ID(), m.Hosts[e[1]].ID()); err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("mocknet: link %v: %w", e, err)
		}
	}
	for _, ns := range m.Neighbours {
		slices.Sort(ns)
	}
	return m, nil
}

// Connect opens one connection per edge (from the lower index) and returns once both
// ends of every connection have identified each other, so each peerstore holds the
// other's protocols. Call it once, after the stack is listening on every host.
func (m *mockNet) Connect(ctx context.Context) error {
	if !m.connected.CompareAndSwap(false, true) {
		return errors.New("mocknet: already connected")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	edges := make(chan [2]int)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range edges {
				if err := m.connectEdge(ctx, e); err != nil {
					select {
					case errc <- err:
					default:
					}
					cancel()
				}
			}
		}()
	}
feed:
	for _, e := range m.Edges {
		select {
		case edges <- e:
		case <-ctx.Done():
			break feed
		}
	}
	close(edges)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return ctx.Err()
}

func (m *mockNet) connectEdge(ctx context.Context, e [2]int) error {
	a, b := m.Hosts[e[0]], m.Hosts[e[1]]
	c, err := m.mn.ConnectPeers(a.ID(), b.ID())
	if err != nil {
		return fmt.Errorf("mocknet: connect %d-%d: %w", e[0], e[1], err)
	}
	waits := []<-chan struct{}{identifyWait(a, c)}
	for _, rc := range b.Network().ConnsToPeer(a.ID()) {
		waits = append(waits, identifyWait(b, rc))
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// identifyWait is closed once h has identified the peer at the other end of c (at once
// if h has no identify service).
func identifyWait(h host.Host, c network.Conn) <-chan struct{} {
	if ih, ok := h.(interface{ IDService() identify.IDService }); ok && ih.IDService() != nil {
		return ih.IDService().IdentifyWait(c)
	}
	done := make(chan struct{})
	close(done)
	return done
}

// Close closes every host and the mocknet; safe to call more than once.
func (m *mockNet) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.mn.Close() })
	return m.closeErr
}

// sparseTopology returns the undirected edges {i, j}, i < j, sorted: a ring over
// 0..n-1, then, visiting nodes in a seeded random order, random links from each node
// with fewer than mockDegree links to nodes with fewer than mockMaxDegree (any node if
// none is left) until it has mockDegree. With n <= mockDegree+1 it is the full mesh.
func sparseTopology(n int, seed uint64) [][2]int {
	adj := make([]map[int]bool, n)
	for i := range adj {
		adj[i] = map[int]bool{}
	}
	link := func(i, j int) {
		if i != j {
			adj[i][j], adj[j][i] = true, true
		}
	}
	for i := 0; i < n; i++ {
		link(i, (i+1)%n)
	}
	target := min(mockDegree, n-1)
	rng := rand.New(rand.NewPCG(seed, 0x6d6f636b6e6574))
	cands := make([]int, 0, n)
	for _, i := range rng.Perm(n) {
		for len(adj[i]) < target {
			cands = cands[:0]
			for j := 0; j < n; j++ {
				if j != i && !adj[i][j] && len(adj[j]) < mockMaxDegree {
					cands = append(cands, j)
				}
			}
			if len(cands) == 0 {
				for j := 0; j < n; j++ {
					if j != i && !adj[i][j] {
						cands = append(cands, j)
					}
				}
			}
			if len(cands) == 0 {
				break
			}
			link(i, cands[rng.IntN(len(cands))])
		}
	}
	var edges [][2]int
	for i := range adj {
		for j := range adj[i] {
			if i < j {
				edges = append(edges, [2]int{i, j})
			}
		}
	}
	slices.SortFunc(edges, func(a, b [2]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		return a[1] - b[1]
	})
	return edges
}

// ---- What a broadcast run does and measures, the same for both stacks ----

// bcastSpec is the workload of one broadcast run: message k is Payloads[k], published
// by node Publishers[k] at (first publish) + k*Gap.
type bcastSpec struct {
	Publishers []int    // per message, the index of the publishing node
	Payloads   [][]byte // per message; the first 8 bytes are k, big-endian (see payloadSeq)
	Gap        time.Duration
	// Settle is quiet time twice over: after the overlay has formed and before the
	// first publish, and after the last delivery (or Timeout) so that late copies and
	// control traffic are counted.
	Settle time.Duration
	// Timeout bounds the wait for the overlay to form, and the wait for every delivery
	// after the last publish.
	Timeout time.Duration
}

// Defaults of makeSpec.
const (
	bcastDefaultPayload = 1024
	bcastDefaultGap     = 100 * time.Millisecond
	bcastDefaultSettle  = 2 * time.Second
	bcastDefaultTimeout = 30 * time.Second
)

// makeSpec makes a deterministic workload: `publishers` distinct nodes drawn from n by
// seed publish msgs messages in turn (message k from the (k mod publishers)-th), each
// payload `size` bytes (bcastDefaultPayload if size is 0; at least 8): the sequence
// number k big-endian, then seeded random bytes. Gap, Settle and Timeout get the
// defaults above; callers may change them.
func makeSpec(n, msgs, size, publishers int, seed uint64) (bcastSpec, error) {
	if size == 0 {
		size = bcastDefaultPayload
	}
	switch {
	case n < 2:
		return bcastSpec{}, fmt.Errorf("spec: %d nodes, need at least 2", n)
	case msgs < 1:
		return bcastSpec{}, fmt.Errorf("spec: %d messages, need at least 1", msgs)
	case size < 8:
		return bcastSpec{}, fmt.Errorf("spec: payload of %d bytes, need at least 8 for the sequence number", size)
	case publishers < 1 || publishers > n:
		return bcastSpec{}, fmt.Errorf("spec: %d publishers, need 1 to %d", publishers, n)
	}
	rng := rand.New(rand.NewPCG(seed, 0x62636173747370))
	pubs := rng.Perm(n)[:publishers]
	spec := bcastSpec{Gap: bcastDefaultGap, Settle: bcastDefaultSettle, Timeout: bcastDefaultTimeout}
	for k := 0; k < msgs; k++ {
		spec.Publishers = append(spec.Publishers, pubs[k%publishers])
		p := make([]byte, size)
		binary.BigEndian.PutUint64(p, uint64(k))
		for i := 8; i < size; i++ {
			p[i] = byte(rng.Uint32())
		}
		spec.Payloads = append(spec.Payloads, p)
	}
	return spec, nil
}

// payloadSeq reads the message number from a payload of spec (its first 8 bytes).
func payloadSeq(b []byte, msgs int) (int, bool) {
	if len(b) < 8 {
		return 0, false
	}
	k := binary.BigEndian.Uint64(b)
	if k >= uint64(msgs) {
		return 0, false
	}
	return int(k), true
}

// latencyFig is a distribution in milliseconds.
type latencyFig struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	Max float64 `json:"max"`
}

// bcastRow is what one stack achieved on one run. Latencies are real time on mocknet
// and vary from run to run; wall-clock time of the run is kept out of the JSON.
type bcastRow struct {
	Stack        string  `json:"stack"`
	N            int     `json:"n"`
	LinkLatency  float64 `json:"link_latency_ms"` // one-way, every link
	Msgs         int     `json:"msgs"`            // broadcasts
	Publishers   int     `json:"publishers"`      // distinct publishing nodes
	PayloadBytes int     `json:"payload_bytes"`   // application payload per broadcast
	// Delivery is the fraction of (node, message) pairs delivered to the application,
	// the publisher's own message excluded: Deliveries / (Msgs * (N-1)).
	Delivery   float64 `json:"delivery"`
	Deliveries int     `json:"deliveries"`
	// ExactlyOnce: no (node, message) delivered to the application twice.
	ExactlyOnce bool `json:"exactly_once"`
	Duplicates  int  `json:"duplicate_deliveries"`
	// LatencyLast: per message, publish to the last receiver's delivery; the
	// distribution over messages delivered to at least one receiver.
	LatencyLast latencyFig `json:"latency_last_ms"`
	// LatencyMean: mean over all deliveries of publish to delivery.
	LatencyMean float64 `json:"latency_mean_ms"`
	// RMR, relative message redundancy: per message, payload copies received over the
	// network (by any node, the publisher included) / receivers - 1, averaged over
	// messages with at least one receiver. 0 means one copy per receiver.
	RMR float64 `json:"rmr"`
	// CopiesRecv and CopiesSent: payload copies of the run's messages received and
	// sent over the network (sent counts copies queued to a peer).
	CopiesRecv int `json:"copies_recv"`
	CopiesSent int `json:"copies_sent"`
	// CopiesDropped: payload copies the stack dropped instead of sending (a full
	// outgoing queue to a peer).
	CopiesDropped int `json:"copies_dropped"`
	// ControlPerMsg: control items received over the network while measuring (from the
	// first publish to the end of the trailing Settle), per broadcast; an item is one
	// message ID of an IHAVE/IWANT/IDONTWANT or one GRAFT/PRUNE entry (for GossipSub).
	ControlPerMsg float64            `json:"control_per_msg"`
	ControlByKind map[string]float64 `json:"control_per_msg_by_kind,omitempty"`
	// NetBytesPerMsg: bytes of every message received over the network while measuring
	// (payload copies and control, framing excluded), per broadcast.
	NetBytesPerMsg float64 `json:"net_bytes_per_msg"`

	// Wall is the wall-clock time of the whole run (set-up included) and Lag the
	// scheduling lag while measuring; neither is in the JSON (print them to stderr).
	Wall time.Duration `json:"-"`
	Lag  lagStats      `json:"-"`
}

// bcastTrace is the raw record of one run that summarise reduces to a row.
type bcastTrace struct {
	Published  []time.Time   // per message; zero if it was never published
	Delivered  [][]time.Time // [node][message] first delivery to the application; zero if none
	Duplicates int           // deliveries to the application beyond the first, over all pairs
	CopiesRecv []int         // per message, payload copies received over the network
	CopiesSent []int         // per message, payload copies sent over the network
	Dropped    []int         // per message, payload copies dropped before sending
	Control    map[string]int
	NetBytes   int64
}

// summarise turns a trace of a run of spec on n nodes into a row. Percentiles are
// nearest-rank (the ceil(p*k)-th smallest of k values); milliseconds are rounded to
// the microsecond, fractions to 4 decimals, per-message ratios to 3.
func summarise(stack string, n int, linkLatency time.Duration, spec bcastSpec, tr bcastTrace) bcastRow {
	msgs := len(spec.Payloads)
	row := bcastRow{
		Stack: stack, N: n, LinkLatency: ms(linkLatency), Msgs: msgs, Duplicates: tr.Duplicates,
		ExactlyOnce: tr.Duplicates == 0,
	}
	distinct := map[int]bool{}
	for _, p := range spec.Publishers {
		distinct[p] = true
	}
	row.Publishers = len(distinct)
	if msgs > 0 {
		row.PayloadBytes = len(spec.Payloads[0])
	}
	var lasts []float64
	var sumLat float64
	var rmrSum float64
	rmrMsgs := 0
	for k := 0; k < msgs; k++ {
		if k < len(tr.CopiesRecv) {
			row.CopiesRecv += tr.CopiesRecv[k]
		}
		if k < len(tr.CopiesSent) {
			row.CopiesSent += tr.CopiesSent[k]
		}
		if k < len(tr.Dropped) {
			row.CopiesDropped += tr.Dropped[k]
		}
		if k >= len(tr.Published) || tr.Published[k].IsZero() {
			continue
		}
		pub := tr.Published[k]
		receivers := 0
		var last time.Duration
		for node := range tr.Delivered {
			if node == spec.Publishers[k] || k >= len(tr.Delivered[node]) || tr.Delivered[node][k].IsZero() {
				continue
			}
			d := tr.Delivered[node][k].Sub(pub)
			receivers++
			sumLat += ms(d)
			last = max(last, d)
		}
		row.Deliveries += receivers
		if receivers > 0 {
			lasts = append(lasts, ms(last))
			copies := 0
			if k < len(tr.CopiesRecv) {
				copies = tr.CopiesRecv[k]
			}
			rmrSum += float64(copies)/float64(receivers) - 1
			rmrMsgs++
		}
	}
	if pairs := msgs * (n - 1); pairs > 0 {
		row.Delivery = round4(float64(row.Deliveries) / float64(pairs))
	}
	if row.Deliveries > 0 {
		row.LatencyMean = round3(sumLat / float64(row.Deliveries))
	}
	if len(lasts) > 0 {
		sort.Float64s(lasts)
		row.LatencyLast = latencyFig{P50: round3(percentile(lasts, 0.5)), P95: round3(percentile(lasts, 0.95)), Max: round3(lasts[len(lasts)-1])}
	}
	if rmrMsgs > 0 {
		row.RMR = round3(rmrSum / float64(rmrMsgs))
	}
	if msgs > 0 {
		total := 0
		for kind, c := range tr.Control {
			total += c
			if c > 0 {
				if row.ControlByKind == nil {
					row.ControlByKind = map[string]float64{}
				}
				row.ControlByKind[kind] = round3(float64(c) / float64(msgs))
			}
		}
		row.ControlPerMsg = round3(float64(total) / float64(msgs))
		row.NetBytesPerMsg = math.Round(float64(tr.NetBytes) / float64(msgs))
	}
	return row
}

// percentile is the nearest-rank p-quantile of sorted (non-empty) values.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// bcastRecorder fills a bcastTrace from a running stack's callbacks; safe for
// concurrent use. Copies, control and bytes are counted only between startMeasuring
// and stopMeasuring; deliveries and publishes always.
type bcastRecorder struct {
	spec      bcastSpec
	measuring atomic.Bool

	mu      sync.Mutex
	tr      bcastTrace
	pending int // (node, message) pairs, publisher excluded, not delivered yet
	allDone chan struct{}
}

func newBcastRecorder(n int, spec bcastSpec) *bcastRecorder {
	msgs := len(spec.Payloads)
	r := &bcastRecorder{
		spec:    spec,
		pending: msgs * (n - 1),
		allDone: make(chan struct{}),
		tr: bcastTrace{
			Published:  make([]time.Time, msgs),
			Delivered:  make([][]time.Time, n),
			CopiesRecv: make([]int, msgs),
			CopiesSent: make([]int, msgs),
			Dropped:    make([]int, msgs),
			Control:    map[string]int{},
		},
	}
	for i := range r.tr.Delivered {
		r.tr.Delivered[i] = make([]time.Time, msgs)
	}
	if r.pending <= 0 {
		close(r.allDone)
	}
	return r
}

func (r *bcastRecorder) startMeasuring() { r.measuring.Store(true) }
func (r *bcastRecorder) stopMeasuring()  { r.measuring.Store(false) }

// published records that message k was handed to the stack at t.
func (r *bcastRecorder) published(k int, t time.Time) {
	r.mu.Lock()
	r.tr.Published[k] = t
	r.mu.Unlock()
}

// delivered records that node delivered message k to the application at t.
func (r *bcastRecorder) delivered(node, k int, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.tr.Delivered[node][k].IsZero() {
		r.tr.Duplicates++
		return
	}
	r.tr.Delivered[node][k] = t
	if node != r.spec.Publishers[k] {
		r.pending--
		if r.pending == 0 {
			close(r.allDone)
		}
	}
}

// copyRecv, copySent and copyDropped count a payload copy of message k received or
// sent over the network, or dropped by the sender.
func (r *bcastRecorder) copyRecv(k int) {
	if r.measuring.Load() {
		r.mu.Lock()
		r.tr.CopiesRecv[k]++
		r.mu.Unlock()
	}
}

func (r *bcastRecorder) copySent(k int) {
	if r.measuring.Load() {
		r.mu.Lock()
		r.tr.CopiesSent[k]++
		r.mu.Unlock()
	}
}

func (r *bcastRecorder) copyDropped(k int) {
	if r.measuring.Load() {
		r.mu.Lock()
		r.tr.Dropped[k]++
		r.mu.Unlock()
	}
}

// received counts one message received over the network: its size in bytes and its
// control items by kind.
func (r *bcastRecorder) received(bytes int, control map[string]int) {
	if !r.measuring.Load() {
		return
	}
	r.mu.Lock()
	r.tr.NetBytes += int64(bytes)
	for kind, c := range control {
		r.tr.Control[kind] += c
	}
	r.mu.Unlock()
}

// done is closed once every node has delivered every message it did not publish.
func (r *bcastRecorder) done() <-chan struct{} { return r.allDone }

// trace returns a copy of what was recorded.
func (r *bcastRecorder) trace() bcastTrace {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tr
	t.Published = slices.Clone(t.Published)
	t.Delivered = make([][]time.Time, len(r.tr.Delivered))
	for i, d := range r.tr.Delivered {
		t.Delivered[i] = slices.Clone(d)
	}
	t.CopiesRecv = slices.Clone(t.CopiesRecv)
	t.CopiesSent = slices.Clone(t.CopiesSent)
	t.Dropped = slices.Clone(t.Dropped)
	t.Control = make(map[string]int, len(r.tr.Control))
	for k, v := range r.tr.Control {
		t.Control[k] = v
	}
	return t
}

// publishAll publishes spec's messages at spec.Gap through publish(node, payload),
// recording each publish time just before the call; it stops at the first error.
func publishAll(ctx context.Context, spec bcastSpec, rec *bcastRecorder, publish func(ctx context.Context, node int, payload []byte) error) error {
	start := time.Now()
	for k, payload := range spec.Payloads {
		if wait := time.Until(start.Add(time.Duration(k) * spec.Gap)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		rec.published(k, time.Now())
		if err := publish(ctx, spec.Publishers[k], payload); err != nil {
			return fmt.Errorf("publish message %d from node %d: %w", k, spec.Publishers[k], err)
		}
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lagStats is how late a 1 ms sleep woke up, over a measurement: the scheduling lag the
// process suffered. Mocknet latencies are real time, so a run whose P99 or Max is a
// sizeable fraction of the link latency (a machine shared with other work) measured
// the machine as much as the protocol.
type lagStats struct {
	P50, P99, Max time.Duration
	Samples       int
}

func (l lagStats) String() string {
	return fmt.Sprintf("scheduling lag p50 %v p99 %v max %v (%d samples)",
		l.P50.Round(time.Microsecond), l.P99.Round(time.Microsecond), l.Max.Round(time.Microsecond), l.Samples)
}

// startLagProbe sleeps 1 ms in a loop until the returned stop is called, which returns
// how late the wake-ups were.
func startLagProbe() (stop func() lagStats) {
	quit := make(chan struct{})
	res := make(chan lagStats, 1)
	go func() {
		var lags []time.Duration
		for {
			t0 := time.Now()
			t := time.NewTimer(time.Millisecond)
			select {
			case <-quit:
				t.Stop()
				var st lagStats
				if len(lags) > 0 {
					slices.Sort(lags)
					st = lagStats{P50: lags[len(lags)/2], P99: lags[len(lags)*99/100], Max: lags[len(lags)-1], Samples: len(lags)}
				}
				res <- st
				return
			case <-t.C: // the time sent on C is when the timer fired, not when we woke
				lags = append(lags, max(0, time.Since(t0)-time.Millisecond))
			}
		}
	}()
	var once sync.Once
	var st lagStats
	return func() lagStats {
		once.Do(func() {
			close(quit)
			st = <-res
		})
		return st
	}
}
