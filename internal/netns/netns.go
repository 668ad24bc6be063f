package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "dstm"

// NS is a named network namespace created for one test.
type NS struct {
	// Name is the namespace name under /run/netns ("dstm" + random suffix).
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle

	// mu lets destroy wait for the Do calls in flight (a dial an HTTP transport goes on with
	// after its request ended) and refuses those that come after.
	mu   sync.RWMutex
	gone bool
}

// SkipUnlessRoot skips the test when it does not run as root.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
}

// New creates a namespace named Prefix + a random suffix + role, brings its
// loopback up, and deletes it in t.Cleanup.
func New(t testing.TB, role string) *NS {
	t.Helper()
	name := Prefix + randomSuffix() + role
	h, err := createNamed(name)
	if err != nil {
		t.Fatalf("netns: create %s: %v", name, err)
	}
	n := &NS{Name: name, handle: h}
	t.Cleanup(func() { n.destroy(t) })
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		t.Fatalf("netns: netlink handle in %s: %v", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("netns: loopback up in %s: %v", name, err)
	}
	return n
}

func randomSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// createNamed creates a named namespace on a throwaway locked thread so that
// the calling thread never changes namespace.
func createNamed(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			rc <- result{err: err}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			// The thread stays locked and dies with this goroutine.
			rc <- result{h: h, err: errors.Join(err, serr)}
			return
		}
		runtime.UnlockOSThread()
		rc <- result{h: h, err: err}
	}()
	r := <-rc
	return r.h, r.err
}

func (n *NS) destroy(t testing.TB) {
	n.mu.Lock()
	n.gone = true
	n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
	}
	n.handle.Close()
	if err := netns.DeleteNamed(n.Name); err != nil {
		t.Errorf("netns: delete %s: %v", n.Name, err)
	}
}

// Handle returns the namespace's file handle (valid until cleanup).
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Netlink returns a netlink handle bound to the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Do runs f on a fresh OS thread switched into the namespace and returns its
// error. Sockets, TUN devices and netlink handles f creates stay in the
// namespace and may be used from any goroutine; goroutines f starts do not
// run in the namespace.
func (n *NS) Do(f func() error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.gone {
		return fmt.Errorf("netns: %s was removed", n.Name)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("netns: enter %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netns: leave %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Command returns a command that runs name with args inside the namespace
// (`ip netns exec`). It is killed when ctx is done.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// AddAddr assigns prefix (IPv4, or IPv6 without duplicate address detection)
// to the link named dev in the namespace.
func (n *NS) AddAddr(dev string, prefix netip.Prefix) error {
	link, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("netns: link %s in %s: %w", dev, n.Name, err)
	}
	a := &netlink.Addr{IPNet: ipNet(prefix)}
	if prefix.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(link, a); err != nil {
		return fmt.Errorf("netns: add %s to %s in %s: %w", prefix, dev, n.Name, err)
	}
	return nil
}

// AddRoute adds a route to dst via the gateway address via in the namespace.
func (n *NS) AddRoute(dst netip.Prefix, via netip.Addr) error {
	r := &netlink.Route{Dst: ipNet(dst), Gw: via.AsSlice()}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("netns: route %s via %s in %s: %w", dst, via, n.Name, err)
	}
	return nil
}

// SetSysctl writes value to /proc/sys/<path> inside the namespace, e.g.
// SetSysctl("net/ipv4/ip_forward", "1").
func (n *NS) SetSysctl(path, value string) error {
	return n.Do(func() error {
		return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
	})
}

// LinkVeth creates a veth pair with end aName in a and end bName in b, and
// brings both up.
func LinkVeth(a *NS, aName string, b *NS, bName string) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.handle)),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("netns: veth %s/%s: %w", aName, bName, err)
	}
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		link, err := end.ns.nl.LinkByName(end.name)
		if err == nil {
			err = end.ns.nl.LinkSetUp(link)
		}
		if err != nil {
			return fmt.Errorf("netns: up %s in %s: %w", end.name, end.ns.Name, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// AddBridge creates a bridge named name in the namespace and brings it up.
func (n *NS) AddBridge(name string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := n.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("netns: bridge %s in %s: %w", name, n.Name, err)
	}
	if err := n.nl.LinkSetUp(br); err != nil {
		return fmt.Errorf("netns: up %s in %s: %w", name, n.Name, err)
	}
	return nil
}

// SetMaster makes the link port a port of bridge (both in the namespace).
func (n *NS) SetMaster(port, bridge string) error {
	p, err := n.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("netns: link %s in %s: %w", port, n.Name, err)
	}
	b, err := n.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("netns: bridge %s in %s: %w", bridge, n.Name, err)
	}
	if err := n.nl.LinkSetMaster(p, b); err != nil {
		return fmt.Errorf("netns: %s into %s in %s: %w", port, bridge, n.Name, err)
	}
	return nil
}

// ReplaceRoute sets the route to dst via the gateway address via, replacing any.
func (n *NS) ReplaceRoute(dst netip.Prefix, via netip.Addr) error {
	r := &netlink.Route{Dst: ipNet(dst), Gw: via.AsSlice()}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("netns: route %s via %s in %s: %w", dst, via, n.Name, err)
	}
	return nil
}

// Blackhole makes dst unreachable from the namespace (a blackhole route), as a partition
// does; Unblackhole removes it.
func (n *NS) Blackhole(dst netip.Prefix) error {
	r := &netlink.Route{Dst: ipNet(dst), Type: unix.RTN_BLACKHOLE}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("netns: blackhole %s in %s: %w", dst, n.Name, err)
	}
	return nil
}

// Unblackhole removes a route Blackhole added.
func (n *NS) Unblackhole(dst netip.Prefix) error {
	r := &netlink.Route{Dst: ipNet(dst), Type: unix.RTN_BLACKHOLE}
	if err := n.nl.RouteDel(r); err != nil {
		return fmt.Errorf("netns: remove blackhole %s in %s: %w", dst, n.Name, err)
	}
	return nil
}
