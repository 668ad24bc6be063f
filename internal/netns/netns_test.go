package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// listen opens a TCP listener on addr inside ns that accepts one connection
// and writes msg to it.
func listen(t *testing.T, ns *NS, addr netip.AddrPort, msg string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, msg)
	}()
}

func dialRead(t *testing.T, ns *NS, addr netip.AddrPort) (string, error) {
	t.Helper()
	var got []byte
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	return string(got), err
}

func TestTopology(t *testing.T) {
	SkipUnlessRoot(t)
	tp := NewTopology(t, netip.MustParsePrefix("10.99.0.0/24"))
	for _, ns := range []*NS{tp.Client, tp.Gateway, tp.Server} {
		if !strings.HasPrefix(ns.Name, Prefix) {
			t.Fatalf("namespace %q lacks prefix", ns.Name)
		}
	}
	v6 := netip.AddrPortFrom(tp.GatewayV6, 8001)
	listen(t, tp.Gateway, v6, "over v6")
	if got, err := dialRead(t, tp.Client, v6); err != nil || got != "over v6" {
		t.Fatalf("client -> gateway v6: %q, %v", got, err)
	}
	v4 := netip.AddrPortFrom(tp.ServerV4, 8002)
	listen(t, tp.Server, v4, "over v4")
	if got, err := dialRead(t, tp.Gateway, v4); err != nil || got != "over v4" {
		t.Fatalf("gateway -> server v4: %q, %v", got, err)
	}
	// The client is IPv6-only: it has no route to the server.
	if _, err := dialRead(t, tp.Client, v4); err == nil {
		t.Fatal("IPv6-only client reached the IPv4 server")
	}
	routes, err := tp.Server.Netlink().RouteGet(netip.MustParseAddr("10.99.0.5").AsSlice())
	if err != nil || len(routes) == 0 || !routes[0].Gw.Equal(tp.GatewayV4.AsSlice()) {
		t.Fatalf("server route to pool: %v, %v", routes, err)
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	SkipUnlessRoot(t)
	ns := New(t, "x")
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	var inside bool
	if err := ns.Do(func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(ns.Handle())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !inside {
		t.Fatal("Do did not run inside the namespace")
	}
	want := errors.New("boom")
	if err := ns.Do(func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("Do error = %v", err)
	}
	out, err := ns.Command(context.Background(), "ip", "-o", "link", "show", "lo").Output()
	if err != nil || !strings.Contains(string(out), "UP") {
		t.Fatalf("ip in namespace: %q, %v", out, err)
	}
}
