package udpmux

import (
	"errors"
	"net"
)

// SetBuffers sizes both kernel buffers of a UDP socket to n bytes (forcing past the system
// maximum where the process may), for sockets outside a Mux such as the client's DTLS socket.
func SetBuffers(c *net.UDPConn, n int) error {
	_, rerr := setSocketBuffer(c, n, true)
	_, werr := setSocketBuffer(c, n, false)
	return errors.Join(rerr, werr)
}
