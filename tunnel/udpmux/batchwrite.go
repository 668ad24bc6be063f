package udpmux

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// MaxWriteBatch is the most datagrams one WriteBatch system call sends.
const MaxWriteBatch = 64

// UDP GSO bounds: segments per send (the kernel's UDP_MAX_SEGMENTS) and the payload of one
// send (an IPv4 UDP datagram's).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65507
)

// BatchWriter sends datagrams to one destination at a time, several per system call where
// the platform has sendmmsg (Linux); elsewhere one by one. Consecutive datagrams that lie
// next to each other in one array and have one size (the last of a run may be shorter) go
// out as one UDP GSO send where the kernel has it (Linux 4.18), which the kernel cuts into
// datagrams only at the device. It is safe for concurrent use.
type BatchWriter struct {
	conn *net.UDPConn
	is4  bool // an IPv4 socket
	bw   interface {
		WriteBatch(ms []ipv6.Message, flags int) (int, error)
	}
	gso  atomic.Bool // off after the kernel refused a GSO send
	msgs sync.Pool   // *[]ipv6.Message of MaxWriteBatch, each with one buffer slot and OOB room
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
	w.gso.Store(canGSO(c))
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
			ms[i].OOB = make([]byte, 0, offloadOOB)
		}
		mp = &ms
	}
	defer w.msgs.Put(mp)
	ms := *mp
	var counts [MaxWriteBatch]int // bufs per message
	plain := 0                    // bufs to send without GSO: the rest of a refused GSO send
	for len(bufs) > 0 {
		gso := plain == 0 && w.gso.Load()
		n, used := w.fill(ms, counts[:], bufs, ua, gso)
		sent, err := w.send(ms[:n])
		clearMessages(ms[:n])
		if err != nil && gso {
			if off, refused := gsoRefused(err); refused {
				if off {
					w.gso.Store(false)
				}
				done := 0
				for _, c := range counts[:sent] {
					done += c
				}
				bufs, plain = bufs[done:], used-done
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("udpmux: sendmmsg to %v: %w", to, err)
		}
		bufs, plain = bufs[used:], max(0, plain-used)
	}
	return nil
}

// fill makes messages of bufs, runs of them coalesced with gso; it returns the messages made
// and the bufs they hold.
func (w *BatchWriter) fill(ms []ipv6.Message, counts []int, bufs [][]byte, ua *net.UDPAddr, gso bool) (n, used int) {
	for used < len(bufs) && n < len(ms) {
		run := bufs[used]
		seg, count := len(run), 1
		used++
		for gso && used < len(bufs) && count < maxGSOSegments {
			next := bufs[used]
			if len(next) > seg || len(run)+len(next) > maxGSOBytes || !adjacent(run, next) {
				break
			}
			run = run[:len(run)+len(next)]
			count++
			used++
			if len(next) < seg { // a shorter datagram ends a run
				break
			}
		}
		m := &ms[n]
		counts[n] = count
		n++
		m.Buffers[0], m.Addr, m.OOB = run, ua, m.OOB[:0]
		if count > 1 {
			m.OOB = appendGSO(m.OOB, uint16(seg))
		}
	}
	return n, used
}

// send sends ms and returns how many went out.
func (w *BatchWriter) send(ms []ipv6.Message) (int, error) {
	sent := 0
	for sent < len(ms) {
		k, err := w.bw.WriteBatch(ms[sent:], 0)
		sent += max(k, 0)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// adjacent reports whether b starts where a ends, in the same array.
func adjacent(a, b []byte) bool {
	return len(b) > 0 && cap(a)-len(a) >= len(b) && &a[:len(a)+1][len(a)] == &b[0]
}

func clearMessages(ms []ipv6.Message) {
	for i := range ms {
		ms[i].Buffers[0] = nil
		ms[i].Addr = nil
		ms[i].OOB = ms[i].OOB[:0]
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
