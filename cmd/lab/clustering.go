package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// clusteringRunners holds one runner per clustering protocol; each protocol's file
// registers its own in init (clustering_tman.go, clustering_xbot.go). A runner gets
// the experiment's arguments without -protocol.
var clusteringRunners = map[string]func(args []string, p *progress) (any, []plotSpec, error){}

func init() {
	experiments["clustering"] = experiment{
		summary: "clustering (T-Man, X-BOT) stacked on a membership: cycles until views are ideal, link cost before and after, connectivity",
		run:     runClustering,
	}
}

// runClustering takes -protocol NAME out of args and hands the rest to NAME's runner.
func runClustering(args []string, p *progress) (any, []plotSpec, error) {
	name := ""
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := strings.TrimPrefix(args[i], "-")
		a = strings.TrimPrefix(a, "-")
		switch {
		case a == "protocol":
			if i+1 >= len(args) {
				return nil, nil, errors.New("-protocol needs a name")
			}
			name = args[i+1]
			i++
		case strings.HasPrefix(a, "protocol="):
			name = strings.TrimPrefix(a, "protocol=")
		default:
			rest = append(rest, args[i])
		}
	}
	names := make([]string, 0, len(clusteringRunners))
	for n := range clusteringRunners {
		names = append(names, n)
	}
	sort.Strings(names)
	run, ok := clusteringRunners[name]
	if !ok {
		return nil, nil, fmt.Errorf("clustering: give -protocol, one of %s", strings.Join(names, ", "))
	}
	return run(rest, p)
}
