package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	unsserv "github.com/unsserv/go-unsserv"
)

// The search and clustering services of a demo peer: search runs under the network's
// id (/unsserv/search/<network>), clustering too (/unsserv/clustering/<network>), with
// the rank the -rank flag names.

// rankNames are the ranks of the -rank flag.
const rankNames = "rtt (measured round-trip time) or port (distance between listen ports, the quickstart's example)"

// demoRank returns the rank function named by name for node n.
func (n *node) demoRank(ctx context.Context, name string) (func(unsserv.Node) float64, error) {
	switch name {
	case "", "rtt":
		return unsserv.RTTRank(ctx, n.h), nil
	case "port":
		mine, ok := firstPort(n.h.Addrs())
		if !ok {
			return nil, errors.New("-rank port: this peer listens on no TCP or UDP port")
		}
		return portDistance(mine), nil
	}
	return nil, fmt.Errorf("-rank %q: use %s", name, rankNames)
}

// portDistance is the quickstart's port_distance in Go: how far a node's port is from
// mine. It is the absolute difference: the Python example's signed my_port - port
// would rank every higher port better than the nearest one. Nodes without a port rank
// last.
func portDistance(mine int) func(unsserv.Node) float64 {
	return func(nd unsserv.Node) float64 {
		p, ok := firstPort(nd.Addrs)
		if !ok {
			return math.Inf(1)
		}
		return math.Abs(float64(mine - p))
	}
}

// firstPort returns the TCP or UDP port of the first address that has one.
func firstPort(addrs []ma.Multiaddr) (int, bool) {
	for _, a := range addrs {
		for _, code := range []int{ma.P_TCP, ma.P_UDP} {
			if v, err := a.ValueForProtocol(code); err == nil {
				if p, err := strconv.Atoi(v); err == nil {
					return p, true
				}
			}
		}
	}
	return 0, false
}

// startSearchAndClustering starts the search and clustering services of a node.
func (n *node) startSearchAndClustering(ctx context.Context) error {
	se, err := unsserv.NewSearch(ctx, n.m, n.cfg.network)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	n.se = se
	rank, err := n.demoRank(ctx, n.cfg.rank)
	if err != nil {
		return err
	}
	cl, err := unsserv.NewClustering(ctx, n.m, n.cfg.network, rank)
	if err != nil {
		return fmt.Errorf("clustering: %w", err)
	}
	n.cl = cl
	return nil
}

// stopSearchAndClustering leaves the search and clustering services.
func (n *node) stopSearchAndClustering() {
	if n.se != nil {
		if err := n.se.Leave(); err != nil {
			log.Warnw("leave search", "err", err)
		}
	}
	if n.cl != nil {
		if err := n.cl.Leave(); err != nil {
			log.Warnw("leave clustering", "err", err)
		}
	}
}

// searchTimeout bounds a search command.
const searchTimeout = 10 * time.Second

// publish makes TEXT findable under ID; rest is "ID TEXT".
func (n *node) publish(ctx context.Context, rest string) error {
	id, text, _ := strings.Cut(strings.TrimSpace(rest), " ")
	if id == "" {
		return errors.New("usage: publish ID TEXT")
	}
	return n.se.Publish(ctx, id, []byte(strings.TrimSpace(text)))
}

// search looks for id in the network, for at most searchTimeout.
func (n *node) search(ctx context.Context, id string) (unsserv.SearchResult, error) {
	id = strings.TrimSpace(id)
	if id == "" || strings.ContainsAny(id, " \t") {
		return unsserv.SearchResult{}, errors.New("usage: search ID")
	}
	ctx, cancel := context.WithTimeout(ctx, searchTimeout)
	defer cancel()
	return n.se.Search(ctx, id)
}

