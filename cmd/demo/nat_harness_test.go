package main_test

// The harness of the NAT test (nat_test.go): network namespaces with NAT routers, and
// demo processes inside them driven through stdin and read line by line from stdout.
// See docs/nat-test.md.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// natRequire skips the test where it cannot build namespaces: not Linux, not root, no
// ip or nft, or -short.
func natRequire(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("NAT test skipped in -short mode (it takes about a minute)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("NAT test needs Linux network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("NAT test needs root (network namespaces, veth, nftables); run it as root: go test -run NAT -v ./cmd/demo")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{"ip": "iproute2", "nft": "nftables"}[tool]
			t.Skipf("NAT test needs %q on PATH (Debian package %s): %v", tool, pkg, err)
		}
	}
}

// natProbe skips the test when this machine refuses `ip netns add` or nftables inside
// a namespace (root in a container without CAP_SYS_ADMIN / CAP_NET_ADMIN, a kernel
// without nf_tables).
func natProbe(t *testing.T) {
	t.Helper()
	natSweep(t)
	var rb [2]byte
	_, _ = rand.Read(rb[:])
	prefix := "un" + hex.EncodeToString(rb[:])
	ns := prefix + "-probe"
	if err := os.WriteFile(natMarker(prefix), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(natMarker(prefix))
	if _, err := natRun("ip", "netns", "add", ns); err != nil {
		t.Skipf("NAT test skipped: `ip netns add` refused here (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): %v", err)
	}
	defer natRun("ip", "netns", "del", ns)
	if _, err := natRun("ip", "netns", "exec", ns, "nft", "add", "table", "ip", "probe"); err != nil {
		t.Skipf("NAT test skipped: nftables unusable in a namespace (kernel nf_tables or rights missing): %v", err)
	}
}

// natBuildDemo builds the demo command into t.TempDir() (or takes the binary named by
// NAT_TEST_DEMO).
func natBuildDemo(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("NAT_TEST_DEMO"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "demo")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build of cmd/demo: %v\n%s", err, out)
	}
	return bin
}

// ---- commands ----

// natRun runs a command and returns its error with the combined output in it.
func natRun(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// natLacksRights tells errors that come from missing rights or kernel support (skip)
// from real failures.
func natLacksRights(err error) bool {
	s := err.Error()
	for _, w := range []string{"Operation not permitted", "Permission denied", "not supported", "Unknown device type", "Could not process rule: No such file or directory", "Protocol not supported"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// ---- topology ----

// natKind is the NAT behaviour of both home routers.
type natKind int

const (
	natCone      natKind = iota // masquerade: port-preserving, hole punching works
	natSymmetric                // masquerade fully-random: a new port per destination
)

func (k natKind) String() string {
	if k == natSymmetric {
		return "symmetric"
	}
	return "cone"
}

// natTopo is one run's namespaces:
//
//	peera 192.168.1.2 -- nata (NAT) --+
//	                                  +-- br0 in wan, 1.2.3.0/24 -- relay 1.2.3.1, peerc 1.2.3.4
//	peerb 192.168.2.2 -- natb (NAT) --+
//
// nata is 1.2.3.2 and natb 1.2.3.3 on the wan side. Nothing routes out of the wan.
type natTopo struct {
	prefix string
	made   []string // namespaces created, in order

	mu    sync.Mutex
	procs []*natProc // started in the namespaces, stopped before teardown
}

func (tp *natTopo) ns(role string) string { return tp.prefix + "-" + role }

// natRoles are the namespaces of one topology.
var natRoles = []string{"wan", "relay", "nata", "natb", "peera", "peerb", "peerc"}

// natNamePattern matches namespaces of this test (for the sweep of stale runs).
var natNamePattern = regexp.MustCompile(`^(un[0-9a-f]{4})-(wan|relay|nata|natb|peera|peerb|peerc|probe)$`)

func natMarker(prefix string) string {
	return filepath.Join(os.TempDir(), "unsserv-nat-"+prefix+".pid")
}

// natSweep deletes namespaces left by runs of this test whose process is gone (a test
// binary killed by -timeout does not run its cleanups).
func natSweep(t *testing.T) {
	out, err := natRun("ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := natNamePattern.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		if b, err := os.ReadFile(natMarker(m[1])); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				if syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
					continue // its owner still runs
				}
			}
		}
		natKillNetnsProcs(f[0])
		if _, err := natRun("ip", "netns", "del", f[0]); err == nil {
			t.Logf("removed stale namespace %s of an earlier run", f[0])
		}
		_ = os.Remove(natMarker(m[1]))
	}
}

