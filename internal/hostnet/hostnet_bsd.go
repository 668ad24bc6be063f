//go:build darwin || freebsd

package hostnet

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"

	"golang.zx2c4.com/wireguard/tun"
)

// Host applies and records host network changes (macOS, FreeBSD: ifconfig and route).
type Host struct{ cmdHost }

// New returns a Host.
func New() (*Host, error) { return &Host{cmdHost{run: runCommand}}, nil }

// CreateTUN creates a TUN device and returns it with its actual name. On macOS the kernel
// names utun devices itself (utunN): a name that is not utun… is replaced by "utun".
func (h *Host) CreateTUN(name string, mtu int) (tun.Device, string, error) {
	if runtime.GOOS == "darwin" && !strings.HasPrefix(name, "utun") {
		name = "utun"
	}
	return createTUN(&h.undoLog, name, mtu)
}

// AddAddress assigns prefix to the device dev (point to point, to itself).
func (h *Host) AddAddress(dev string, prefix netip.Prefix) error {
	return h.apply(bsdAddAddress(dev, prefix), bsdDeleteAddress(dev, prefix))
}

// LinkUp sets the device dev up.
func (h *Host) LinkUp(dev string) error { return h.run(bsdLinkUp(dev)) }

// AddRoute routes dst to the device dev; the route is removed on Close.
func (h *Host) AddRoute(dev string, dst netip.Prefix) error {
	return h.apply(bsdAddRoute(dev, dst), bsdDeleteRoute(dev, dst))
}

// DisableIPv6 does nothing: a utun or tun device without an IPv6 address sends no router
// solicitations.
func (h *Host) DisableIPv6(string) error { return nil }

// SetKillSwitch is not built here yet (ErrUnsupported): the tunnel's routes still stay for
// the life of `up` (fail-closed).
func SetKillSwitch([]netip.Prefix) error {
	return fmt.Errorf("%w: the kill switch (blackhole routes that outlive the client) is built for Linux only", ErrUnsupported)
}

// ClearKillSwitch has nothing to remove here.
func ClearKillSwitch() (int, error) { return 0, nil }
