package main

import (
	"bufio"
	"context"
	"io"
	"strings"
)

// commandsHelp lists the commands peer mode reads on standard input.
const commandsHelp = `Commands (one per line on standard input):
  neighbours       print the neighbours line: neighbours (<count>): <id> <id> ...
  broadcast TEXT   broadcast TEXT to every member; the others print
                   "broadcast from <this peer's id>: TEXT"
  peers            one line per libp2p connection:
                   conn <peer-id> <remote multiaddr> direct|relayed
  addrs            the addr lines: every full multiaddr others can reach this peer by
  aggregate        the network-wide aggregates of the local values:
                   aggregate mean|min|max|count <value> (epoch E, cycle C)
  set V            set this peer's value (mean, min, max) from the next epoch
  sample           a peer drawn uniformly at random: sample <peer-id> <addrs...>
  publish ID TEXT  make TEXT findable by others under ID (replaces what ID had)
  unpublish ID     stop answering searches for ID
  search ID        find ID in the network (at most 10 s):
                   found <id> from <peer-id> (hops H): <text>
  cluster          the clustered neighbours, best ranked first:
                   cluster (<count>): then cluster <peer-id> rank <rank> for each
  quit             leave the network and exit
  help             this list
Each command ends with "ok <command>" or "error <command>: <why>".
`

// readLines sends each line of r on the returned channel, which is closed at EOF or on
// a read error. The reading goroutine ends then, or at its next line once done is
// closed (a read in progress cannot be interrupted, so it is not waited for).
func readLines(r io.Reader, done <-chan struct{}) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 2<<20)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			case <-done:
				return
			}
		}
		if err := sc.Err(); err != nil {
			log.Warnw("standard input", "err", err)
		}
	}()
	return ch
}

// command runs one line of standard input and prints its answer lines, then "ok
// <command>" or "error <command>: <why>". It reports whether the command was quit
// (whose "ok quit" the caller prints once the peer has left).
func (n *node) command(ctx context.Context, line string) (quit bool) {
	line = strings.TrimSpace(line)
	if line == "" {
		return false
	}
	name, rest, _ := strings.Cut(line, " ")
	switch name {
	case "neighbours", "neighbors":
		name = "neighbours"
		n.printNeighbours(true)
	case "broadcast":
		if err := n.broadcast(ctx, strings.TrimSpace(rest)); err != nil {
			n.out.line("error broadcast: %s", oneLine(err.Error()))
			return false
		}
	case "peers":
		var ls []string
		for _, c := range conns(n.h) {
			ls = append(ls, "conn "+c.Peer+" "+c.Addr+" "+c.Kind)
		}
		n.out.lines(ls)
	case "addrs":
		n.printAddrs(true)
	case "quit", "exit":
		return true
	case "aggregate", "aggregates", "set", "sample", "publish", "unpublish", "search", "cluster":
		if _, err := n.serviceCommand(ctx, name, rest); err != nil {
			n.out.line("error %s: %s", name, oneLine(err.Error()))
			return false
		}
	case "help":
		n.out.lines(strings.Split(strings.TrimRight(commandsHelp, "\n"), "\n"))
	default:
		n.out.line("error %s: unknown command; use neighbours | broadcast TEXT | peers | addrs | aggregate | set V | sample | publish ID TEXT | unpublish ID | search ID | cluster | quit", oneLine(name))
		return false
	}
	n.out.line("ok %s", name)
	return false
}
