package udpmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/dstmgw/dstm/tunnel/record"
	"github.com/rs/zerolog"
)

// Handler consumes datagrams of one protocol. b is valid only during the
// call; HandleDatagram must not block for long because it runs on the
// socket's reader goroutine.
type Handler interface {
	HandleDatagram(b []byte, from netip.AddrPort)
}

// BatchHandler is a Handler that takes the datagrams of one read system call as a batch:
// the mux calls HandleBatchDatagram for each of them, with b valid until the EndBatch that
// follows on the same reader, and EndBatch before the reader reads again. Mux readers of
// different sockets may call both at the same time.
type BatchHandler interface {
	Handler
	HandleBatchDatagram(b []byte, from netip.AddrPort)
	EndBatch()
}

// Defaults applied by New for zero Config fields.
const (
	DefaultBufferBytes = 8 << 20 // kernel socket buffer, each direction
	DefaultBatchSize   = 32      // datagrams per recvmmsg
	DefaultMaxDatagram = 65535   // receive buffer per datagram slot
)

// Config configures a Mux.
type Config struct {
	// TSP and DTLS receive their datagrams; nil drops them
	// (Stats.DroppedNoHandler).
	TSP  Handler
	DTLS Handler
	// ReadBufferBytes and WriteBufferBytes size the kernel socket buffers;
	// zero means DefaultBufferBytes, negative leaves the kernel default.
	ReadBufferBytes  int
	WriteBufferBytes int
	BatchSize        int // datagrams read per system call
	MaxDatagram      int // longer datagrams are dropped (Stats.DroppedTruncated)
	Logger           zerolog.Logger
}

// Stats is a snapshot of a Mux's counters.
type Stats struct {
	Received         uint64 // datagrams read from the sockets
	TSP              uint64 // datagrams handed to the TSP handler
	DTLS             uint64 // datagrams handed to the DTLS handler
	DroppedJunk      uint64 // first byte neither TSP nor DTLS
	DroppedEmpty     uint64 // zero-length datagrams
	DroppedNoHandler uint64 // no handler configured for the protocol
	DroppedTruncated uint64 // longer than MaxDatagram
	Coalesced        uint64 // reads of several datagrams the kernel joined (UDP GRO), cut apart here
	ReadErrors       uint64 // transient read errors
	WriteErrors      uint64 // failed WriteTo calls
}

type counters struct {
	received, tsp, dtls               atomic.Uint64
	junk, empty, noHandler, truncated atomic.Uint64
	readErrors, writeErrors           atomic.Uint64
	coalesced                         atomic.Uint64
}

// Mux dispatches the datagrams of one UDP port to the TSP and DTLS handlers.
type Mux struct {
	cfg   Config
	socks []*socket
	// dtlsBatch is cfg.DTLS when it is a BatchHandler.
	dtlsBatch BatchHandler
	v4, v6    *socket // socket used by WriteTo per family
	stats     counters

	closeOnce sync.Once
	closeErr  error
}

type socket struct {
	conn *net.UDPConn
	is4  bool // bound to an IPv4 address (cannot send to IPv6)
	bw   *BatchWriter
}

// ErrNoSocket is returned by New without sockets and by WriteTo when no
// socket can reach the destination's address family.
var ErrNoSocket = errors.New("udpmux: no socket for address family")

// New returns a Mux that owns conns and sets their buffer sizes (a failure
// is logged at debug level only: the kernel default still works).
func New(cfg Config, conns ...*net.UDPConn) (*Mux, error) {
	if len(conns) == 0 {
		return nil, ErrNoSocket
	}
	cfg = withDefaults(cfg)
	m := &Mux{cfg: cfg}
	m.dtlsBatch, _ = cfg.DTLS.(BatchHandler)
	for _, c := range conns {
		la, ok := c.LocalAddr().(*net.UDPAddr)
		if !ok {
			return nil, fmt.Errorf("udpmux: unexpected local address %v", c.LocalAddr())
		}
		s := &socket{conn: c, is4: la.AddrPort().Addr().Unmap().Is4(), bw: NewBatchWriter(c)}
		m.socks = append(m.socks, s)
		m.pickWriter(s)
		m.setBuffers(s)
	}
	return m, nil
}

