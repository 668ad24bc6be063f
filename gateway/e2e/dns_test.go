package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/miekg/dns"

	"github.com/dstmgw/dstm/internal/dnsconf"
	"github.com/dstmgw/dstm/internal/dnsconf/dnsconftest"
	"github.com/dstmgw/dstm/internal/netns"
)

// The name only the DNS server on the IPv4 side knows, and its address.
const (
	dnsDomain   = "corp.e2e.test"
	dnsHost     = "intranet"
	dnsHostAddr = "198.51.100.80"
)

// startDNS serves dnsHost.dnsDomain (A: answer) on addr:53/udp in ns with a miekg/dns server
// and reports each question it receives on the returned channel (full: dropped).
func startDNS(t *testing.T, ns *netns.NS, addr, answer netip.Addr) <-chan string {
	t.Helper()
	var pc net.PacketConn
	err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(addr, 53).String())
		return err
	})
	if err != nil {
		t.Fatalf("DNS server socket: %v", err)
	}
	questions := make(chan string, 64)
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 {
			name := q.Question[0].Name
			select {
			case questions <- name:
			default:
			}
			if strings.EqualFold(name, dnsHost+"."+dnsDomain+".") && q.Question[0].Qtype == dns.TypeA {
				rr, err := dns.NewRR(name + " 60 IN A " + answer.String())
				if err == nil {
					m.Answer = append(m.Answer, rr)
				}
			} else {
				m.Rcode = dns.RcodeNameError
			}
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the DNS server did not start")
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	return questions
}

