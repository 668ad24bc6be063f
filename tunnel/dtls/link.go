package dtls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
	piondtls "github.com/pion/dtls/v3"
)

const (
	// maxRecord is the largest DTLS plaintext (RFC 6347: 2^14 bytes).
	maxRecord = 1 << 14
	// minIPv4 is the shortest IPv4 packet (a header without options).
	minIPv4 = 20
)

// ErrIdle ends a link that received nothing for its idle timeout.
var ErrIdle = errors.New("dtls: link idle")

// errLocalClose marks a link ended by Close.
var errLocalClose = errors.New("dtls: closed locally")

// LinkStats is a snapshot of a link's counters.
type LinkStats struct {
	PacketsIn, BytesIn   uint64
	PacketsOut, BytesOut uint64
	DroppedMalformed     uint64 // records that are not IPv4 packets
}

// link is what ServerLink and ClientLink share: one pion Conn carrying one
// IPv4 packet per application record, after the token exchange.
type link struct {
	conn  *piondtls.Conn
	token []byte
	idle  time.Duration // 0: no idle timeout
	now   func() time.Time
	// onToken runs for a record equal to the token, after onRecord.
	onToken  func()
	onRecord func()

	packetsIn, bytesIn, packetsOut, bytesOut, malformed atomic.Uint64
	malformedTotal                                      *atomic.Uint64 // server-wide counter, may be nil

	one [1][]byte // the read loop's batch of one record

	once sync.Once
	err  error
	done chan struct{}
}

func newLink(conn *piondtls.Conn, token []byte, idle time.Duration, now func() time.Time) *link {
	return &link{
		conn: conn, token: token, idle: idle, now: now,
		onToken: func() {}, onRecord: func() {},
		done: make(chan struct{}),
	}
}

// WritePackets sends each packet as one DTLS record. Empty packets are
// skipped. It is safe for concurrent use and does not retain pkts.
func (l *link) WritePackets(pkts [][]byte) error {
	select {
	case <-l.done:
		return net.ErrClosed
	default:
	}
	for _, p := range pkts {
		if len(p) == 0 {
			continue
		}
		if _, err := l.conn.Write(p); err != nil {
			if errors.Is(err, piondtls.ErrConnClosed) {
				return net.ErrClosed
			}
			return fmt.Errorf("dtls: write: %w", err)
		}
		l.packetsOut.Add(1)
		l.bytesOut.Add(uint64(len(p)))
	}
	return nil
}

// Close sends a close_notify and closes the link; later writes fail with
// net.ErrClosed.
func (l *link) Close() error {
	l.finish(errLocalClose)
	return nil
}

// Done is closed when the link has ended.
func (l *link) Done() <-chan struct{} { return l.done }

// Err returns why the link ended: nil while it runs and after an orderly
// end (Close, or the peer's close_notify).
func (l *link) Err() error {
	select {
	case <-l.done:
	default:
		return nil
	}
	if errors.Is(l.err, errLocalClose) || errors.Is(l.err, io.EOF) {
		return nil
	}
	return l.err
}

// Transport returns tunnel.DTLS.
func (l *link) Transport() string { return tunnel.DTLS }

// Endpoint is the peer's address as of the newest authenticated record.
func (l *link) Endpoint() netip.AddrPort {
	ua, ok := l.conn.RemoteAddr().(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Stats returns a snapshot of the link's counters.
func (l *link) Stats() LinkStats {
	return LinkStats{
		PacketsIn: l.packetsIn.Load(), BytesIn: l.bytesIn.Load(),
		PacketsOut: l.packetsOut.Load(), BytesOut: l.bytesOut.Load(),
		DroppedMalformed: l.malformed.Load(),
	}
}

func (l *link) finish(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
		_ = l.conn.Close()
	})
}

func (l *link) run(recv tunnel.Receiver) {
	l.finish(l.readLoop(recv))
}

func (l *link) readLoop(recv tunnel.Receiver) error {
	buf := make([]byte, maxRecord)
	var rx uint64
	if err := l.armIdle(); err != nil {
		return err
	}
	for {
		n, err := l.conn.Read(buf)
		if err != nil {
			if !l.survivable(err, &rx) {
				return l.readError(err, rx)
			}
			continue
		}
		rx++
		l.handleRecord(buf[:n], recv)
	}
}

// survivable decides whether the reader goes on after err: an idle
// deadline with traffic since the last one re-arms, a record too large for
// the buffer is dropped.
func (l *link) survivable(err error, rx *uint64) bool {
	var te *piondtls.TemporaryError
	switch {
	case l.idle > 0 && errors.Is(err, context.DeadlineExceeded):
		if *rx == 0 {
			return false
		}
		*rx = 0
		return l.armIdle() == nil
	case errors.As(err, &te):
		l.countMalformed()
		return true
	}
	return false
}

func (l *link) readError(err error, rx uint64) error {
	if l.idle > 0 && rx == 0 && errors.Is(err, context.DeadlineExceeded) {
		return ErrIdle
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("dtls: read: %w", err)
}

func (l *link) armIdle() error {
	if l.idle <= 0 {
		return nil
	}
	return l.conn.SetReadDeadline(l.now().Add(l.idle))
}

func (l *link) handleRecord(pkt []byte, recv tunnel.Receiver) {
	l.onRecord()
	if len(pkt) == tsp.TokenLen && bytes.Equal(pkt, l.token) {
		l.onToken()
		return
	}
	if len(pkt) < minIPv4 || pkt[0]>>4 != 4 {
		l.countMalformed()
		return
	}
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(len(pkt)))
	l.one[0] = pkt
	recv.ReceivePackets(l.one[:])
	l.one[0] = nil
}

func (l *link) countMalformed() {
	l.malformed.Add(1)
	if l.malformedTotal != nil {
		l.malformedTotal.Add(1)
	}
}

// ServerLink is the server side of one bound DTLS link.
type ServerLink struct {
	*link
}

var _ tunnel.Link = (*ServerLink)(nil)

func newServerLink(conn *piondtls.Conn, token []byte, s *Server) *ServerLink {
	l := newLink(conn, token, s.cfg.IdleTimeout, s.cfg.Now)
	l.malformedTotal = &s.stats.droppedMalformed
	sl := &ServerLink{link: l}
	// A repeated token means the client missed the acknowledgement.
	l.onToken = func() { _ = sl.ack() }
	return sl
}

// ack echoes the token: the client's proof that the bind succeeded.
func (sl *ServerLink) ack() error {
	if _, err := sl.conn.Write(sl.token); err != nil {
		return fmt.Errorf("dtls: token ack: %w", err)
	}
	return nil
}
