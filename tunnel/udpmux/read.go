package udpmux

import (
	"errors"
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

type batchReader interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
}

// routineRead is the one reader goroutine of a socket. It returns the
// error that stopped it (net.ErrClosed after Close).
func (m *Mux) routineRead(s *socket) error {
	log := m.cfg.Logger.With().Str("local", s.conn.LocalAddr().String()).Logger()
	log.Debug().Int("batch", m.cfg.BatchSize).Msg("udp reader started")
	defer log.Debug().Msg("udp reader stopped")
	if m.cfg.BatchSize == 1 {
		return m.readSingle(s)
	}
	return m.readBatch(s)
}

// readSingle reads one datagram per system call, without allocating.
func (m *Mux) readSingle(s *socket) error {
	buf := make([]byte, m.cfg.MaxDatagram+1)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if fatalReadError(err) {
				return err
			}
			m.stats.readErrors.Add(1)
			continue
		}
		if n > m.cfg.MaxDatagram {
			m.stats.received.Add(1)
			m.stats.truncated.Add(1)
			continue
		}
		m.dispatch(buf[:n], from)
	}
}

func (m *Mux) readBatch(s *socket) error {
	var br batchReader
	if s.is4 {
		br = ipv4.NewPacketConn(s.conn)
	} else {
		br = ipv6.NewPacketConn(s.conn)
	}
	// With UDP GRO the kernel hands over a flow's datagrams of one size as one, and says the
	// size in a control message; dispatchMessage cuts them apart again.
	gro := m.cfg.MaxDatagram >= 65535 && enableGRO(s.conn) // a coalesced read needs 64 KB
	msgs := make([]ipv6.Message, m.cfg.BatchSize)
	for i := range msgs {
		// One spare byte reveals truncation portably.
		msgs[i].Buffers = [][]byte{make([]byte, m.cfg.MaxDatagram+1)}
		if gro {
			msgs[i].OOB = make([]byte, offloadOOB)
		}
	}
	for {
		n, err := br.ReadBatch(msgs, 0)
		if err != nil {
			if fatalReadError(err) {
				return err
			}
			m.stats.readErrors.Add(1)
			continue
		}
		for i := range msgs[:n] {
			m.dispatchMessage(&msgs[i])
		}
		if m.dtlsBatch != nil {
			m.dtlsBatch.EndBatch()
		}
	}
}

func (m *Mux) dispatchMessage(msg *ipv6.Message) {
	if msg.N > m.cfg.MaxDatagram {
		m.stats.received.Add(1)
		m.stats.truncated.Add(1)
		return
	}
	ua, ok := msg.Addr.(*net.UDPAddr)
	if !ok {
		m.stats.received.Add(1)
		m.stats.readErrors.Add(1)
		return
	}
	b, from := msg.Buffers[0][:msg.N], ua.AddrPort()
	seg := 0
	if msg.NN > 0 {
		seg = groSize(msg.OOB[:msg.NN])
	}
	if seg <= 0 || seg >= len(b) {
		m.dispatchTo(b, from, true)
		return
	}
	m.stats.coalesced.Add(1)
	for len(b) > 0 {
		n := min(seg, len(b))
		m.dispatchTo(b[:n:n], from, true)
		b = b[n:]
	}
}

// fatalReadError reports whether a read error ends the reader: the socket
// was closed. Other errors (ICMP-induced ECONNREFUSED and the like) are
// transient on an unconnected UDP socket.
func fatalReadError(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
