package dnsconf

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dstmgw/dstm/internal/dnsconf/dnsconftest"
)

// TestResolvedCalls runs Resolved against a real dbus-daemon and a stand-in for
// systemd-resolved's Manager object: the calls and their D-Bus arguments are those
// resolvectl makes (a(iay) servers with AF_INET/AF_INET6, a(sb) domains, the default route).
func TestResolvedCalls(t *testing.T) {
	addr := dnsconftest.StartBus(t)
	f := &dnsconftest.Resolved{}
	f.Serve(t, addr)
	r := NewResolved(dnsconftest.Connect(t, addr))

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
	if got := f.Take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Set called\n%q\nwant\n%q", got, want)
	}
	// The device set up again (another index): the old link is reverted first.
	c.Link, c.DefaultRoute, c.Domains = 9, false, nil
	if err := r.Set(c); err != nil {
		t.Fatal(err)
	}
	want = []string{"RevertLink 7", "SetLinkDNS 9 [{2 [10 0 0 53]} {10 [32 1 13 184 0 0 0 0 0 0 0 0 0 0 0 83]}]",
		"SetLinkDomains 9 []", "SetLinkDefaultRoute 9 false", "FlushCaches"}
	if got := f.Take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("second Set called\n%q\nwant\n%q", got, want)
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := f.Take(); !reflect.DeepEqual(got, []string{"RevertLink 9"}) {
		t.Fatalf("Restore twice called %q, want one RevertLink 9", got)
	}
}

// TestResolvedOldAndFailing: a resolved without SetLinkDefaultRoute is still configured; a
// refused call fails Set, and Restore still reverts what the partial Set changed.
func TestResolvedOldAndFailing(t *testing.T) {
	addr := dnsconftest.StartBus(t)
	f := &dnsconftest.Resolved{Old: true}
	f.Serve(t, addr)
	r := NewResolved(dnsconftest.Connect(t, addr))
	if err := r.Set(Config{Servers: addrs("10.0.0.53"), Link: 3, DefaultRoute: true}); err != nil {
		t.Fatalf("a resolved without SetLinkDefaultRoute: %v", err)
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	f.Take()
	f.SetFail("SetLinkDomains")
	if err := r.Set(Config{Servers: addrs("10.0.0.53"), Domains: []string{"corp.example"}, Link: 4}); err == nil {
		t.Fatal("a refused SetLinkDomains did not fail Set")
	}
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	got := f.Take()
	if len(got) != 3 || got[2] != "RevertLink 4" {
		t.Fatalf("calls %q: want the partial Set reverted", got)
	}
	if err := r.Set(Config{Servers: addrs("10.0.0.53")}); err == nil {
		t.Fatal("Set without a link accepted")
	}
}

// TestResolvedRuns: resolved is used only when resolv.conf is its file and its name is on the bus.
func TestResolvedRuns(t *testing.T) {
	addr := dnsconftest.StartBus(t)
	conn := dnsconftest.Connect(t, addr)
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
	(&dnsconftest.Resolved{}).Serve(t, addr)
	for path, want := range map[string]bool{stub: true, link: true, plain: false, filepath.Join(dir, "missing"): false} {
		if got := ResolvedRuns(conn, path); got != want {
			t.Errorf("ResolvedRuns(%s) = %v, want %v", filepath.Base(path), got, want)
		}
	}
}
