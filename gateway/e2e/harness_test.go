package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstmgw/dstm/client"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/internal/netns"
)

// Fixed names and addresses of the end-to-end topology (see netns.Topology for the links).
const (
	identity    = "alice@e2e.test"
	clientTUN   = "dstmt0" // the client's TUN device (netns.Topology already uses dstmc0)
	gatewayTUN  = "dstm0"
	poolPrefix  = "100.64.0.0/24"
	innerV4     = "100.64.0.1"
	tspPort     = 3653
	metricsAddr = "127.0.0.1:9653"
	cmdTimeout  = 30 * time.Second
	logTail     = 40 // log lines printed per process when a test fails
)

// loadSources is the prefix of the load clients' addresses (see gwOptions.load), and
// legitSources that of the clients whose experience a flood from loadSources is measured by.
var (
	loadSources  = netip.MustParsePrefix("fd00:d57b::/64")
	legitSources = netip.MustParsePrefix("fd00:d57c::/64")
)

// requireE2E skips the test when the suite cannot run here (see skipReason).
func requireE2E(t *testing.T) {
	t.Helper()
	if bins.skip != "" {
		t.Skip(bins.skip)
	}
}

// gwOptions are the knobs of the gateway configuration the scenarios vary.
type gwOptions struct {
	noUDP bool // listen.udp: false — a gateway without UDP (no DTLS)
	plain bool // tep.plain_transport and a policy allowing v4v6
	// load: the settings of the load and reliability scenarios: a /16 pool, ANONYMOUS plain
	// TSP over TCP and UDP, no per-source or per-identity session bound, logs at info.
	load bool
	// prepare, when set, runs before `dstm-gateway init` (a scenario's own state directory).
	prepare func(*env)
	// connRate is tsp.connection_rate with load (0: none; the load clients all share a /64).
	connRate int
	// bgp: the server namespace runs BIRD as the site router, with no static route to the
	// pool; the gateway announces it (bgp: in its configuration), the session protected by a
	// TCP MD5 password (bgpPassword, in the file bgp-password of the scenario's directory).
	bgp bool
	// dns: the default policy pushes the server's IPv4 address as DNS server and dnsDomain
	// as search domain (not with load or plain, which write their own policy).
	dns bool
	// console: single sign-on at the OpenID provider the scenario runs (testop, in the
	// gateway namespace: consoleOP) and the web console on consolePort (console_test.go).
	console bool
	// leaseLifetime, when set, is leases.lifetime (not with load).
	leaseLifetime time.Duration
	// memoryLimit, when set, is memory_limit, e.g. "128MiB".
	memoryLimit string
}

// pool is the lease pool of the scenario.
func (o gwOptions) pool() string {
	if o.load {
		return "100.64.0.0/16"
	}
	return poolPrefix
}

// env is one scenario's world: the three namespaces, the servers, a gateway with a fresh
// state directory, and (after up) one client.
type env struct {
	t       *testing.T
	tp      *netns.Topology
	dir     string
	cfgPath string
	opts    gwOptions
	srv     *servers
	gw      *proc
	gwRuns  int
	cdir    string // client state directory
	client  *proc
	gwAddr  string // [GatewayV6]:3653
}

