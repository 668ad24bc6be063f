//go:build linux

package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
)

// Host applies and records host network changes.
type Host struct {
	// ProcRoot is where /proc/sys lives ("/proc/sys" when empty); tests
	// point it at a temporary directory.
	ProcRoot string

	nl *netlink.Handle
	undoLog
}

// New returns a Host bound to the calling thread's network namespace.
func New() (*Host, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("hostnet: netlink: %w", err)
	}
	return &Host{nl: h}, nil
}

// CreateTUN creates a TUN device and returns it with its actual name. Close
// closes the device, which removes its addresses and routes with it.
func (h *Host) CreateTUN(name string, mtu int) (tun.Device, string, error) {
	return createTUN(&h.undoLog, name, mtu)
}

// AddAddress assigns prefix to the device dev.
func (h *Host) AddAddress(dev string, prefix netip.Prefix) error {
	link, err := h.link(dev)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: ipNet(prefix)}
	if err := h.nl.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("hostnet: add address %s to %s: %w", prefix, dev, err)
	}
	return h.record(func() error { return ignoreGone(h.nl.AddrDel(link, addr)) })
}

// LinkUp sets the device dev up.
func (h *Host) LinkUp(dev string) error {
	link, err := h.link(dev)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("hostnet: set %s up: %w", dev, err)
	}
	return nil
}

// AddRoute routes dst to the device dev (scope link). It fails if the route
// exists. The route is removed on Close unless RemoveRoute removed it first.
func (h *Host) AddRoute(dev string, dst netip.Prefix) error {
	r, err := h.route(dev, dst)
	if err != nil {
		return err
	}
	if err := h.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("hostnet: add route %s dev %s: %w", dst, dev, err)
	}
	return h.record(func() error { return ignoreGone(h.nl.RouteDel(r)) })
}

// RemoveRoute removes the route to dst on dev. Removing a missing route is
// not an error.
func (h *Host) RemoveRoute(dev string, dst netip.Prefix) error {
	r, err := h.route(dev, dst)
	if err != nil {
		return err
	}
	if err := ignoreGone(h.nl.RouteDel(r)); err != nil {
		return fmt.Errorf("hostnet: remove route %s dev %s: %w", dst, dev, err)
	}
	return nil
}

// CheckIPv4Forwarding returns nil if the kernel forwards IPv4; otherwise,
// with enable, it tries to switch forwarding on. The setting is left on at
// Close because other software may depend on it.
func (h *Host) CheckIPv4Forwarding(enable bool) error {
	path := filepath.Join(h.procRoot(), "net/ipv4/ip_forward")
	v, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("hostnet: read %s: %w", path, err)
	}
	if strings.TrimSpace(string(v)) == "1" {
		return nil
	}
	if !enable {
		return fmt.Errorf("%w: enable it (sysctl -w net.ipv4.ip_forward=1) or let the gateway enable it", ErrForwardingDisabled)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		if errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: %s is read-only here (container or namespace without writable sysctls); enable it from the host: %w", ErrForwardingDisabled, path, err)
		}
		return fmt.Errorf("%w: write %s: %w", ErrForwardingDisabled, path, err)
	}
	return nil
}

// Close undoes every recorded change in reverse order. It is idempotent.
func (h *Host) Close() error {
	first, err := h.undoAll()
	if first {
		h.nl.Close()
	}
	return err
}

func (h *Host) link(dev string) (netlink.Link, error) {
	if h.isClosed() {
		return nil, ErrClosed
	}
	link, err := h.nl.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("hostnet: link %s: %w", dev, err)
	}
	return link, nil
}

func (h *Host) route(dev string, dst netip.Prefix) (*netlink.Route, error) {
	link, err := h.link(dev)
	if err != nil {
		return nil, err
	}
	return &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst.Masked()), Scope: netlink.SCOPE_LINK}, nil
}

func (h *Host) procRoot() string {
	if h.ProcRoot != "" {
		return h.ProcRoot
	}
	return "/proc/sys"
}

// ignoreGone treats "already gone" answers from the kernel as success, so
// that undoing after the device disappeared is not an error.
func ignoreGone(err error) error {
	if errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// DisableIPv6 turns IPv6 off on a device so that the kernel sends no router solicitations
// or MLD reports into an IPv4-only tunnel.
func (h *Host) DisableIPv6(dev string) error {
	path := filepath.Join(h.procRoot(), "net/ipv6/conf", dev, "disable_ipv6")
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("hostnet: disable IPv6 on %s: %w", dev, err)
	}
	return nil
}

// killSwitchProto marks the kill switch's blackhole routes (a routing protocol number of our
// own, so that they are found again by any later process); killSwitchMetric keeps them behind
// the tunnel's own routes while the tunnel is up.
const (
	killSwitchProto  = netlink.RouteProtocol(213)
	killSwitchMetric = 4242
)

// SetKillSwitch installs a blackhole route for each of dsts (IPv4) that outlives the process:
// when the tunnel's routes are gone, traffic to dsts is dropped instead of taking another
// route. Existing ones are kept.
func SetKillSwitch(dsts []netip.Prefix) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("hostnet: netlink: %w", err)
	}
	defer h.Close()
	for _, d := range dsts {
		r := &netlink.Route{Dst: ipNet(d.Masked()), Type: syscall.RTN_BLACKHOLE, Protocol: killSwitchProto, Priority: killSwitchMetric}
		if err := h.RouteAdd(r); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("hostnet: kill switch for %s: %w", d, err)
		}
	}
	return nil
}

// ClearKillSwitch removes every kill switch route and returns how many there were.
func ClearKillSwitch() (int, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return 0, fmt.Errorf("hostnet: netlink: %w", err)
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: killSwitchProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, fmt.Errorf("hostnet: list kill switch routes: %w", err)
	}
	n := 0
	for i := range routes {
		if err := ignoreGone(h.RouteDel(&routes[i])); err != nil {
			return n, fmt.Errorf("hostnet: remove kill switch route %s: %w", routes[i].Dst, err)
		}
		n++
	}
	return n, nil
}
