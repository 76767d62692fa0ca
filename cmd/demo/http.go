package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	unsserv "github.com/unsserv/go-unsserv"
)

// The HTTP/JSON endpoint (-http): the stdin commands as requests, and Prometheus.
//
//	GET  /neighbours  {"count": 2, "neighbours": [{"id": "12D3...", "addrs": ["/ip4/..."]}]}
//	GET  /peers       {"conns": [{"peer": "12D3...", "addr": "/ip4/...", "kind": "direct", "dir": "outbound"}]}
//	GET  /addrs       {"id": "12D3...", "addrs": ["/ip4/.../p2p/12D3..."]}
//	POST /broadcast   body: the text; answers {"ok": "broadcast"}, or an error status and
//	                  {"error": "..."}
//	GET  /aggregate, POST /set (body: the value), GET /sample
//	POST /publish/{id} body: the data; answers {"ok": "publish"}. POST /unpublish/{id}
//	GET  /search/{id} {"id": "x", "data": "...", "from": "12D3...", "hops": 2}, or 404 and
//	                  {"error": "..."} when not found
//	GET  /cluster     {"count": 5, "neighbours": [{"id": "12D3...", "addrs": [...], "rank": 0.4}]}
//	GET  /metrics     Prometheus text: libp2p_* (libp2p's) and unsserv_* (the services')

type neighbourJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

type neighboursJSON struct {
	Count      int             `json:"count"`
	Neighbours []neighbourJSON `json:"neighbours"`
}

type peersJSON struct {
	Conns []connInfo `json:"conns"`
}

type addrsJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// serveHTTP starts the HTTP server on addr and prints where it listens.
func (n *node) serveHTTP(addr string) error {
	l, err := listenHTTP(addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /neighbours", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, neighboursOf(n.m.Neighbours()))
	})
	mux.HandleFunc("GET /peers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, peersJSON{Conns: nonNil(conns(n.h))})
	})
	mux.HandleFunc("GET /addrs", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, addrsJSON{ID: n.h.ID().String(), Addrs: nonNil(hostAddrs(n.h))})
	})
	mux.HandleFunc("POST /broadcast", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, unsserv.DefaultMaxPayload))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("broadcast: %v (the limit is %d bytes)", err, unsserv.DefaultMaxPayload)})
			return
		}
		if err := n.broadcast(r.Context(), strings.TrimSpace(string(body))); err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, errNoNeighbours) {
				status = http.StatusServiceUnavailable
			}
			writeJSON(w, status, map[string]string{"error": "broadcast: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"ok": "broadcast"})
	})
	n.serviceHandlers(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{ErrorLog: promLogger{}}))
	n.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	n.httpDone = make(chan struct{})
	go func() {
		defer close(n.httpDone)
		if err := n.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorw("http server", "err", err)
		}
	}()
	n.out.line("http listening on http://%s", l.Addr())
	log.Infow("http endpoint", "addr", l.Addr())
	return nil
}

func neighboursOf(ns []unsserv.Node) neighboursJSON {
	out := neighboursJSON{Count: len(ns), Neighbours: []neighbourJSON{}}
	for _, nb := range ns {
		j := neighbourJSON{ID: nb.ID.String(), Addrs: []string{}}
		for _, a := range nb.Addrs {
			j.Addrs = append(j.Addrs, a.String())
		}
		out.Neighbours = append(out.Neighbours, j)
	}
	slices.SortFunc(out.Neighbours, func(a, b neighbourJSON) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// promLogger sends promhttp's errors to the demo's log.
type promLogger struct{}

func (promLogger) Println(v ...any) { log.Warn(v...) }
