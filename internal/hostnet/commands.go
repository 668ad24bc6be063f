package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
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

// cmdHost is the part of a Host that configures by commands (every platform but Linux): it
// runs each change and records the command that undoes it.
type cmdHost struct {
	run    func(command) error
	mu     sync.Mutex
	undo   []func() error
	closed bool
}

// apply runs c and records undo for Close.
func (h *cmdHost) apply(c, undo command) error {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := h.run(c); err != nil {
		return err
	}
	return h.record(func() error { return h.run(undo) })
}

func (h *cmdHost) record(undo func() error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	h.undo = append(h.undo, undo)
	return nil
}

// Close undoes every recorded change in reverse order. It is idempotent. An undo that
// fails because the device went first (its routes and addresses with it) is no error.
func (h *cmdHost) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	var errs []error
	for i := len(h.undo) - 1; i >= 0; i-- {
		errs = append(errs, h.undo[i]())
	}
	h.undo = nil
	return errors.Join(errs...)
}
