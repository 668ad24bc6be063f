package client

import (
	"errors"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// Like gogoc in v4v6 mode, the client pings the gateway's inner address through the tunnel
// every keepalive interval of the offer: that keeps NAT and DTLS idle timers alive, and a
// session from which nothing came back for missedKeepalives intervals is dead.
const missedKeepalives = 3

var errKeepalive = errors.New("no traffic from the gateway for 3 keepalive intervals")

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
