package udpmux

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// setSocketBuffer sets the receive (rcv true) or send buffer to n bytes,
// first with the privileged *BUFFORCE option, which ignores
// net.core.rmem_max/wmem_max (read-only inside network namespaces), then
// with the plain one. It returns the size the kernel reports.
func setSocketBuffer(c *net.UDPConn, n int, rcv bool) (int, error) {
	force, plain := unix.SO_SNDBUFFORCE, unix.SO_SNDBUF
	if rcv {
		force, plain = unix.SO_RCVBUFFORCE, unix.SO_RCVBUF
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("udpmux: socket buffer: %w", err)
	}
	var got int
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, n); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, plain, n)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, plain)
	})
	if cerr != nil {
		return 0, fmt.Errorf("udpmux: socket buffer: %w", cerr)
	}
	if serr != nil {
		return got, fmt.Errorf("udpmux: socket buffer: %w", serr)
	}
	return got, nil
}
