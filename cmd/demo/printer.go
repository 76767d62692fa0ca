package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// printer writes whole lines to standard output from any goroutine: the reserved lines
// of the CLI contract (docs/demo.md) never interleave.
type printer struct {
	mu    sync.Mutex
	w     io.Writer
	quiet bool
}

func newPrinter(w io.Writer) *printer { return &printer{w: w} }

// line prints one line (a newline is added).
func (p *printer) line(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.quiet {
		fmt.Fprintf(p.w, format+"\n", a...)
	}
}

// lines prints several lines at once, with nothing from other goroutines between them.
func (p *printer) lines(ls []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.quiet {
		for _, l := range ls {
			fmt.Fprintln(p.w, l)
		}
	}
}

// silence drops every later line but those printed with always.
func (p *printer) silence() {
	p.mu.Lock()
	p.quiet = true
	p.mu.Unlock()
}

// always prints one line even after silence.
func (p *printer) always(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", a...)
}

// oneLine makes text safe for a line of its own: line breaks and other control
// characters become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