// lookup resolves name in the client namespace with the C library (getent), through the
// resolver file resolvConf: a private mount namespace binds it over /etc/resolv.conf, so the
// host's own file is never touched.
func lookup(e *env, resolvConf, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := e.tp.Client.Command(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /etc/resolv.conf && exec getent ahostsv4 "$2"`, "lookup", resolvConf, name)
	out, err := output(cmd)
	return string(out), err
}

// TestClientDNS: the gateway's policy pushes a DNS server on the IPv4 side (a miekg/dns
// server answering a name nothing else knows) and a search domain; `dstm-client up
// --dns resolv.conf` writes them into the laptop's resolver file, and a lookup of the short
// name by the C library in the laptop's namespace goes through the tunnel and resolves. The
// laptop's own file comes back byte for byte (and its mode) after `down`, after SIGTERM, and
// after a kill -9 at the next start.
func TestClientDNS(t *testing.T) {
	e := newEnv(t, gwOptions{dns: true})
	questions := startDNS(t, e.tp.Server, e.tp.ServerV4, netip.MustParseAddr(dnsHostAddr))
	path := filepath.Join(e.dir, "resolv.conf")
	orig := []byte("# the laptop's own, from DHCP\nnameserver 192.0.2.99\noptions ndots:1 timeout:1 attempts:1")
	if err := os.WriteFile(path, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	checkOriginal := func(when string) {
		t.Helper()
		b, err := os.ReadFile(path)
		fi, serr := os.Lstat(path)
		if err != nil || serr != nil || !bytes.Equal(b, orig) || fi.Mode() != 0o640 {
			t.Fatalf("%s: resolv.conf %q (%v, %v, mode %v), want the original back", when, b, err, serr, fi.Mode())
		}
		if _, err := os.Stat(filepath.Join(e.cdir, dnsconf.SavedFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: the saved original is still there (%v)", when, err)
		}
	}
	up := func() {
		t.Helper()
		st := e.up("dtls", "--dns", "resolv.conf", "--resolv-conf", path)
		if fmt.Sprint(st.DNS) != fmt.Sprintf("[%s]", e.tp.ServerV4) || fmt.Sprint(st.Domains) != "["+dnsDomain+"]" {
			t.Fatalf("status: dns %v, domains %v", st.DNS, st.Domains)
		}
		b, err := os.ReadFile(path)
		want := fmt.Sprintf("nameserver %s\nsearch %s\n", e.tp.ServerV4, dnsDomain)
		if err != nil || !bytes.HasSuffix(b, []byte(want)) {
			t.Fatalf("resolv.conf while up: %q (%v), want it to end with %q", b, err, want)
		}
	}
	down := func() {
		t.Helper()
		if out, err := e.clientCmd("down"); err != nil {
			t.Fatalf("down: %v\n%s", err, out)
		}
		if _, timedOut := e.client.waitExit(10 * time.Second); timedOut {
			t.Fatal("dstm-client up did not end")
		}
	}
	drain := func() {
		for {
			select {
			case <-questions:
			default:
				return
			}
		}
	}

	// Before up the name resolves nowhere.
	if out, err := lookup(e, path, dnsHost); err == nil {
		t.Fatalf("%s resolved before the tunnel: %s", dnsHost, out)
	}
	drain()
	up()
	out, err := lookup(e, path, dnsHost)
	if err != nil || !strings.Contains(out, dnsHostAddr) {
		t.Fatalf("lookup of %s through the tunnel: %v\n%s", dnsHost, err, out)
	}
	askedFor(t, questions, dnsHost+"."+dnsDomain+".")

	down()
	checkOriginal("after down")

	// SIGTERM
	up()
	if err := e.client.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, timedOut := e.client.waitExit(10 * time.Second); timedOut {
		t.Fatal("dstm-client up did not end on SIGTERM")
	}
	checkOriginal("after SIGTERM")

	// kill -9: the file stays replaced; the next start puts the original back first, even
	// one that leaves DNS alone.
	up()
	e.client.killHard(t)
	if b, _ := os.ReadFile(path); bytes.Equal(b, orig) {
		t.Fatal("resolv.conf restored by a killed client: the crash case proves nothing")
	}
	e.up("dtls", "--dns", "off", "--resolv-conf", path)
	checkOriginal("after a crash, at the next start (--dns off)")
	if n := countLogLines(t, e.client.logPath, "DNS configuration of an earlier run restored"); n != 1 {
		t.Errorf("%d \"DNS configuration of an earlier run restored\" lines, want 1", n)
	}
	down()
	// And once more with DNS: a crash, a restart that configures it again, down.
	up()
	e.client.killHard(t)
	up()
	if out, err := lookup(e, path, dnsHost); err != nil || !strings.Contains(out, dnsHostAddr) {
		t.Fatalf("lookup after the restart: %v\n%s", err, out)
	}
	down()
	checkOriginal("after a crash, a restart and down")
}

// countLogLines counts the lines of a JSON log whose message is msg.
func countLogLines(t *testing.T, path, msg string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte(`"message":"`+msg+`"`))
}

// TestClientDNSResolved: `dstm-client up --dns resolved` sets the tunnel device's link in
// systemd-resolved over the system bus (here a private dbus-daemon, named by
// DBUS_SYSTEM_BUS_ADDRESS, with a stand-in for resolved's Manager), with the device's index
// in the laptop's namespace, the pushed server, the search domain and the default route of a
// full tunnel; `down` and SIGTERM revert the link; the resolver file is not touched.
func TestClientDNSResolved(t *testing.T) {
	e := newEnv(t, gwOptions{dns: true})
	bus := dnsconftest.StartBus(t)
	fake := &dnsconftest.Resolved{}
	fake.Serve(t, bus)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus) // inherited by the client through ip netns exec
	path := filepath.Join(e.dir, "resolv.conf")
	orig := []byte("nameserver 192.0.2.99\n")
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	v4 := e.tp.ServerV4.As4()
	for _, stop := range []string{"down", "SIGTERM"} {
		e.up("dtls", "--dns", "resolved", "--resolv-conf", path)
		link := e.clientTUNIndex()
		want := []string{
			fmt.Sprintf("SetLinkDNS %d [{2 %v}]", link, v4[:]),
			fmt.Sprintf("SetLinkDomains %d [{%s false}]", link, dnsDomain),
			fmt.Sprintf("SetLinkDefaultRoute %d true", link),
			"FlushCaches",
		}
		if got := fake.Take(); !slices.Equal(got, want) {
			t.Fatalf("up called\n%q\nwant\n%q", got, want)
		}
		e.stopClient(stop)
		if got := fake.Take(); !slices.Equal(got, []string{fmt.Sprintf("RevertLink %d", link)}) {
			t.Fatalf("after %s: called %q, want the link reverted", stop, got)
		}
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, orig) {
			t.Fatalf("resolv.conf changed in resolved mode: %q %v", b, err)
		}
	}
}

// Where TestClientDNSRealResolved finds systemd-resolved: Debian's package (252 on bookworm)
// extracted, never installed (its postinst replaces /etc/resolv.conf with a symlink).
// .ci/run extracts it there.
const (
	resolvedDirEnv     = "DSTM_SYSTEMD_RESOLVED"
	resolvedDirDefault = "/var/cache/dstm-ci/systemd-resolved"
)

// resolvedConf keeps the test's resolved to the tunnel's link: no servers of its own, none to
// fall back to, no LLMNR or mDNS, no DNSSEC (the test's server signs nothing), the host's
// /etc/hosts left out, and no stub listener on 127.0.0.53 (the test asks over the bus).
const resolvedConf = `[Resolve]
DNS=
FallbackDNS=
Domains=
DNSSEC=no
DNSOverTLS=no
LLMNR=no
MulticastDNS=no
DNSStubListener=no
ReadEtcHosts=no
`

// resolvedScript runs as root in a private mount namespace inside the client's network
// namespace. It gives resolved a resolv.conf of its own over /etc/resolv.conf (resolved takes
// a foreign file's servers), a tmpfs over /run (its state and the drop-in configuration; the
// host's /run/systemd is not touched), and the test's bus socket at a path that nobody can
// reach (the test's temporary directories are root's alone). Then it execs resolved as its
// unit (systemd-resolved.service) runs it: as an unprivileged user, nobody here (not root, so
// resolved skips its own privilege drop and needs no systemd-resolve user), with the unit's
// three ambient capabilities (with CAP_NET_RAW it rebinds its DNS sockets' device; without
// it every UDP query fails with EPERM).
const resolvedScript = `set -e
mount --bind "$2" /etc/resolv.conf
mount -t tmpfs -o mode=0755 dstm-resolved /run
mkdir -p /run/systemd/resolve /run/systemd/resolved.conf.d
chown 65534:65534 /run/systemd/resolve
cp "$1" /run/systemd/resolved.conf.d/zz-dstm-e2e.conf
touch /run/dstm-bus
mount --bind "$3" /run/dstm-bus
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dstm-bus SYSTEMD_LOG_LEVEL=debug
caps=-all,+setpcap,+net_raw,+net_bind_service
exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=$caps --ambient-caps=$caps --bounding-set=$caps "$4"
`

// resolvedName is systemd-resolved's name on the bus.
const resolvedName = "org.freedesktop.resolve1"

// resolvedBinary returns the systemd-resolved to run; the test skips without it (fails in CI,
// where .ci/run provides it).
func resolvedBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(resolvedDirEnv)
	if dir == "" {
		dir = resolvedDirDefault
	}
	bin := filepath.Join(dir, "lib/systemd/systemd-resolved")
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("systemd-resolved not found (%v): extract Debian's package into %s (or name another directory in %s), "+
			"never install it (its postinst replaces /etc/resolv.conf): apt-get download systemd-resolved && dpkg-deb -x systemd-resolved_*.deb %s; .ci/run does",
			err, dir, resolvedDirEnv, dir)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// startResolved runs the real systemd-resolved bin in the client's namespace on the bus at addr
// (resolvedScript) and waits until it owns its name there. It is killed at the test's end,
// its log printed if the test failed.
func startResolved(t *testing.T, e *env, bin string, conn *dbus.Conn, addr string) *proc {
	t.Helper()
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		t.Logf("systemd-resolved: %s (%s)", first, bin)
	}
	sock, ok := strings.CutPrefix(addr, "unix:path=")
	if !ok {
		t.Fatalf("bus address %q is not a unix:path", addr)
	}
	sock, _, _ = strings.Cut(sock, ",")
	conf := filepath.Join(e.dir, "resolved.conf")
	resolvConf := filepath.Join(e.dir, "resolved-resolv.conf")
	if err := os.WriteFile(conf, []byte(resolvedConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resolvConf, []byte("# systemd-resolved's own: no servers\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Watch for the name before starting, so that its acquisition cannot slip by.
	sigs := make(chan *dbus.Signal, 16)
	conn.Signal(sigs)
	defer conn.RemoveSignal(sigs)
	match := []dbus.MatchOption{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, resolvedName)}
	if err := conn.AddMatchSignal(match...); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.RemoveMatchSignal(match...) }()

	p := startProc(t, "systemd-resolved", e.tp.Client, filepath.Join(e.dir, "resolved.log"),
		"unshare", "--mount", "--propagation", "private", "sh", "-c", resolvedScript, "resolved", conf, resolvConf, sock, bin)
	t.Cleanup(func() {
		if t.Failed() { // all of it, but for sd-bus's line per message (startProc adds the tail)
			b, _ := os.ReadFile(p.logPath)
			var keep []string
			for line := range strings.Lines(string(b)) {
				if !strings.HasPrefix(line, "Got message ") && !strings.HasPrefix(line, "Sent message ") {
					keep = append(keep, line)
				}
			}
			t.Logf("---- the systemd-resolved log without its D-Bus messages ----\n%s", strings.Join(keep, ""))
		}
	})
	if busNameOwned(t, conn, resolvedName) {
		return p
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-sigs:
			if s.Name == "org.freedesktop.DBus.NameOwnerChanged" && len(s.Body) == 3 && s.Body[0] == resolvedName && s.Body[2] != "" {
				return p
			}
		case <-p.done:
			t.Fatalf("systemd-resolved exited before it took %s: %v", resolvedName, p.err)
		case <-timeout:
			t.Fatalf("systemd-resolved did not take %s on the bus within 20 s", resolvedName)
		}
	}
}