// natKillNetnsProcs kills whatever still runs in a namespace (leftovers only).
func natKillNetnsProcs(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// natNewTopo builds the namespaces, links and NAT rules, and deletes them in t.Cleanup.
// It skips the test when namespaces or nftables are refused.
func natNewTopo(t *testing.T, kind natKind) *natTopo {
	t.Helper()
	var rb [2]byte
	_, _ = rand.Read(rb[:])
	tp := &natTopo{prefix: "un" + hex.EncodeToString(rb[:])}
	if err := os.WriteFile(natMarker(tp.prefix), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Processes first (all at once), then their output if the test failed, then
		// the namespaces.
		tp.mu.Lock()
		procs := tp.procs
		tp.mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop() }()
		}
		wg.Wait()
		if t.Failed() || os.Getenv("NAT_TEST_LOGS") != "" {
			for _, p := range procs {
				t.Log(p.dump())
			}
		}
		for i := len(tp.made) - 1; i >= 0; i-- {
			natKillNetnsProcs(tp.made[i])
			if _, err := natRun("ip", "netns", "del", tp.made[i]); err != nil {
				t.Errorf("teardown: %v", err)
			}
		}
		_ = os.Remove(natMarker(tp.prefix))
	})

	must := func(args ...string) {
		t.Helper()
		if _, err := natRun(args...); err != nil {
			if natLacksRights(err) {
				t.Skipf("NAT test skipped: the system refused a namespace step: %v", err)
			}
			t.Fatalf("building the NAT topology: %v", err)
		}
	}
	for _, r := range natRoles {
		must("ip", "netns", "add", tp.ns(r))
		tp.made = append(tp.made, tp.ns(r))
		must("ip", "-n", tp.ns(r), "link", "set", "lo", "up")
	}
	wan := tp.ns("wan")
	must("ip", "-n", wan, "link", "add", "br0", "type", "bridge")
	must("ip", "-n", wan, "link", "set", "br0", "up")
	// The internet side: one veth per node, both ends made inside their namespaces.
	for _, n := range []struct {
		role, ip string
	}{{"relay", "1.2.3.1"}, {"nata", "1.2.3.2"}, {"natb", "1.2.3.3"}, {"peerc", "1.2.3.4"}} {
		must("ip", "link", "add", n.role, "netns", wan, "type", "veth", "peer", "name", "wan0", "netns", tp.ns(n.role))
		must("ip", "-n", wan, "link", "set", n.role, "master", "br0", "up")
		must("ip", "-n", tp.ns(n.role), "addr", "add", n.ip+"/24", "dev", "wan0")
		must("ip", "-n", tp.ns(n.role), "link", "set", "wan0", "up")
	}
	// The home networks.
	for _, h := range []struct{ x, s string }{{"a", "1"}, {"b", "2"}} {
		nat, pe := tp.ns("nat"+h.x), tp.ns("peer"+h.x)
		must("ip", "link", "add", "lan0", "netns", nat, "type", "veth", "peer", "name", "eth0", "netns", pe)
		must("ip", "-n", nat, "addr", "add", "192.168."+h.s+".1/24", "dev", "lan0")
		must("ip", "-n", nat, "link", "set", "lan0", "up")
		must("ip", "-n", pe, "addr", "add", "192.168."+h.s+".2/24", "dev", "eth0")
		must("ip", "-n", pe, "link", "set", "eth0", "up")
		must("ip", "-n", pe, "route", "add", "default", "via", "192.168."+h.s+".1")
		must("ip", "netns", "exec", nat, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
		tp.nft(t, "nat"+h.x, natRules(kind))
	}
	return tp
}

// natRules is a home router's ruleset (NAT-TESTBED.md).
func natRules(kind natKind) string {
	masq := "masquerade"
	if kind == natSymmetric {
		masq = "masquerade fully-random"
	}
	return `table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" ` + masq + `
	}
}
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname { "lo", "lan0" } accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan0" oifname "wan0" accept
	}
}
`
}

