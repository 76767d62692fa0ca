package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	unsserv "github.com/unsserv/go-unsserv"
)

// The aggregates every demo peer runs over its network, each its own service
// (/unsserv/aggregation/<network>.<type>): the mean, minimum and maximum of the local
// values, and the network's size.
var demoAggregates = []unsserv.AggregateType{unsserv.Mean, unsserv.Min, unsserv.Max, unsserv.Count}

// startServices starts the aggregation, sampling, search and clustering services of a node, after its
// membership and dissemination.
func (n *node) startServices(ctx context.Context) error {
	for _, typ := range demoAggregates {
		ag, err := unsserv.NewAggregation(ctx, n.m, n.cfg.network+"."+strings.ToLower(typ.String()), n.cfg.value, typ)
		if err != nil {
			return fmt.Errorf("aggregation %s: %w", typ, err)
		}
		n.aggs = append(n.aggs, ag)
	}
	sa, err := unsserv.NewSampling(ctx, n.m, n.cfg.network)
	if err != nil {
		return fmt.Errorf("sampling: %w", err)
	}
	n.sa = sa
	return n.startSearchAndClustering(ctx)
}

// stopServices leaves the aggregation, sampling, search and clustering services.
func (n *node) stopServices() {
	n.stopSearchAndClustering()
	for _, ag := range n.aggs {
		if err := ag.Leave(); err != nil {
			log.Warnw("leave aggregation", "err", err)
		}
	}
	if n.sa != nil {
		if err := n.sa.Leave(); err != nil {
			log.Warnw("leave sampling", "err", err)
		}
	}
}

// aggregateJSON is one aggregate's estimate in the HTTP answer.
type aggregateJSON struct {
	Type  string  `json:"type"`
	Value float64 `json:"value"`
	Known bool    `json:"known"` // false while the node waits for its first epoch
	Epoch uint64  `json:"epoch"`
	Cycle int     `json:"cycle"`
}

func (n *node) aggregates() []aggregateJSON {
	out := make([]aggregateJSON, 0, len(n.aggs))
	for _, ag := range n.aggs {
		e := ag.Estimate()
		out = append(out, aggregateJSON{Type: strings.ToLower(ag.Type().String()), Value: e.Value, Known: e.Known, Epoch: e.Epoch, Cycle: e.Cycle})
	}
	return out
}

// aggregateLines are the answer lines of the aggregate command:
// aggregate <type> <value> (epoch E, cycle C).
func (n *node) aggregateLines() []string {
	var ls []string
	for _, a := range n.aggregates() {
		if !a.Known {
			ls = append(ls, fmt.Sprintf("aggregate %s unknown (waiting for an epoch)", a.Type))
			continue
		}
		ls = append(ls, fmt.Sprintf("aggregate %s %s (epoch %d, cycle %d)", a.Type, strconv.FormatFloat(a.Value, 'g', 6, 64), a.Epoch, a.Cycle))
	}
	return ls
}

// setValue sets the local value of the mean, minimum and maximum (from their next
// epoch, as the protocol says).
func (n *node) setValue(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return fmt.Errorf("set needs a number: %q", s)
	}
	for _, ag := range n.aggs {
		if ag.Type() == unsserv.Count {
			continue
		}
		if err := ag.SetValue(v); err != nil {
			return err
		}
	}
	return nil
}

// sample draws one peer of the network with the sampling service.
func (n *node) sample(ctx context.Context) (unsserv.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return n.sa.Sample(ctx)
}

func sampleLine(s unsserv.Node) string {
	addrs := make([]string, len(s.Addrs))
	for i, a := range s.Addrs {
		addrs[i] = a.String()
	}
	return strings.TrimSpace("sample " + s.ID.String() + " " + strings.Join(addrs, " "))
}

// serviceCommand runs the aggregate, set and sample commands, and the search and
// clustering ones; handled is false for other commands.
func (n *node) serviceCommand(ctx context.Context, name, rest string) (handled bool, err error) {
	switch name {
	case "aggregate", "aggregates":
		n.out.lines(n.aggregateLines())
	case "set":
		err = n.setValue(rest)
	case "sample":
		s, serr := n.sample(ctx)
		if serr != nil {
			return true, serr
		}
		n.out.line("%s", sampleLine(s))
	default:
		return n.searchCommand(ctx, name, rest)
	}
	return true, err
}

// serviceHandlers adds GET /aggregate, POST /set and GET /sample, and the search and
// clustering handlers, to mux.
func (n *node) serviceHandlers(mux *http.ServeMux) {
	n.searchHandlers(mux)
	mux.HandleFunc("GET /aggregate", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.aggregates())
	})
	mux.HandleFunc("POST /set", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1024))
		if err == nil {
			err = n.setValue(string(body))
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "set: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"ok": "set"})
	})
	mux.HandleFunc("GET /sample", func(w http.ResponseWriter, r *http.Request) {
		s, err := n.sample(r.Context())
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "sample: " + err.Error()})
			return
		}
		addrs := make([]string, len(s.Addrs))
		for i, a := range s.Addrs {
			addrs[i] = a.String()
		}
		writeJSON(w, http.StatusOK, addrsJSON{ID: s.ID.String(), Addrs: addrs})
	})
}
