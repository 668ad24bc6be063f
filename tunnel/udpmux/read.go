package udpmux

import (
	"errors"
	"net"

	"net/netip"
)

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
	r := NewBatchReader(s.conn, m.cfg.BatchSize, m.cfg.MaxDatagram)
	deliver := func(b []byte, from netip.AddrPort) { m.dispatchTo(b, from, true) }
	dropped := func(truncated bool) {
		m.stats.received.Add(1)
		if truncated {
			m.stats.truncated.Add(1)
		} else {
			m.stats.readErrors.Add(1)
		}
	}
	for {
		coalesced, err := r.Read(deliver, dropped)
		if err != nil {
			if fatalReadError(err) {
				return err
			}
			m.stats.readErrors.Add(1)
			continue
		}
		if coalesced > 0 {
			m.stats.coalesced.Add(uint64(coalesced))
		}
		if m.dtlsBatch != nil {
			m.dtlsBatch.EndBatch()
		}
	}
}

// fatalReadError reports whether a read error ends the reader: the socket
// was closed. Other errors (ICMP-induced ECONNREFUSED and the like) are
// transient on an unconnected UDP socket.
func fatalReadError(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
