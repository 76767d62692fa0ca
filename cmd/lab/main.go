// Command lab runs named experiments in the simulator and prints their figures.
//
//	lab membership -protocol hyparview -n 10000 -fail 0.8 -seed 1 -cycles 50 [-out DIR]
//	lab membership -protocol hyparview,newscast -fail 0.1,0.2,...,0.95 -out docs/results
//
// The last line of standard output is one JSON object with the experiment's figures.
// Only seeded, simulated figures go there, so the same command and seed print the same
// line. Wall time, memory and progress go to standard error. With -out DIR the JSON is
// also written to DIR/<experiment>.json with a plot per figure (SVG).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// experiment runs with its own flags and returns its figures (JSON-encodable, with no
// wall-clock value in it) and the plots to draw from them.
type experiment struct {
	summary string
	run     func(args []string, progress *progress) (result any, plots []plotSpec, err error)
}

var experiments = map[string]experiment{
	"broadcast": {
		summary: "broadcast cores (Plumtree, ...) stacked on HyParView or Newscast: reliability, RMR, last delivery hop under failures and loss",
		run:     runBroadcast,
	},
	"membership": {
		summary: "HyParView or Newscast overlay: joins, steady state, mass failure, recovery per cycle",
		run:     runMembership,
	},
	"stream": {
		summary: "one publisher's sustained stream over real QUIC or TCP hosts on loopback: messages/s delivered to all, CPU per message",
		run:     runStream,
	},
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: lab <experiment> [flags]   (lab <experiment> -h for its flags)")
	fmt.Fprintln(w, "\nExperiments:")
	names := make([]string, 0, len(experiments))
	for n := range experiments {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, experiments[n].summary)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("name an experiment")
		}
		return flag.ErrHelp
	}
	name := args[0]
	exp, ok := experiments[name]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown experiment %q", name)
	}
	// -out is common to every experiment; take it out before the experiment's flags.
	var out string
	rest := make([]string, 0, len(args)-1)
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-out" || a == "--out":
			if i+1 >= len(args) {
				return errors.New("-out needs a directory")
			}
			out = args[i+1]
			i++
		case strings.HasPrefix(a, "-out=") || strings.HasPrefix(a, "--out="):
			out = a[strings.Index(a, "=")+1:]
		default:
			rest = append(rest, a)
		}
	}
	start := time.Now()
	prog := newProgress(stderr)
	result, plots, err := exp.run(rest, prog)
	prog.done()
	if err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(stderr, "lab %s: wall time %v, peak heap in use about %.0f MiB (Sys %.0f MiB)\n",
		name, time.Since(start).Round(time.Millisecond), float64(ms.HeapSys)/(1<<20), float64(ms.Sys)/(1<<20))
	line, err := json.Marshal(result)
	if err != nil {
		return err
	}
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		pretty, _ := json.MarshalIndent(result, "", "  ")
		if err := os.WriteFile(filepath.Join(out, name+".json"), append(pretty, '\n'), 0o644); err != nil {
			return err
		}
		for _, p := range plots {
			path := filepath.Join(out, p.file)
			if err := p.save(path); err != nil {
				return fmt.Errorf("plot %s: %w", path, err)
			}
			fmt.Fprintf(stderr, "wrote %s\n", path)
		}
	}
	fmt.Fprintln(stdout, string(line))
	return nil
}

// progress prints a line to stderr at most every 2 s for long runs.
type progress struct {
	w     io.Writer
	start time.Time
	last  time.Time
	any   bool
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now(), last: time.Now()} }

func (p *progress) update(format string, a ...any) {
	if p == nil || time.Since(p.last) < 2*time.Second {
		return
	}
	p.last = time.Now()
	p.any = true
	fmt.Fprintf(p.w, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, a...))
}

func (p *progress) done() {}
