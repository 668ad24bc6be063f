package hostnet

import (
	"errors"
	"net/netip"
)

// ErrForwardingDisabled is returned by CheckIPv4Forwarding when the kernel
// does not forward IPv4 and enabling it was not asked for or not possible.
var ErrForwardingDisabled = errors.New("hostnet: IPv4 forwarding is disabled (net.ipv4.ip_forward=0)")

// ErrClosed is returned by every method of a closed Host.
var ErrClosed = errors.New("hostnet: host configuration closed")

// ErrUnsupported is returned for what this platform's Host does not do (the kill switch
// outside Linux).
var ErrUnsupported = errors.New("hostnet: not supported on this platform")

// FullTunnelRoutes returns the two halves of the IPv4 space that send all
// IPv4 traffic into the tunnel without replacing the default route.
func FullTunnelRoutes() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
}
