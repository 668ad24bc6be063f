package client

import (
	"errors"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// Keepalive: like gogoc in v4v6 mode, the client sends an ICMP echo request from its lease to
// the gateway's inner address through the tunnel every keepalive interval of the offer. It
// keeps NAT and DTLS idle timers alive and proves the path: when nothing at all came back
// through the tunnel for missedKeepalives intervals, the session is declared dead.
const missedKeepalives = 3

var errKeepalive = errors.New("no traffic from the gateway for 3 keepalive intervals")

// echoRequest builds the keepalive: an ICMP echo request from the lease to the gateway.
func echoRequest(src, dst [4]byte, id, seq uint16) []byte {
	return packet.AppendEchoRequest(nil, netip.AddrFrom4(src), netip.AddrFrom4(dst), id, seq)
}

// keepalive sends one echo request and reports whether the tunnel is still alive.
func (t *tunSide) keepalive(l tunnel.Link, server [4]byte, seq uint16, interval time.Duration, now time.Time) error {
	_ = l.WritePackets([][]byte{echoRequest(t.lease, server, 0xd57, seq)})
	last := time.Unix(0, t.lastRx.Load())
	if now.Sub(last) > missedKeepalives*interval {
		return errKeepalive
	}
	return nil
}
