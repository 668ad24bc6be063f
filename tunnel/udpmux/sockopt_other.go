//go:build !linux

package udpmux

import "net"

// setSocketBuffer sets the receive (rcv true) or send buffer through the
// portable API; the size the kernel applied is not reported.
func setSocketBuffer(c *net.UDPConn, n int, rcv bool) (int, error) {
	if rcv {
		return 0, c.SetReadBuffer(n)
	}
	return 0, c.SetWriteBuffer(n)
}
