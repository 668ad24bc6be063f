//go:build linux

package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstmgw/dstm/internal/netns"
)

func TestCheckIPv4Forwarding(t *testing.T) {
	tests := []struct {
		name     string
		value    string
		enable   bool
		readOnly bool
		wantErr  bool
		want     string
	}{
		{"on", "1\n", false, false, false, "1\n"},
		{"off, not asked", "0\n", false, false, true, "0\n"},
		{"off, enabled", "0\n", true, false, false, "1\n"},
		{"off, read-only", "0\n", true, true, true, "0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.readOnly && os.Geteuid() == 0 {
				t.Skip("root ignores file permissions")
			}
			root := t.TempDir()
			dir := filepath.Join(root, "net/ipv4")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "ip_forward")
			mode := os.FileMode(0o644)
			if tt.readOnly {
				mode = 0o444
			}
			if err := os.WriteFile(file, []byte(tt.value), mode); err != nil {
				t.Fatal(err)
			}
			h := &Host{ProcRoot: root}
			err := h.CheckIPv4Forwarding(tt.enable)
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrForwardingDisabled)) {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			got, _ := os.ReadFile(file)
			if string(got) != tt.want {
				t.Fatalf("ip_forward = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFullTunnelRoutes(t *testing.T) {
	r := FullTunnelRoutes()
	for _, a := range []string{"0.0.0.1", "127.255.255.255", "128.0.0.0", "255.255.255.254"} {
		addr := netip.MustParseAddr(a)
		if !r[0].Contains(addr) && !r[1].Contains(addr) {
			t.Errorf("%s not covered", a)
		}
	}
}

// TestHostLifecycle creates a TUN device with an address and routes in a
// fresh namespace and checks that Close removes all of it.
func TestHostLifecycle(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.New(t, "h")
	pool := netip.MustParsePrefix("10.99.0.0/24")
	err := ns.Do(func() error {
		h, err := New()
		if err != nil {
			return err
		}
		defer h.Close()
		_, name, err := h.CreateTUN("dstmtun0", 1280)
		if err != nil {
			return err
		}
		// A name another program's device has: a clear error, and the first device stays.
		h2, err := New()
		if err != nil {
			return err
		}
		if _, _, err := h2.CreateTUN("dstmtun0", 1280); err == nil || !strings.Contains(err.Error(), "--device") {
			t.Errorf("second TUN of the same name: %v, want a hint at --device", err)
		}
		h2.Close()
		if _, err := ns.Netlink().LinkByName("dstmtun0"); err != nil {
			t.Errorf("the first device went with the refused second: %v", err)
		}
		steps := []func() error{
			func() error { return h.AddAddress(name, netip.MustParsePrefix("10.99.255.1/32")) },
			func() error { return h.LinkUp(name) },
			func() error { return h.AddRoute(name, pool) },
			func() error { return h.AddRoute(name, FullTunnelRoutes()[0]) },
			func() error { return h.CheckIPv4Forwarding(true) },
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return err
			}
		}
		if err := h.AddRoute(name, pool); err == nil {
			t.Error("duplicate route accepted")
		}
		if got := routeDev(t, ns, "10.99.0.7"); got != name {
			t.Errorf("route to pool via %q, want %q", got, name)
		}
		if err := h.RemoveRoute(name, FullTunnelRoutes()[0]); err != nil {
			return err
		}
		if err := h.Close(); err != nil {
			return err
		}
		if err := h.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := h.AddRoute(name, pool); !errors.Is(err, ErrClosed) {
			t.Errorf("AddRoute after Close: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Netlink().LinkByName("dstmtun0"); err == nil {
		t.Fatal("TUN device still exists after Close")
	}
	if got := routeDev(t, ns, "10.99.0.7"); got != "" {
		t.Fatalf("route to pool still via %q after Close", got)
	}
}

func routeDev(t *testing.T, ns *netns.NS, dst string) string {
	t.Helper()
	routes, err := ns.Netlink().RouteGet(net.ParseIP(dst))
	if err != nil || len(routes) == 0 {
		return ""
	}
	link, err := ns.Netlink().LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return ""
	}
	return link.Attrs().Name
}
