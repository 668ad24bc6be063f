//go:build !linux

package plain

import (
	"errors"
	"net/netip"

	"github.com/dstmgw/dstm/tunnel"
)

// ErrUnsupported: the plain transport's raw IPv4-in-IPv6 socket with batched reads is built
// for Linux only; clients elsewhere use DTLS or the TLS stream.
var ErrUnsupported = errors.New("plain: the v4v6 transport is built for Linux only")

// ClientLink is the client side of a v4v6 tunnel (Linux only).
type ClientLink struct{ tunnel.Link }

// Dial fails with ErrUnsupported outside Linux.
func Dial(local, remote netip.Addr, r tunnel.Receiver) (*ClientLink, error) {
	return nil, ErrUnsupported
}
