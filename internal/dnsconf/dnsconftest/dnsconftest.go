// Package dnsconftest runs what the tests of the client's DNS need: a private dbus-daemon and a
// stand-in for systemd-resolved's Manager object on it that records the calls it gets.
package dnsconftest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// busConfig is a private bus on which anyone may connect, own any name and call anything.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`

// StartBus starts a dbus-daemon of the test's own, stopped at its end, and returns its
// address. The test skips when dbus-daemon is not installed.
func StartBus(t testing.TB) string {
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

// Connect opens a connection to the bus at addr, closed at the test's end.
func Connect(t testing.TB, addr string) *dbus.Conn {
	t.Helper()
	c, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// LinkDNS and LinkDomain are the elements of SetLinkDNS's a(iay) and SetLinkDomains's a(sb).
type (
	LinkDNS struct {
		Family  int32
		Address []byte
	}
	LinkDomain struct {
		Domain      string
		RoutingOnly bool
	}
)

// Resolved answers the Manager methods the client uses, recording each call as a line such
// as "SetLinkDNS 7 [{2 [10 0 0 53]}]". Old leaves out SetLinkDefaultRoute (resolved before
// v240); a call whose line starts with Fail is refused.
type Resolved struct {
	Old bool

	mu    sync.Mutex
	fail  string
	calls []string
}

// SetFail makes the calls whose line starts with prefix fail ("" for none).
func (f *Resolved) SetFail(prefix string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = prefix
}

// Take returns the calls recorded since the last Take.
func (f *Resolved) Take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

func (f *Resolved) record(s string) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	if f.fail != "" && strings.HasPrefix(s, f.fail) {
		return dbus.MakeFailedError(fmt.Errorf("refused"))
	}
	return nil
}

// methods are the D-Bus methods of every resolved; withDefaultRoute adds v240's.
type (
	methods          struct{ f *Resolved }
	withDefaultRoute struct{ methods }
)

func (m methods) SetLinkDNS(link int32, servers []LinkDNS) *dbus.Error {
	return m.f.record(fmt.Sprintf("SetLinkDNS %d %v", link, servers))
}

func (m methods) SetLinkDomains(link int32, domains []LinkDomain) *dbus.Error {
	return m.f.record(fmt.Sprintf("SetLinkDomains %d %v", link, domains))
}

func (m methods) RevertLink(link int32) *dbus.Error {
	return m.f.record(fmt.Sprintf("RevertLink %d", link))
}

func (m methods) FlushCaches() *dbus.Error { return m.f.record("FlushCaches") }

func (m withDefaultRoute) SetLinkDefaultRoute(link int32, on bool) *dbus.Error {
	return m.f.record(fmt.Sprintf("SetLinkDefaultRoute %d %t", link, on))
}

// Serve puts f on the bus at addr under resolved's name and object path.
func (f *Resolved) Serve(t testing.TB, addr string) {
	t.Helper()
	c := Connect(t, addr)
	var obj any = withDefaultRoute{methods{f}}
	if f.Old {
		obj = methods{f}
	}
	if err := c.Export(obj, "/org/freedesktop/resolve1", "org.freedesktop.resolve1.Manager"); err != nil {
		t.Fatal(err)
	}
	reply, err := c.RequestName("org.freedesktop.resolve1", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", reply, err)
	}
}
