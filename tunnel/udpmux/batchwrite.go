package udpmux

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// MaxWriteBatch is the most datagrams one WriteBatch system call sends.
const MaxWriteBatch = 64

// BatchWriter sends datagrams to one destination at a time, several per system call where
// the platform has sendmmsg (Linux); elsewhere one by one. It is safe for concurrent use.
type BatchWriter struct {
	conn *net.UDPConn
	is4  bool // an IPv4 socket
	bw   interface {
		WriteBatch(ms []ipv6.Message, flags int) (int, error)
	}
	msgs sync.Pool // *[]ipv6.Message of MaxWriteBatch, each with one buffer slot
}

// NewBatchWriter returns a BatchWriter on c, which it does not own.
func NewBatchWriter(c *net.UDPConn) *BatchWriter {
	w := &BatchWriter{conn: c}
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.AddrPort().Addr().Unmap().Is4() {
		w.is4 = true
		w.bw = ipv4.NewPacketConn(c)
	} else {
		w.bw = ipv6.NewPacketConn(c)
	}
	return w
}

// WriteBatch sends each of bufs to to.
func (w *BatchWriter) WriteBatch(bufs [][]byte, to netip.AddrPort) error {
	a := to.Addr()
	// x/net writes a 4-byte address as AF_INET, which an IPv6 socket refuses.
	if len(bufs) == 1 || (!w.is4 && a.Unmap().Is4()) {
		for _, b := range bufs {
			if _, err := w.conn.WriteToUDPAddrPort(b, to); err != nil {
				return err
			}
		}
		return nil
	}
	if w.is4 {
		a = a.Unmap()
	}
	ua := net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, to.Port()))
	mp, _ := w.msgs.Get().(*[]ipv6.Message)
	if mp == nil {
		ms := make([]ipv6.Message, MaxWriteBatch)
		for i := range ms {
			ms[i].Buffers = make([][]byte, 1)
		}
		mp = &ms
	}
	defer w.msgs.Put(mp)
	ms := *mp
	for len(bufs) > 0 {
		n := min(len(bufs), len(ms))
		for i, b := range bufs[:n] {
			ms[i].Buffers[0] = b
			ms[i].Addr = ua
		}
		for sent := 0; sent < n; {
			k, err := w.bw.WriteBatch(ms[sent:n], 0)
			if err != nil {
				clearMessages(ms[:n])
				return fmt.Errorf("udpmux: sendmmsg to %v: %w", to, err)
			}
			sent += k
		}
		clearMessages(ms[:n])
		bufs = bufs[n:]
	}
	return nil
}

func clearMessages(ms []ipv6.Message) {
	for i := range ms {
		ms[i].Buffers[0] = nil
		ms[i].Addr = nil
	}
}

// WriteBatch sends each of bufs to to from the socket of to's family (as WriteTo).
func (m *Mux) WriteBatch(bufs [][]byte, to netip.AddrPort) error {
	s := m.socketFor(to.Addr())
	if s == nil {
		return ErrNoSocket
	}
	if err := s.bw.WriteBatch(bufs, to); err != nil {
		m.stats.writeErrors.Add(1)
		return err
	}
	return nil
}