// busNameOwned reports whether name has an owner on conn's bus.
func busNameOwned(t *testing.T, conn *dbus.Conn, name string) bool {
	t.Helper()
	var has bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil {
		t.Fatal(err)
	}
	return has
}

// resolvedCall calls a method of resolved's Manager (bounded: a stuck resolved fails the test).
func resolvedCall(conn *dbus.Conn, method string, args ...any) *dbus.Call {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return conn.Object(resolvedName, "/org/freedesktop/resolve1").CallWithContext(ctx, "org.freedesktop.resolve1.Manager."+method, 0, args...)
}

// resolveHostname asks resolved for name's IPv4 addresses, as `resolvectl query -4` does, and
// returns them as "ifindex address" lines.
func resolveHostname(conn *dbus.Conn, name string) ([]string, error) {
	var addrs []struct {
		IfIndex int32
		Family  int32
		Address []byte
	}
	var canonical string
	var flags uint64
	if err := resolvedCall(conn, "ResolveHostname", int32(0), name, int32(syscall.AF_INET), uint64(0)).Store(&addrs, &canonical, &flags); err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Address)
		out = append(out, fmt.Sprintf("%d %v", a.IfIndex, ip))
	}
	return out, nil
}

// resolvedLink is what resolved holds for one link (its org.freedesktop.resolve1.Link object),
// formatted as the stand-in's calls are: "[{2 [198 51 100 2]}]", "[{corp.e2e.test false}]".
type resolvedLink struct {
	DNS, Domains string
	DefaultRoute bool
	ScopesMask   uint64 // 1: unicast DNS on the link
}

