//go:build windows

package hostnet

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// Host applies and records host network changes (Windows: a Wintun adapter, netsh).
type Host struct{ cmdHost }

// New returns a Host.
func New() (*Host, error) { return &Host{cmdHost{run: runCommand}}, nil }

// CreateTUN creates a Wintun adapter (wintun.dll next to the executable) and returns it with
// its name.
func (h *Host) CreateTUN(name string, mtu int) (tun.Device, string, error) {
	dev, real, err := createTUN(&h.undoLog, name, mtu)
	if err != nil {
		return nil, "", fmt.Errorf("%w (is wintun.dll beside dstm-client.exe?)", err)
	}
	return dev, real, nil
}

// AddAddress assigns prefix to the adapter dev.
func (h *Host) AddAddress(dev string, prefix netip.Prefix) error {
	return h.apply(netshAddAddress(dev, prefix), netshDeleteAddress(dev, prefix))
}

// LinkUp does nothing: a Wintun adapter is up once created.
func (h *Host) LinkUp(string) error { return nil }

// AddRoute routes dst to the adapter dev; the route is removed on Close.
func (h *Host) AddRoute(dev string, dst netip.Prefix) error {
	return h.apply(netshAddRoute(dev, dst), netshDeleteRoute(dev, dst))
}

// DisableIPv6 does nothing: the adapter has no IPv6 address to solicit routers with.
func (h *Host) DisableIPv6(string) error { return nil }

// SetKillSwitch is not built here yet (ErrUnsupported).
func SetKillSwitch([]netip.Prefix) error {
	return fmt.Errorf("%w: the kill switch (blackhole routes that outlive the client) is built for Linux only", ErrUnsupported)
}

// ClearKillSwitch has nothing to remove here.
func ClearKillSwitch() (int, error) { return 0, nil }