// foundLine is the answer line of the search command:
// found <id> from <peer-id> (hops H): <text>.
func foundLine(id string, r unsserv.SearchResult) string {
	return fmt.Sprintf("found %s from %s (hops %d): %s", id, r.From.ID, r.Hops, oneLine(string(r.Data)))
}

// clusterLines are the answer lines of the cluster command, best ranked first:
// cluster (<count>): and then cluster <peer-id> rank <rank> for each.
func (n *node) clusterLines() []string {
	rs := n.cl.Ranked()
	ls := []string{fmt.Sprintf("cluster (%d):", len(rs))}
	for _, r := range rs {
		ls = append(ls, fmt.Sprintf("cluster %s rank %s", r.ID, strconv.FormatFloat(r.Rank, 'g', 6, 64)))
	}
	return ls
}

// searchCommand runs the publish, unpublish, search and cluster commands; handled is
// false for other commands.
func (n *node) searchCommand(ctx context.Context, name, rest string) (handled bool, err error) {
	switch name {
	case "publish":
		err = n.publish(ctx, rest)
	case "unpublish":
		id := strings.TrimSpace(rest)
		if id == "" {
			return true, errors.New("usage: unpublish ID")
		}
		err = n.se.Unpublish(ctx, id)
	case "search":
		r, serr := n.search(ctx, rest)
		if serr != nil {
			return true, serr
		}
		n.out.line("%s", foundLine(strings.TrimSpace(rest), r))
	case "cluster":
		n.out.lines(n.clusterLines())
	default:
		return false, nil
	}
	return true, err
}

type searchJSON struct {
	ID   string `json:"id"`
	Data string `json:"data"`
	From string `json:"from"`
	Hops int    `json:"hops"`
}

type rankedJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
	Rank  float64  `json:"rank"`
}

type clusterJSON struct {
	Count      int          `json:"count"`
	Neighbours []rankedJSON `json:"neighbours"` // best ranked first
}

// searchHandlers adds POST /publish/{id}, POST /unpublish/{id}, GET /search/{id} and
// GET /cluster to mux.
func (n *node) searchHandlers(mux *http.ServeMux) {
	fail := func(w http.ResponseWriter, status int, what string, err error) {
		writeJSON(w, status, map[string]string{"error": what + ": " + err.Error()})
	}
	mux.HandleFunc("POST /publish/{id}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
		if err != nil {
			fail(w, http.StatusRequestEntityTooLarge, "publish", err)
			return
		}
		if err := n.se.Publish(r.Context(), r.PathValue("id"), body); err != nil {
			fail(w, http.StatusBadRequest, "publish", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"ok": "publish"})
	})
	mux.HandleFunc("POST /unpublish/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := n.se.Unpublish(r.Context(), r.PathValue("id")); err != nil {
			fail(w, http.StatusBadRequest, "unpublish", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"ok": "unpublish"})
	})
	mux.HandleFunc("GET /search/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		res, err := n.search(r.Context(), id)
		switch {
		case errors.Is(err, unsserv.ErrNotFound):
			fail(w, http.StatusNotFound, "search", err)
		case err != nil:
			fail(w, http.StatusServiceUnavailable, "search", err)
		default:
			writeJSON(w, http.StatusOK, searchJSON{ID: id, Data: string(res.Data), From: res.From.ID.String(), Hops: res.Hops})
		}
	})
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) {
		rs := n.cl.Ranked()
		out := clusterJSON{Count: len(rs), Neighbours: []rankedJSON{}}
		for _, x := range rs {
			j := rankedJSON{ID: x.ID.String(), Addrs: []string{}, Rank: x.Rank}
			if math.IsInf(j.Rank, 0) || math.IsNaN(j.Rank) {
				j.Rank = math.MaxFloat64 // JSON has no infinity
			}
			for _, a := range x.Addrs {
				j.Addrs = append(j.Addrs, a.String())
			}
			out.Neighbours = append(out.Neighbours, j)
		}
		writeJSON(w, http.StatusOK, out)
	})
}