// nft loads rules (nft -f -) into the namespace of role.
func (tp *natTopo) nft(t *testing.T, role, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", tp.ns(role), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		err = fmt.Errorf("nft -f in %s: %v: %s", role, err, out)
		if natLacksRights(err) {
			t.Skipf("NAT test skipped: %v", err)
		}
		t.Fatal(err)
	}
}

// outage inserts a drop-everything rule at the head of a router's forward chain and
// returns a function that removes it.
func (tp *natTopo) outage(t *testing.T, role string) (restore func()) {
	t.Helper()
	ns := tp.ns(role)
	if _, err := natRun("ip", "netns", "exec", ns, "nft", "insert", "rule", "inet", "filter", "forward", "counter", "drop", "comment", `"nat-test-outage"`); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		out, err := natRun("ip", "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", "filter", "forward")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			if !strings.Contains(l, "nat-test-outage") {
				continue
			}
			i := strings.LastIndex(l, "# handle ")
			if i < 0 {
				continue
			}
			h := strings.TrimSpace(l[i+len("# handle "):])
			t.Logf("outage rule at %s: %s", role, strings.TrimSpace(l[:i]))
			if _, err := natRun("ip", "netns", "exec", ns, "nft", "delete", "rule", "inet", "filter", "forward", "handle", h); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("outage rule not found in %s:\n%s", role, out)
	}
}

// ---- processes ----

type natLine struct {
	at   time.Time
	text string
}

// natProc is one demo process in a namespace.
type natProc struct {
	name  string
	t0    time.Time // the scenario's start, for relative times in logs
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu      sync.Mutex
	lines   []natLine
	changed chan struct{} // closed and replaced at every new line
	stderr  bytes.Buffer
	done    chan struct{} // closed when the process has exited
	exitErr error

	cmdMu sync.Mutex // one stdin command at a time

	noQuit bool // reads no commands (the relay): stop sends SIGTERM at once
}

type natStderr struct{ p *natProc }

func (w natStderr) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.stderr.Len() < 4<<20 {
		w.p.stderr.Write(b)
	}
	return len(b), nil
}

// start runs bin with args in the namespace of role. The process is stopped (quit,
// then SIGTERM, then SIGKILL) in the topology's cleanup, and its output is printed when
// the test failed.
func (tp *natTopo) start(t *testing.T, t0 time.Time, name, role, bin string, args ...string) *natProc {
	t.Helper()
	ns := tp.ns(role)
	p := &natProc{name: name, t0: t0, changed: make(chan struct{}), done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	p.cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	if os.Getenv("GOLOG_LOG_LEVEL") == "" {
		// The demo's events, hole punching and relay reservations; on the relay, the
		// end of each circuit (natNet.logCircuitCuts reads them).
		level := "error,unsserv/demo=info,p2p-holepunch=debug,autorelay=info,relay=info"
		if role == "relay" {
			level += ",relay=debug"
		}
		p.cmd.Env = append(p.cmd.Env, "GOLOG_LOG_LEVEL="+level)
	}
	// ip netns exec execs the demo in place, so the signal reaches the demo itself:
	// it dies with the test binary even when cleanups do not run.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = natStderr{p}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	tp.mu.Lock()
	tp.procs = append(tp.procs, p)
	tp.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, natLine{time.Now(), sc.Text()})
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p
}

// stop asks the process to quit, then sends SIGTERM after 3 s and SIGKILL after 3 more.
func (p *natProc) stop() {
	if p.exited() {
		return
	}
	if !p.noQuit {
		_, _ = io.WriteString(p.stdin, "quit\n")
		_ = p.stdin.Close()
		select {
		case <-p.done:
			return
		case <-time.After(3 * time.Second):
		}
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *natProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// dump is the process's stdout with times relative to the scenario start, then the
// tail of its stderr.
func (p *natProc) dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "==== %s stdout (%d lines; exit: %v)\n", p.name, len(p.lines), p.exitErr)
	for _, l := range p.lines {
		fmt.Fprintf(&b, "%7.3fs %s\n", l.at.Sub(p.t0).Seconds(), l.text)
	}
	errs := p.stderr.String()
	if len(errs) > 64<<10 {
		errs = "...\n" + errs[len(errs)-64<<10:]
	}
	fmt.Fprintf(&b, "==== %s stderr\n%s", p.name, errs)
	return b.String()
}

