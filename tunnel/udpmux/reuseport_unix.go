//go:build unix

package udpmux

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// ReusePort is a net.ListenConfig Control function that sets SO_REUSEPORT, so that several
// sockets share one UDP port (the gateway's sockets of one address, read in parallel).
func ReusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