func withDefaults(cfg Config) Config {
	if cfg.ReadBufferBytes == 0 {
		cfg.ReadBufferBytes = DefaultBufferBytes
	}
	if cfg.WriteBufferBytes == 0 {
		cfg.WriteBufferBytes = DefaultBufferBytes
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.MaxDatagram <= 0 {
		cfg.MaxDatagram = DefaultMaxDatagram
	}
	return cfg
}

// pickWriter remembers the first socket of each family for WriteTo.
func (m *Mux) pickWriter(s *socket) {
	if s.is4 {
		if m.v4 == nil {
			m.v4 = s
		}
		return
	}
	if m.v6 == nil {
		m.v6 = s
	}
}

func (m *Mux) setBuffers(s *socket) {
	log := m.cfg.Logger.With().Str("local", s.conn.LocalAddr().String()).Logger()
	if n := m.cfg.ReadBufferBytes; n > 0 {
		got, err := setSocketBuffer(s.conn, n, true)
		log.Debug().Err(err).Int("want", n).Int("got", got).Msg("udp receive buffer")
	}
	if n := m.cfg.WriteBufferBytes; n > 0 {
		got, err := setSocketBuffer(s.conn, n, false)
		log.Debug().Err(err).Int("want", n).Int("got", got).Msg("udp send buffer")
	}
}

// Run reads and dispatches datagrams until ctx is done, Close is called
// (both return nil) or a socket fails. Call it once. It closes the sockets.
func (m *Mux) Run(ctx context.Context) error {
	errc := make(chan error, len(m.socks))
	var wg sync.WaitGroup
	for _, s := range m.socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- m.routineRead(s)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	}
	_ = m.Close()
	wg.Wait()
	return err
}

// Close closes the sockets; Run then returns. It is idempotent.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		var errs []error
		for _, s := range m.socks {
			if err := s.conn.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

// WriteTo sends one datagram to the given address from the socket of the
// matching family. It is safe for concurrent use.
func (m *Mux) WriteTo(b []byte, to netip.AddrPort) error {
	s := m.socketFor(to.Addr())
	if s == nil {
		return ErrNoSocket
	}
	if _, err := s.conn.WriteToUDPAddrPort(b, to); err != nil {
		m.stats.writeErrors.Add(1)
		return fmt.Errorf("udpmux: write to %v: %w", to, err)
	}
	return nil
}

// socketFor picks the IPv4 socket for IPv4 destinations when there is one,
// the (dual-stack) IPv6 socket otherwise.
func (m *Mux) socketFor(a netip.Addr) *socket {
	if a.Unmap().Is4() && m.v4 != nil {
		return m.v4
	}
	return m.v6
}

// Stats returns a snapshot of the counters.
func (m *Mux) Stats() Stats {
	c := &m.stats
	return Stats{
		Received:         c.received.Load(),
		TSP:              c.tsp.Load(),
		DTLS:             c.dtls.Load(),
		DroppedJunk:      c.junk.Load(),
		DroppedEmpty:     c.empty.Load(),
		DroppedNoHandler: c.noHandler.Load(),
		DroppedTruncated: c.truncated.Load(),
		ReadErrors:       c.readErrors.Load(),
		Coalesced:        c.coalesced.Load(),
		WriteErrors:      c.writeErrors.Load(),
	}
}

// Protocol classes returned by Classify.
type Protocol uint8

// Protocols a datagram's first byte selects.
const (
	Junk Protocol = iota // neither TSP nor DTLS
	TSP                  // high nibble 0xF
	DTLS                 // DTLS record content types 20–25, and dstm data records (record.Type)
)

// String names the protocol.
func (p Protocol) String() string {
	switch p {
	case TSP:
		return "tsp"
	case DTLS:
		return "dtls"
	default:
		return "junk"
	}
}

// Classify returns the protocol a datagram belongs to by its first byte.
func Classify(b []byte) Protocol {
	if len(b) == 0 {
		return Junk
	}
	switch c := b[0]; {
	case c>>4 == 0xF:
		return TSP
	case c >= 20 && c <= 25, c == record.Type:
		return DTLS
	default:
		return Junk
	}
}

func (m *Mux) dispatch(b []byte, from netip.AddrPort) {
	m.dispatchTo(b, from, false)
}

// dispatchTo hands b to its protocol's handler; inBatch: as part of a batch, for a
// BatchHandler.
func (m *Mux) dispatchTo(b []byte, from netip.AddrPort, inBatch bool) {
	m.stats.received.Add(1)
	if len(b) == 0 {
		m.stats.empty.Add(1)
		return
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	var h Handler
	switch Classify(b) {
	case TSP:
		h = m.cfg.TSP
		if h != nil {
			m.stats.tsp.Add(1)
		}
	case DTLS:
		h = m.cfg.DTLS
		if h != nil {
			m.stats.dtls.Add(1)
		}
	default:
		m.stats.junk.Add(1)
		return
	}
	if h == nil {
		m.stats.noHandler.Add(1)
		return
	}
	if inBatch && h == m.cfg.DTLS && m.dtlsBatch != nil {
		m.dtlsBatch.HandleBatchDatagram(b, from)
		return
	}
	h.HandleDatagram(b, from)
}