// mark is the index the next line will have.
func (p *natProc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// waitLine waits up to d for a line at index >= from that match accepts.
func (p *natProc) waitLine(from int, d time.Duration, match func(string) bool) (int, natLine, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if match(p.lines[i].text) {
				l := p.lines[i]
				p.mu.Unlock()
				return i, l, true
			}
		}
		from = len(p.lines)
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			// The reader closes done after the last line: one more look.
			p.mu.Lock()
			for i := from; i < len(p.lines); i++ {
				if match(p.lines[i].text) {
					l := p.lines[i]
					p.mu.Unlock()
					return i, l, true
				}
			}
			p.mu.Unlock()
			return -1, natLine{}, false
		case <-deadline.C:
			return -1, natLine{}, false
		}
	}
}

// needLine is waitLine that fails the test.
func (p *natProc) needLine(t *testing.T, from int, d time.Duration, what string, match func(string) bool) natLine {
	t.Helper()
	_, l, ok := p.waitLine(from, d, match)
	if !ok {
		if p.exited() {
			t.Fatalf("%s exited before printing %s", p.name, what)
		}
		t.Fatalf("%s printed no %s within %v", p.name, what, d)
	}
	return l
}

// command writes one stdin command and returns the lines printed up to its
// "ok <verb>" (or an error for "error <verb>: ...").
func (p *natProc) command(cmdline string, d time.Duration) ([]string, error) {
	p.cmdMu.Lock()
	defer p.cmdMu.Unlock()
	verb := strings.Fields(cmdline)[0]
	from := p.mark()
	if _, err := io.WriteString(p.stdin, cmdline+"\n"); err != nil {
		return nil, fmt.Errorf("%s: write %q: %v", p.name, cmdline, err)
	}
	i, l, ok := p.waitLine(from, d, func(s string) bool {
		return s == "ok "+verb || strings.HasPrefix(s, "ok "+verb+" ") || strings.HasPrefix(s, "error "+verb+":")
	})
	if !ok {
		return nil, fmt.Errorf("%s: no answer to %q within %v", p.name, cmdline, d)
	}
	p.mu.Lock()
	var out []string
	for _, x := range p.lines[from:i] {
		out = append(out, x.text)
	}
	p.mu.Unlock()
	if strings.HasPrefix(l.text, "error ") {
		return out, fmt.Errorf("%s: %s", p.name, l.text)
	}
	return out, nil
}

// lastNeighbours is the peer IDs of the latest "neighbours (n): ..." line.
func (p *natProc) lastNeighbours() ([]string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.lines) - 1; i >= 0; i-- {
		if ids, ok := natParseNeighbours(p.lines[i].text); ok {
			return ids, true
		}
	}
	return nil, false
}

func natParseNeighbours(s string) ([]string, bool) {
	if !strings.HasPrefix(s, "neighbours (") {
		return nil, false
	}
	i := strings.Index(s, "):")
	if i < 0 {
		return nil, false
	}
	return strings.Fields(s[i+2:]), true
}

// natConn is one "conn <peer-id> <remote multiaddr> direct|relayed" line.
type natConn struct {
	peer, addr, kind string
}

func (c natConn) direct() bool {
	return c.kind == "direct" && !strings.Contains(c.addr, "/p2p-circuit")
}

// conns runs the peers command.
func (p *natProc) conns() ([]natConn, error) {
	lines, err := p.command("peers", 10*time.Second)
	if err != nil {
		return nil, err
	}
	var out []natConn
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == "conn" {
			out = append(out, natConn{f[1], f[2], f[3]})
		}
	}
	return out, nil
}

// addrs is every "addr ..." multiaddr printed so far, without duplicates.
func (p *natProc) addrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, l := range p.lines {
		if a, ok := strings.CutPrefix(l.text, "addr "); ok && !seen[a] {
			seen[a] = true
			out = append(out, strings.TrimSpace(a))
		}
	}
	return out
}
