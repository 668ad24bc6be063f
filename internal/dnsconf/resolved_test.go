package dnsconf

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// busConfig is a private bus on which anyone may own any name and call anything.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`

// privateBus starts a dbus-daemon of its own for the test and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon is not installed (Debian: dbus-daemon)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, busConfig, filepath.Join(dir, "bus")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+cfg, "--nofork", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			t.Fatal("dbus-daemon printed no address")
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start")
	}
	return ""
}

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	c, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fakeResolved answers resolved's Manager methods the client uses, recording each call.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string
	old   bool // a resolved older than v240: no SetLinkDefaultRoute
	fail  string
}

func (f *fakeResolved) record(s string) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	if f.fail != "" && strings.HasPrefix(s, f.fail) {
		return dbus.MakeFailedError(fmt.Errorf("refused"))
	}
	return nil
}

func (f *fakeResolved) SetLinkDNS(link int32, servers []linkDNS) *dbus.Error {
	return f.record(fmt.Sprintf("SetLinkDNS %d %v", link, servers))
}

func (f *fakeResolved) SetLinkDomains(link int32, domains []linkDomain) *dbus.Error {
	return f.record(fmt.Sprintf("SetLinkDomains %d %v", link, domains))
}

func (f *fakeResolved) RevertLink(link int32) *dbus.Error {
	return f.record(fmt.Sprintf("RevertLink %d", link))
}

func (f *fakeResolved) FlushCaches() *dbus.Error { return f.record("FlushCaches") }

// newerResolved adds the method resolved has since v240.
type newerResolved struct{ *fakeResolved }

func (f newerResolved) SetLinkDefaultRoute(link int32, on bool) *dbus.Error {
	return f.record(fmt.Sprintf("SetLinkDefaultRoute %d %t", link, on))
}

func (f *fakeResolved) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

// serveResolved puts f on the bus under resolved's name.
func serveResolved(t *testing.T, addr string, f *fakeResolved) {
	t.Helper()
	c := connect(t, addr)
	var obj any = newerResolved{f}
	if f.old {
		obj = f
	}
	if err := c.Export(obj, resolvedPath, resolvedManager); err != nil {
		t.Fatal(err)
	}
	reply, err := c.RequestName(resolvedBusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", reply, err)
	}
}

// TestResolvedCalls runs Resolved against a real dbus-daemon and a stand-in for
// systemd-resolved's Manager object: the calls and their D-Bus arguments are those
// resolvectl makes (a(iay) servers with AF_INET/AF_INET6, a(sb) domains, the default route).
func TestResolvedCalls(t *testing.T) {
	addr := privateBus(t)
	f := &fakeResolved{}
	serveResolved(t, addr, f)
	r := NewResolved(connect(t, addr))

	c := Config{Servers: addrs("10.0.0.53", "2001:db8::53"), Domains: []string{"corp.example", "~lab.corp.example", "~."}, DefaultRoute: true, Link: 7}
	if err := r.Set(c); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SetLinkDNS 7 [{2 [10 0 0 53]} {10 [32 1 13 184 0 0 0 0 0 0 0 0 0 0 0 83]}]",
		"SetLinkDomains 7 [{corp.example false} {lab.corp.example true} {. true}]",
		"SetLinkDefaultRoute 7 true",
		"FlushCaches",
	}
	if got := f.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Set called\n%q\nwant\n%q", got, want)
	}
	// The device set up again (another index): the old link is reverted first.
	c.Link, c.DefaultRoute, c.Domains = 9, false, nil
	if err := r.Set(c); err != nil {
		t.Fatal(err)
	}
	want = []string{"RevertLink 7", "SetLinkDNS 9 [{2 [10 0 0 53]} {10 [32 1 13 184 0 0 0 0 0 0 0 0 0 0 0 83]}]",
		"SetLinkDomains 9 []", "SetLinkDefaultRoute 9 false", "FlushCaches"}
	if got := f.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("second Set called\n%q\nwant\n%q", got, want)
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := f.take(); !reflect.DeepEqual(got, []string{"RevertLink 9"}) {
		t.Fatalf("Restore twice called %q, want one RevertLink 9", got)
	}
}

// TestResolvedOldAndFailing: a resolved without SetLinkDefaultRoute is still configured; a
// refused call fails Set, and Restore still reverts what the partial Set changed.
func TestResolvedOldAndFailing(t *testing.T) {
	addr := privateBus(t)
	f := &fakeResolved{old: true}
	serveResolved(t, addr, f)
	r := NewResolved(connect(t, addr))
	if err := r.Set(Config{Servers: addrs("10.0.0.53"), Link: 3, DefaultRoute: true}); err != nil {
		t.Fatalf("a resolved without SetLinkDefaultRoute: %v", err)
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	f.take()
	f.mu.Lock()
	f.fail = "SetLinkDomains"
	f.mu.Unlock()
	if err := r.Set(Config{Servers: addrs("10.0.0.53"), Domains: []string{"corp.example"}, Link: 4}); err == nil {
		t.Fatal("a refused SetLinkDomains did not fail Set")
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	got := f.take()
	if len(got) != 3 || got[2] != "RevertLink 4" {
		t.Fatalf("calls %q: want the partial Set reverted", got)
	}
	if err := r.Set(Config{Servers: addrs("10.0.0.53")}); err == nil {
		t.Fatal("Set without a link accepted")
	}
}

// TestResolvedRuns: resolved is used only when resolv.conf is its file and its name is on the bus.
func TestResolvedRuns(t *testing.T) {
	addr := privateBus(t)
	conn := connect(t, addr)
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub.conf")
	if err := os.WriteFile(stub, []byte("# managed by resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.conf")
	if err := os.WriteFile(plain, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.conf")
	if err := os.Symlink("/run/systemd/resolve/resolv.conf", link); err != nil {
		t.Fatal(err)
	}
	if ResolvedRuns(conn, stub) {
		t.Fatal("resolved detected without its bus name")
	}
	serveResolved(t, addr, &fakeResolved{})
	for path, want := range map[string]bool{stub: true, link: true, plain: false, filepath.Join(dir, "missing"): false} {
		if got := ResolvedRuns(conn, path); got != want {
			t.Errorf("ResolvedRuns(%s) = %v, want %v", filepath.Base(path), got, want)
		}
	}
}