// linkInResolved reads link's settings in resolved.
func linkInResolved(conn *dbus.Conn, link int) (resolvedLink, error) {
	var path dbus.ObjectPath
	if err := resolvedCall(conn, "GetLink", int32(link)).Store(&path); err != nil {
		return resolvedLink{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var props map[string]dbus.Variant
	if err := conn.Object(resolvedName, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0,
		"org.freedesktop.resolve1.Link").Store(&props); err != nil {
		return resolvedLink{}, err
	}
	var (
		l       resolvedLink
		dns     []dnsconftest.LinkDNS
		domains []dnsconftest.LinkDomain
	)
	for name, dst := range map[string]any{"DNS": &dns, "Domains": &domains, "DefaultRoute": &l.DefaultRoute, "ScopesMask": &l.ScopesMask} {
		v, ok := props[name]
		if !ok {
			return l, fmt.Errorf("link %d in resolved: no property %s", link, name)
		}
		if err := v.Store(dst); err != nil {
			return l, fmt.Errorf("link %d in resolved: %s: %w", link, name, err)
		}
	}
	l.DNS, l.Domains = fmt.Sprint(dns), fmt.Sprint(domains)
	return l, nil
}

// TestClientDNSRealResolved: TestClientDNSResolved against the real systemd-resolved (Debian's
// 252, see resolvedBinary) instead of a stand-in. It runs in the laptop's namespace on the
// test's private bus, unprivileged, in a mount namespace of its own (resolvedScript). With
// `dstm-client up --dns resolved`, resolved holds the pushed server, the search domain and the
// default route on the tunnel's link, and resolves the short name, which only the DNS server
// on the IPv4 side knows, through the tunnel; after `down` and after SIGTERM the client's
// revert has dropped the link's DNS, the name no longer resolves, and resolved runs on. The
// resolver file is not touched.
func TestClientDNSRealResolved(t *testing.T) {
	requireE2E(t)
	bin := resolvedBinary(t)
	e := newEnv(t, gwOptions{dns: true})
	bus := dnsconftest.StartBus(t)
	conn := dnsconftest.Connect(t, bus)
	resolved := startResolved(t, e, bin, conn, bus)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus) // inherited by the client through ip netns exec
	questions := startDNS(t, e.tp.Server, e.tp.ServerV4, netip.MustParseAddr(dnsHostAddr))
	path := filepath.Join(e.dir, "resolv.conf")
	orig := []byte("nameserver 192.0.2.99\n")
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	v4 := e.tp.ServerV4.As4()
	// notResolved checks that resolved has no server at all for the name.
	notResolved := func(when string) {
		t.Helper()
		got, err := resolveHostname(conn, dnsHost)
		if !isDBusError(err, "org.freedesktop.resolve1.NoNameServers") {
			t.Fatalf("%s: %s resolved to %q (%v), want org.freedesktop.resolve1.NoNameServers", when, dnsHost, got, err)
		}
	}
	notResolved("before up")

	for _, stop := range []string{"down", "SIGTERM"} {
		for len(questions) > 0 {
			<-questions
		}
		e.up("dtls", "--dns", "resolved", "--resolv-conf", path)
		link := e.clientTUNIndex()
		got, err := linkInResolved(conn, link)
		want := resolvedLink{
			DNS:          fmt.Sprintf("[{2 %v}]", v4[:]),
			Domains:      fmt.Sprintf("[{%s false}]", dnsDomain),
			DefaultRoute: true,
			ScopesMask:   1,
		}
		if err != nil || got != want {
			t.Fatalf("link %d (%s) in resolved while up: %+v (%v), want %+v", link, clientTUN, got, err, want)
		}
		addrs, err := resolveHostname(conn, dnsHost)
		if wantAddrs := []string{fmt.Sprintf("%d %s", link, dnsHostAddr)}; err != nil || !slices.Equal(addrs, wantAddrs) {
			t.Fatalf("resolved resolved %s to %q (%v), want %q", dnsHost, addrs, err, wantAddrs)
		}
		askedFor(t, questions, dnsHost+"."+dnsDomain+".")

		e.stopClient(stop)
		if n := countLogLines(t, e.client.logPath, "DNS configuration restored"); n != 1 {
			t.Errorf("after %s: %d \"DNS configuration restored\" lines in the client's log, want 1", stop, n)
		}
		if err := revertedBeforeRemoval(resolved.logPath, e.client.cmd.Process.Pid, link); err != nil {
			t.Errorf("after %s: %v", stop, err)
		}
		if resolved.exited() || !busNameOwned(t, conn, resolvedName) {
			t.Fatalf("after %s: systemd-resolved is gone (%v)", stop, resolved.err)
		}
		switch l, err := linkInResolved(conn, link); {
		case err == nil && (l.DNS != "[]" || l.Domains != "[]"):
			t.Fatalf("after %s: resolved still holds %+v for link %d", stop, l, link)
		case err != nil && !isDBusError(err, "org.freedesktop.resolve1.NoSuchLink"):
			t.Fatalf("after %s: link %d in resolved: %v", stop, link, err)
		}
		notResolved("after " + stop)
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, orig) {
			t.Fatalf("resolv.conf changed in resolved mode: %q %v", b, err)
		}
	}
}

