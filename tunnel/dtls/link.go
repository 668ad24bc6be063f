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
	"github.com/dstmgw/dstm/tunnel/record"
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
	// Data records: whether they carry the packets, and those dropped by reason.
	DataRecords                                  bool
	DroppedForged, DroppedReplayed, DroppedShort uint64
}

// link is what ServerLink and ClientLink share: one pion Conn carrying one
// IPv4 packet per application record after the token exchange, or per data
// record (data.go) once both sides agreed on them.
type link struct {
	conn  *piondtls.Conn
	token []byte
	idle  time.Duration // 0: no idle timeout
	now   func() time.Time
	recv  tunnel.Receiver // set before run and before data records are negotiated
	// onToken runs for a record equal to the token, after onRecord.
	onToken  func()
	onRecord func()
	// onNegotiation runs for a data-record offer or accept; nil: such records are malformed.
	onNegotiation func(negotiation)
	// onDTLSPacket runs for each IPv4 packet that came in a DTLS record.
	onDTLSPacket func()

	data     dataState
	activity atomic.Uint64 // records and data records received: the idle timer's evidence

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

// WritePackets sends each packet as one data record once they are agreed,
// as one DTLS record before. Empty packets are skipped. It is safe for
// concurrent use and does not retain pkts.
func (l *link) WritePackets(pkts [][]byte) error {
	select {
	case <-l.done:
		return net.ErrClosed
	default:
	}
	if l.data.send.Load() {
		if dp := l.data.path.Load(); dp != nil {
			return l.writeData(dp, pkts)
		}
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

// Endpoint is the peer's address as of the newest authenticated record (data
// records once agreed).
func (l *link) Endpoint() netip.AddrPort {
	if r := l.data.remote.Load(); r != nil && l.data.send.Load() {
		return *r
	}
	return l.pionEndpoint()
}

// pionEndpoint is the peer's address as pion has it: that of the newest DTLS record.
func (l *link) pionEndpoint() netip.AddrPort {
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
		DataRecords:      l.data.send.Load(),
		DroppedForged:    l.data.drops[dropForged].Load(), DroppedReplayed: l.data.drops[dropReplayed].Load(),
		DroppedShort: l.data.drops[dropShort].Load(),
	}
}

func (l *link) finish(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
		_ = l.conn.Close()
	})
}

func (l *link) run() {
	l.finish(l.readLoop())
}

func (l *link) readLoop() error {
	buf := make([]byte, maxRecord)
	seen := l.activity.Load()
	if err := l.armIdle(); err != nil {
		return err
	}
	for {
		n, err := l.conn.Read(buf)
		if err != nil {
			if !l.survivable(err, &seen) {
				return l.readError(err, seen)
			}
			continue
		}
		l.activity.Add(1)
		l.handleRecord(buf[:n])
	}
}

// survivable decides whether the reader goes on after err: an idle
// deadline with traffic since the last one (seen: the activity then)
// re-arms, a record too large for the buffer is dropped.
func (l *link) survivable(err error, seen *uint64) bool {
	var te *piondtls.TemporaryError
	switch {
	case l.idle > 0 && errors.Is(err, context.DeadlineExceeded):
		now := l.activity.Load()
		if now == *seen {
			return false
		}
		*seen = now
		return l.armIdle() == nil
	case errors.As(err, &te):
		l.countMalformed()
		return true
	}
	return false
}

func (l *link) readError(err error, seen uint64) error {
	if l.idle > 0 && l.activity.Load() == seen && errors.Is(err, context.DeadlineExceeded) {
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

func (l *link) handleRecord(pkt []byte) {
	l.onRecord()
	if len(pkt) == tsp.TokenLen && bytes.Equal(pkt, l.token) {
		l.onToken()
		return
	}
	if l.onNegotiation != nil {
		if n, ok := parseNegotiation(pkt); ok {
			l.onNegotiation(n)
			return
		}
	}
	if len(pkt) < minIPv4 || pkt[0]>>4 != 4 {
		l.countMalformed()
		return
	}
	if l.onDTLSPacket != nil {
		l.onDTLSPacket()
	}
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(len(pkt)))
	l.one[0] = pkt
	l.recv.ReceivePackets(l.one[:])
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

// prepareData sets what the data records of the link need from the server, before the link
// can be found by its session id.
func (sl *ServerLink) prepareData(s *Server, p *peer) {
	d := &sl.data
	from := sl.pionEndpoint()
	d.remote.Store(&from)
	d.writeBatch = s.writeBatch
	d.batches = &s.sealBatches
	d.total = &s.stats.dataDrops
	d.markDirty = s.markDirty
	d.onRoam = func(to netip.AddrPort) {
		p.dataRemote.Store(&to)
		s.moveAddr(p, to)
	}
}

// offerData sets up the link's data records under session id sid and offers them.
func (sl *ServerLink) offerData(s *Server, sid uint32) error {
	dp, err := newDataPath(sl.conn, s.suite, sid, true)
	if err != nil {
		return err
	}
	d := &sl.data
	d.path.Store(dp)
	sl.onNegotiation = func(n negotiation) {
		if n.kind != negAccept || n.session != sid || n.suite != s.suite {
			return
		}
		// Until a data record comes, records go where the accept came from.
		d.roamMu.Lock()
		if d.newest == 0 {
			from := sl.pionEndpoint()
			d.remote.Store(&from)
		}
		d.roamMu.Unlock()
		d.send.Store(true)
	}
	// DTLS records from the client while data records are not on: the offer may be lost.
	sl.onDTLSPacket = func() {
		now := s.cfg.Now().UnixNano()
		if !d.send.Load() && d.offers.Load() < maxOffers && now-d.lastOffer.Load() >= int64(offerEvery) {
			_ = sl.sendOffer(s.suite, sid)
		}
	}
	return sl.sendOffer(s.suite, sid)
}

func (sl *ServerLink) sendOffer(suite record.Suite, sid uint32) error {
	sl.data.offers.Add(1)
	sl.data.lastOffer.Store(sl.now().UnixNano())
	if _, err := sl.conn.Write(negotiation{kind: negOffer, suite: suite, session: sid}.marshal()); err != nil {
		return fmt.Errorf("dtls: data record offer: %w", err)
	}
	return nil
}
