package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
)

// command is one program run with its arguments (no shell).
type command struct {
	name string
	args []string
}

func (c command) String() string { return c.name + " " + strings.Join(c.args, " ") }

// The commands of macOS and FreeBSD, as wg-quick runs them: a point-to-point address on the
// TUN device, and routes to the interface.

func bsdAddAddress(dev string, p netip.Prefix) command {
	return command{"ifconfig", []string{dev, "inet", p.String(), p.Addr().String(), "alias"}}
}

func bsdDeleteAddress(dev string, p netip.Prefix) command {
	return command{"ifconfig", []string{dev, "inet", p.Addr().String(), "-alias"}}
}

func bsdLinkUp(dev string) command { return command{"ifconfig", []string{dev, "up"}} }

func bsdAddRoute(dev string, dst netip.Prefix) command {
	return command{"route", []string{"-q", "-n", "add", "-inet", dst.Masked().String(), "-interface", dev}}
}

func bsdDeleteRoute(dev string, dst netip.Prefix) command {
	return command{"route", []string{"-q", "-n", "delete", "-inet", dst.Masked().String(), "-interface", dev}}
}

// The commands of Windows: netsh on the Wintun adapter, changes that last until reboot at most
// (store=active).

func netshAddAddress(dev string, p netip.Prefix) command {
	return command{"netsh", []string{"interface", "ipv4", "add", "address", "name=" + dev,
		"address=" + p.Addr().String(), "mask=" + mask4(p.Bits()), "store=active"}}
}

func netshDeleteAddress(dev string, p netip.Prefix) command {
	return command{"netsh", []string{"interface", "ipv4", "delete", "address", "name=" + dev,
		"address=" + p.Addr().String(), "store=active"}}
}

func netshAddRoute(dev string, dst netip.Prefix) command {
	return command{"netsh", []string{"interface", "ipv4", "add", "route", "prefix=" + dst.Masked().String(),
		"interface=" + dev, "metric=0", "store=active"}}
}

func netshDeleteRoute(dev string, dst netip.Prefix) command {
	return command{"netsh", []string{"interface", "ipv4", "delete", "route", "prefix=" + dst.Masked().String(),
		"interface=" + dev, "store=active"}}
}

// mask4 is the dotted IPv4 netmask of a prefix length.
func mask4(bits int) string {
	m := ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

// undoLog records how to undo each change a Host made; Close undoes them in reverse order.
type undoLog struct {
	mu     sync.Mutex
	undo   []func() error
	closed bool
}

func (u *undoLog) record(undo func() error) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	u.undo = append(u.undo, undo)
	return nil
}

func (u *undoLog) isClosed() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed
}

// undoAll undoes every recorded change in reverse order, once; first says whether this
// call ran them.
func (u *undoLog) undoAll() (first bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false, nil
	}
	u.closed = true
	var errs []error
	for i := len(u.undo) - 1; i >= 0; i-- {
		errs = append(errs, u.undo[i]())
	}
	u.undo = nil
	return true, errors.Join(errs...)
}

// createTUN creates a TUN device, records its closing in u (last undone: closing the device
// removes what is left of its addresses and routes) and returns it with its actual name.
func createTUN(u *undoLog, name string, mtu int) (tun.Device, string, error) {
	dev, err := tun.CreateTUN(name, mtu)
	if errors.Is(err, syscall.EBUSY) {
		return nil, "", fmt.Errorf("hostnet: create TUN %s: %w (another program has a device of that name, perhaps another dstm-client up: pick another with --device)", name, err)
	}
	if err != nil {
		return nil, "", fmt.Errorf("hostnet: create TUN %s: %w", name, err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, "", fmt.Errorf("hostnet: TUN name: %w", err)
	}
	if err := u.record(dev.Close); err != nil {
		dev.Close()
		return nil, "", err
	}
	return dev, real, nil
}

// cmdHost is the part of a Host that configures by commands (every platform but Linux): it
// runs each change and records the command that undoes it.
type cmdHost struct {
	undoLog
	run func(command) error
}

// apply runs c and records undo for Close.
func (h *cmdHost) apply(c, undo command) error {
	if h.isClosed() {
		return ErrClosed
	}
	if err := h.run(c); err != nil {
		return err
	}
	return h.record(func() error { return h.run(undo) })
}

// Close undoes every recorded change in reverse order. It is idempotent.
func (h *cmdHost) Close() error {
	_, err := h.undoAll()
	return err
}