// revertedBeforeRemoval checks in resolved's log (systemd 252's debug wording) that the client
// with pid reverted the link, and that the revert, not the device's removal that follows,
// took the link's DNS scope away: the device is gone before anyone can ask resolved about it.
func revertedBeforeRemoval(logPath string, pid, link int) error {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return err
	}
	log := string(b)
	revert := fmt.Sprintf("D-Bus revert request from client PID %d ", pid)
	i := strings.Index(log, revert)
	if i < 0 {
		return fmt.Errorf("no %q in resolved's log", revert)
	}
	log = log[i:]
	scope := strings.Index(log, "Removing scope on link "+clientTUN+", protocol dns")
	removed := strings.Index(log, fmt.Sprintf("Removing link %d/%s", link, clientTUN))
	if scope < 0 || (removed >= 0 && removed < scope) {
		return fmt.Errorf("resolved did not drop link %d's DNS scope on the revert (scope removed at %d, link at %d)", link, scope, removed)
	}
	return nil
}

// isDBusError reports whether err is the D-Bus error name.
func isDBusError(err error, name string) bool {
	var de dbus.Error
	return errors.As(err, &de) && de.Name == name
}

// clientTUNIndex is the interface index of the client's TUN device.
func (e *env) clientTUNIndex() int {
	e.t.Helper()
	var link int
	if err := e.tp.Client.Do(func() error {
		ifi, err := net.InterfaceByName(clientTUN)
		if err == nil {
			link = ifi.Index
		}
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return link
}

// stopClient ends `dstm-client up` by how ("down" or "SIGTERM") and waits for it to exit.
func (e *env) stopClient(how string) {
	e.t.Helper()
	if how == "down" {
		if out, err := e.clientCmd("down"); err != nil {
			e.t.Fatalf("down: %v\n%s", err, out)
		}
	} else if err := e.client.signal(syscall.SIGTERM); err != nil {
		e.t.Fatal(err)
	}
	if _, timedOut := e.client.waitExit(10 * time.Second); timedOut {
		e.t.Fatalf("dstm-client up did not end after %s", how)
	}
}

// askedFor waits for the DNS server on the IPv4 side to be asked for name.
func askedFor(t *testing.T, questions <-chan string, name string) {
	t.Helper()
	select {
	case q := <-questions:
		if q != name {
			t.Errorf("the server was asked %q, want %q", q, name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the DNS server on the IPv4 side saw no question")
	}
}
