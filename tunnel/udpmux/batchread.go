package udpmux

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// BatchReader reads a *net.UDPConn in batches (recvmmsg where the platform has it), with UDP
// GRO where the kernel has it (Linux 5.0), and cuts coalesced reads apart again. One goroutine
// uses it.
type BatchReader struct {
	br interface {
		ReadBatch(ms []ipv6.Message, flags int) (int, error)
	}
	msgs []ipv6.Message
	max  int  // longest datagram taken
	gro  bool // UDP GRO on
}

// NewBatchReader returns a BatchReader of batch datagrams of at most maxDatagram bytes on c,
// which it does not own. GRO is turned on only with 64 KB buffers (maxDatagram 65535), which
// a coalesced read needs.
func NewBatchReader(c *net.UDPConn, batch, maxDatagram int) *BatchReader {
	r := &BatchReader{max: maxDatagram, msgs: make([]ipv6.Message, batch)}
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.AddrPort().Addr().Unmap().Is4() {
		r.br = ipv4.NewPacketConn(c)
	} else {
		r.br = ipv6.NewPacketConn(c)
	}
	r.gro = maxDatagram >= 65535 && enableGRO(c)
	for i := range r.msgs {
		// One spare byte reveals truncation portably.
		r.msgs[i].Buffers = [][]byte{make([]byte, maxDatagram+1)}
		if r.gro {
			r.msgs[i].OOB = make([]byte, offloadOOB)
		}
	}
	return r
}

// Read reads one batch and calls fn for each datagram in order; b is valid until Read
// returns, and fn may change it. A datagram dropped (longer than the maximum: truncated; or
// without a UDP source address) goes to dropped, when not nil, in its place in the order.
// It returns how many reads the kernel had joined (UDP GRO), and the system call's error.
func (r *BatchReader) Read(fn func(b []byte, from netip.AddrPort), dropped func(truncated bool)) (coalesced int, err error) {
	n, err := r.br.ReadBatch(r.msgs, 0)
	if err != nil {
		return 0, err
	}
	for i := range r.msgs[:n] {
		msg := &r.msgs[i]
		ua, ok := msg.Addr.(*net.UDPAddr)
		if msg.N > r.max || !ok {
			if dropped != nil {
				dropped(msg.N > r.max)
			}
			continue
		}
		b, from := msg.Buffers[0][:msg.N], ua.AddrPort()
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		seg := 0
		if msg.NN > 0 {
			seg = groSize(msg.OOB[:msg.NN])
		}
		if seg <= 0 || seg >= len(b) {
			fn(b, from)
			continue
		}
		coalesced++
		for len(b) > 0 {
			k := min(seg, len(b))
			fn(b[:k:k], from)
			b = b[k:]
		}
	}
	return coalesced, nil
}