// newEnv builds the topology, starts the servers, initialises and starts a gateway.
func newEnv(t *testing.T, opts gwOptions) *env {
	t.Helper()
	requireE2E(t)
	var routes []netip.Prefix
	if !opts.bgp {
		routes = append(routes, netip.MustParsePrefix(opts.pool()))
	}
	tp := netns.NewTopology(t, routes...)
	// A short path: the admin socket's path must fit in sun_path (108 bytes).
	dir, err := os.MkdirTemp("", "dstm-e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{
		t: t, tp: tp, dir: dir, cfgPath: filepath.Join(dir, "gateway.yaml"), opts: opts,
		cdir:   filepath.Join(dir, "client"),
		gwAddr: netip.AddrPortFrom(tp.GatewayV6, tspPort).String(),
	}
	if opts.load {
		// Every load session has its own client address, from a prefix routed through the
		// client's main address: one neighbour entry on the gateway, not one per address
		// (the kernel's neighbour table stops at 1024).
		for _, p := range []netip.Prefix{loadSources, legitSources} {
			if err := tp.Gateway.AddRoute(p, tp.ClientV6); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.srv = startServers(t, tp.Server, tp.ServerV4)
	if err := os.WriteFile(e.cfgPath, []byte(e.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	if opts.prepare != nil {
		opts.prepare(e)
	}
	if out, err := e.gwCmd("init"); err != nil {
		t.Fatalf("dstm-gateway init: %v\n%s", err, out)
	}
	e.startGateway()
	return e
}

// config renders the gateway configuration.
func (e *env) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: %s\n", filepath.Join(e.dir, "state"))
	if e.opts.memoryLimit != "" {
		fmt.Fprintf(&b, "memory_limit: %s\n", e.opts.memoryLimit)
	}
	fmt.Fprintf(&b, "listen:\n  addresses: [%q]\n  udp: %t\n  plain_tsp: %t\n", e.gwAddr, !e.opts.noUDP, e.opts.load)
	fmt.Fprintf(&b, "tep:\n  ipv6: %s\n  inner_v4: %s\n  device: %s\n  plain_transport: %t\n",
		e.tp.GatewayV6, innerV4, gatewayTUN, e.opts.plain || e.opts.load)
	fmt.Fprintf(&b, "pools:\n  - name: default\n    prefixes: [%s]\n", e.opts.pool())
	fmt.Fprintf(&b, "ca:\n  server_names: [gw.e2e.test]\n  server_ips: [%s]\n", e.tp.GatewayV6)
	if e.opts.dns {
		fmt.Fprintf(&b, "policy:\n  default:\n    dns: [%s]\n    dns_domains: [%s]\n", e.tp.ServerV4, dnsDomain)
	}
	switch {
	case e.opts.load:
		b.WriteString("policy:\n  default:\n    transports: [v4v6, v4anyv6]\n    max_sessions: 100000\n")
		b.WriteString("leases:\n  max_sessions: 1024\n")
		fmt.Fprintf(&b, "tsp:\n  anonymous: true\n  max_sessions_per_source: 100000\n  max_handshakes: 4096\n  connection_rate: %d\n", e.opts.connRate)
		b.WriteString("log:\n  level: info\n  format: json\n")
	case e.opts.plain:
		b.WriteString("policy:\n  default:\n    transports: [v4v6, v4anyv6]\n")
		fallthrough
	default:
		b.WriteString("log:\n  level: debug\n  format: json\n")
	}
	if e.opts.leaseLifetime > 0 && !e.opts.load {
		fmt.Fprintf(&b, "leases:\n  lifetime: %s\n", e.opts.leaseLifetime)
	}
	fmt.Fprintf(&b, "metrics:\n  listen: %q\n  pprof: %t\n", metricsAddr, e.opts.load)
	if e.opts.bgp {
		fmt.Fprintf(&b, "bgp:\n  local_as: 65010\n  router_id: %s\n  neighbors:\n    - address: %s\n      as: 65000\n      password_file: %s\n",
			e.tp.GatewayV4, e.tp.ServerV4, filepath.Join(e.dir, "bgp-password"))
	}
	fmt.Fprintf(&b, "admin:\n  socket: %s\n", filepath.Join(e.dir, "admin.sock"))
	if e.opts.console {
		b.WriteString(e.consoleConfig())
	}
	return b.String()
}

// startGateway runs `dstm-gateway run` in the gateway namespace and waits for its admin API.
func (e *env) startGateway() {
	e.t.Helper()
	e.gwRuns++
	log := filepath.Join(e.dir, fmt.Sprintf("gateway-%d.log", e.gwRuns))
	e.gw = startProc(e.t, fmt.Sprintf("gateway#%d", e.gwRuns), e.tp.Gateway, log, bins.gateway, "-c", e.cfgPath, "run")
	gw := e.gw
	eventually(e.t, 20*time.Second, "the gateway's admin API", func() error {
		if gw.exited() {
			e.t.Fatalf("the gateway exited during start-up: %v", gw.err)
		}
		_, err := e.gwCmd("status")
		return err
	})
}

// gwCmd runs a dstm-gateway subcommand against this gateway's configuration and returns its
// standard output (standard error is appended on failure).
func (e *env) gwCmd(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return output(exec.CommandContext(ctx, bins.gateway, append([]string{"-c", e.cfgPath}, args...)...))
}

// clientCmd runs a dstm-client subcommand in the client namespace.
func (e *env) clientCmd(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return output(e.tp.Client.Command(ctx, bins.client, append([]string{"--state-dir", e.cdir}, args...)...))
}

func output(cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// enroll issues a token for identity and enrolls the client with it.
func (e *env) enroll() {
	e.t.Helper()
	out, err := e.gwCmd("token", identity, "--ttl", "10m", "--json")
	if err != nil {
		e.t.Fatalf("dstm-gateway token: %v", err)
	}
	var tok admin.TokenResult
	if err := json.Unmarshal(out, &tok); err != nil || tok.Token == "" || tok.Fingerprint == "" {
		e.t.Fatalf("dstm-gateway token --json: %v (%s)", err, out)
	}
	if out, err := e.clientCmd("enroll", "--gateway", e.gwAddr, "--token", tok.Token, "--fingerprint", tok.Fingerprint); err != nil {
		e.t.Fatalf("dstm-client enroll: %v\n%s", err, out)
	}
}

// up enrolls if needed, starts `dstm-client up` (with more flags, if any) and waits until its
// status is "up".
func (e *env) up(transport string, more ...string) client.Status {
	e.t.Helper()
	if _, err := os.Stat(e.cdir); err != nil {
		e.enroll()
	}
	args := append([]string{bins.client, "--state-dir", e.cdir, "--log-level", "debug", "up", "--gateway", e.gwAddr,
		"--transport", transport, "--device", clientTUN}, append(keepHostDNS(e.dir), more...)...)
	started := time.Now() // a status file a killed client left says nothing about this one
	e.client = startProc(e.t, "client", e.tp.Client, filepath.Join(e.dir, "client.log"), args...)
	return e.waitClientUp(30*time.Second, started)
}

// keepHostDNS are the flags that keep a test's client off the host's resolver file (`ip netns
// exec` shares it unless /etc/netns/NAME/resolv.conf exists): no DNS, and a file of the test's
// own if DNS is turned on. A test's later --dns and --resolv-conf flags win.
func keepHostDNS(dir string) []string {
	return []string{"--dns", "off", "--resolv-conf", filepath.Join(dir, "laptop-resolv.conf")}
}

// waitClientUp waits until the client reports "up" with a tunnel brought up after since.
func (e *env) waitClientUp(timeout time.Duration, since time.Time) client.Status {
	e.t.Helper()
	var st client.Status
	c := e.client
	eventually(e.t, timeout, "the client's tunnel", func() error {
		if c.exited() {
			e.t.Fatalf("dstm-client up exited: %v", c.err)
		}
		var err error
		if st, err = e.clientStatus(); err != nil {
			return err
		}
		if st.State != "up" {
			return fmt.Errorf("client state %q (last error %q)", st.State, st.Error)
		}
		if !st.Since.After(since) {
			return fmt.Errorf("tunnel up since %v, not after %v", st.Since, since)
		}
		return nil
	})
	return st
}

// clientStatus returns `dstm-client status --json`.
func (e *env) clientStatus() (client.Status, error) {
	var st client.Status
	out, err := e.clientCmd("status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("status --json: %w (%s)", err, out)
	}
	return st, nil
}

// sessions returns `dstm-gateway sessions --json`.
func (e *env) sessions() ([]admin.Session, error) {
	out, err := e.gwCmd("sessions", "--json")
	if err != nil {
		return nil, err
	}
	var ss []admin.Session
	if err := json.Unmarshal(out, &ss); err != nil {
		return nil, fmt.Errorf("sessions --json: %w (%s)", err, out)
	}
	return ss, nil
}

// session returns the one live session of identity.
func (e *env) session() (admin.Session, error) {
	ss, err := e.sessions()
	if err != nil {
		return admin.Session{}, err
	}
	var found []admin.Session
	for _, s := range ss {
		if s.Identity == identity {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		return admin.Session{}, fmt.Errorf("%d live sessions of %s, want 1: %+v", len(found), identity, ss)
	}
	return found[0], nil
}

// mustSession is session for the test goroutine, waiting briefly for the session to show.
func (e *env) mustSession() admin.Session {
	e.t.Helper()
	var s admin.Session
	eventually(e.t, 5*time.Second, "the gateway to list the session", func() error {
		var err error
		s, err = e.session()
		return err
	})
	return s
}

// proc is a process started in a namespace, killed in t.Cleanup if still running.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error // Wait's result; read only after done is closed
}

// startProc starts args[0] with args[1:] inside ns (`ip netns exec`, which execs the program
// so the process ID is the program's), with standard output and error in logPath.
func startProc(t *testing.T, name string, ns *netns.NS, logPath string, args ...string) *proc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.printTail(t)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// waitExit waits for the process to end and returns its exit error (nil for status 0).
func (p *proc) waitExit(timeout time.Duration) (exitErr error, timedOut bool) {
	select {
	case <-p.done:
		return p.err, false
	case <-time.After(timeout):
		return nil, true
	}
}

// killHard is kill -9 as a crash test means it: the process must be gone within 10 s.
func (p *proc) killHard(t *testing.T) {
	t.Helper()
	if err := p.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, timedOut := p.waitExit(10 * time.Second); timedOut {
		t.Fatalf("%s did not die from SIGKILL", p.name)
	}
}

// kill ends the process with SIGKILL if it still runs and reaps it.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.signal(syscall.SIGKILL)
	<-p.done
}

// printTail logs the last lines of the process's output.
func (p *proc) printTail(t *testing.T) {
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Logf("%s log: %v", p.name, err)
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > logTail {
			lines = lines[1:]
		}
	}
	t.Logf("---- last %d lines of the %s log (%s) ----\n%s", len(lines), p.name, p.logPath, strings.Join(lines, "\n"))
}

// eventually polls f every 100 ms until it returns nil, failing the test with f's last error
// after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := poll(timeout, 100*time.Millisecond, f); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
}

// poll calls f every interval until it returns nil or timeout passes; it returns f's last error.
func poll(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// consistently calls f every 200 ms for d and fails the test the first time f returns an error.
func consistently(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nsDialer dials from inside ns: the socket is created on a thread in the namespace and used
// from any goroutine afterwards.
func nsDialer(ns *netns.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			// Bounded: an HTTP transport dials on after its request ended (into a tunnel
			// that drops everything, a SYN is retried for minutes), and the namespace's
			// removal waits for the dials in flight.
			d := net.Dialer{Timeout: 10 * time.Second}
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
