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
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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
	select {
	case q := <-questions:
		if q != dnsHost+"."+dnsDomain+"." {
			t.Errorf("the server was asked %q", q)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the DNS server on the IPv4 side saw no question")
	}

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
		var link int
		if err := e.tp.Client.Do(func() error {
			ifi, err := net.InterfaceByName(clientTUN)
			if err == nil {
				link = ifi.Index
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		want := []string{
			fmt.Sprintf("SetLinkDNS %d [{2 %v}]", link, v4[:]),
			fmt.Sprintf("SetLinkDomains %d [{%s false}]", link, dnsDomain),
			fmt.Sprintf("SetLinkDefaultRoute %d true", link),
			"FlushCaches",
		}
		if got := fake.Take(); !slices.Equal(got, want) {
			t.Fatalf("up called\n%q\nwant\n%q", got, want)
		}
		if stop == "down" {
			if out, err := e.clientCmd("down"); err != nil {
				t.Fatalf("down: %v\n%s", err, out)
			}
		} else if err := e.client.signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if _, timedOut := e.client.waitExit(10 * time.Second); timedOut {
			t.Fatalf("dstm-client up did not end after %s", stop)
		}
		if got := fake.Take(); !slices.Equal(got, []string{fmt.Sprintf("RevertLink %d", link)}) {
			t.Fatalf("after %s: called %q, want the link reverted", stop, got)
		}
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, orig) {
			t.Fatalf("resolv.conf changed in resolved mode: %q %v", b, err)
		}
	}
}
