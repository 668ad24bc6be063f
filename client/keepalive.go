package client

import (
	"encoding/binary"
	"errors"
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

// echoRequest builds an IPv4 ICMP echo request of 28 bytes.
func echoRequest(src, dst [4]byte, id, seq uint16) []byte {
	b := make([]byte, 28)
	b[0], b[8], b[9] = 0x45, 64, 1 // version/IHL, TTL, protocol ICMP
	binary.BigEndian.PutUint16(b[2:], 28)
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	packet.SetHeaderChecksum(b)
	b[20] = 8 // echo request
	binary.BigEndian.PutUint16(b[24:], id)
	binary.BigEndian.PutUint16(b[26:], seq)
	binary.BigEndian.PutUint16(b[22:], packet.Checksum(b[20:], 0))
	return b
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
