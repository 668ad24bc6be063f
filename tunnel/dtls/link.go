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
	// conn is the link's pion Conn, nil once the server has let it go (detach).
	conn  atomic.Pointer[piondtls.Conn]
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
	// detachPending, set by a record handler (with a read deadline detachGrace ahead), ends
	// the read loop with errDetach at the next deadline; onDetach then lets the DTLS state go
	// and the link lives on data records alone (server only). The grace lets DTLS records
	// the client sent before it switched still arrive.
	detachPending bool
	onDetach      func()
	// endMu guards onEnd and idleTimer, which detachFrom sets while finish may run, and
	// afterDone.
	endMu     sync.Mutex
	afterDone []func()
	// onEnd runs once when a detached link ends.
	onEnd func()
	// idleTimer and idleSeen watch a detached link's activity (no pion read deadline then);
	// idleSeen is touched by the timer's function only.
	idleTimer *time.Timer
	idleSeen  uint64

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
	l := &link{
		token: token, idle: idle, now: now,
		onToken: func() {}, onRecord: func() {},
		done: make(chan struct{}),
	}
	l.conn.Store(conn)
	return l
}

// errDetach ends the read loop of a link that goes on without its DTLS state.
var errDetach = errors.New("dtls: detached")

// detachGrace is how long a server keeps a link's DTLS state after the client accepted data
// records of version 2: DTLS records it sent before are still read.
const detachGrace = time.Second

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
	conn := l.conn.Load()
	if conn == nil {
		return net.ErrClosed
	}
	for _, p := range pkts {
		if len(p) == 0 {
			continue
		}
		if _, err := conn.Write(p); err != nil {
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

// WritesDirect reports whether writes go out as data records: sealed and sent on the shared
// UDP socket, they never wait on this peer (tunnel.DirectWriter). Writes through pion's
// records do not qualify.
func (l *link) WritesDirect() bool { return l.data.send.Load() && l.data.path.Load() != nil }

// Close sends a close_notify (and, with data records of version 2, a close record) and
// closes the link; later writes fail with net.ErrClosed.
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
	conn := l.conn.Load()
	if conn == nil {
		return netip.AddrPort{}
	}
	ua, ok := conn.RemoteAddr().(*net.UDPAddr)
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

// AfterDone runs f on a goroutine of its own once the link has ended (at once if it has), so
// that whoever waits for the end needs no goroutine until then.
func (l *link) AfterDone(f func()) {
	l.endMu.Lock()
	defer l.endMu.Unlock()
	select {
	case <-l.done:
		go f()
	default:
		l.afterDone = append(l.afterDone, f)
	}
}

func (l *link) finish(err error) {
	l.once.Do(func() {
		l.err = err
		l.endMu.Lock()
		close(l.done)
		for _, f := range l.afterDone {
			go f()
		}
		l.afterDone = nil
		l.endMu.Unlock()
		if !errors.Is(err, io.EOF) {
			l.sendClose()
		}
		if conn := l.conn.Load(); conn != nil {
			_ = conn.Close()
			return
		}
		l.endDetached()
	})
}

// endDetached stops a detached link's timer and runs its onEnd, once the link has ended and
// both are set (finish and detachFrom each call it: whichever comes last does the work).
func (l *link) endDetached() {
	l.endMu.Lock()
	defer l.endMu.Unlock()
	select {
	case <-l.done:
	default:
		return
	}
	if l.idleTimer != nil {
		l.idleTimer.Stop()
	}
	if l.onEnd != nil {
		l.onEnd()
		l.onEnd = nil
	}
}

// run reads the link's DTLS records until it ends, or until a record handler detaches it:
// then onDetach runs and the link goes on with data records alone.
func (l *link) run() {
	err := l.readLoop()
	if errors.Is(err, errDetach) {
		l.onDetach()
		return
	}
	l.finish(err)
}

// detached reports whether the link lives without its DTLS state.
func (l *link) detached() bool { return l.conn.Load() == nil }

// setDetached gives a link that lost its DTLS state what ends it: onEnd, and a timer that
// ends it with ErrIdle after a period of IdleTimeout with no data record from the peer. A
// link that ended meanwhile runs onEnd at once.
func (l *link) setDetached(onEnd func()) {
	l.endMu.Lock()
	l.onEnd = onEnd
	if l.idle > 0 {
		l.idleSeen = l.activity.Load()
		l.idleTimer = time.AfterFunc(l.idle, l.checkIdle)
	}
	l.endMu.Unlock()
	l.endDetached()
}

func (l *link) checkIdle() {
	now := l.activity.Load()
	if now == l.idleSeen {
		l.finish(ErrIdle)
		return
	}
	l.idleSeen = now
	l.endMu.Lock()
	l.idleTimer.Reset(l.idle)
	l.endMu.Unlock()
}

func (l *link) readLoop() error {
	buf := make([]byte, maxRecord)
	seen := l.activity.Load()
	if err := l.armIdle(); err != nil {
		return err
	}
	conn := l.conn.Load()
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if l.detachPending && errors.Is(err, context.DeadlineExceeded) {
				return errDetach
			}
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
	return l.conn.Load().SetReadDeadline(l.now().Add(l.idle))
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

var (
	_ tunnel.Link         = (*ServerLink)(nil)
	_ tunnel.DirectWriter = (*ServerLink)(nil)
)

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
	if _, err := sl.conn.Load().Write(sl.token); err != nil {
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
	dp, err := newDataPath(sl.conn.Load(), s.suite, sid, true)
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
		if n.version >= dataV2 && !s.cfg.KeepDTLS && !sl.detachPending {
			d.v2.Store(true)
			sl.detachPending = true // see detachFrom
			_ = sl.conn.Load().SetReadDeadline(sl.now().Add(detachGrace))
		}
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

// sendOffer offers version 2 and then version 1, so that a client that speaks only version 1
// (it counts the other as malformed) accepts that.
func (sl *ServerLink) sendOffer(suite record.Suite, sid uint32) error {
	sl.data.offers.Add(1)
	sl.data.lastOffer.Store(sl.now().UnixNano())
	conn := sl.conn.Load()
	for _, v := range [...]byte{dataV2, dataV1} {
		if _, err := conn.Write(negotiation{kind: negOffer, version: v, suite: suite, session: sid}.marshal()); err != nil {
			return fmt.Errorf("dtls: data record offer: %w", err)
		}
	}
	return nil
}

// detachFrom lets the link's DTLS state go once the client accepted version 2: pion's Conn is
// closed without a close_notify (the peer's writes are muted first), the peer leaves the
// server's tables, and the link lives on in byData, carried by data records, until a close
// record, Close or its idle timeout. What stays per session is the link, its keys and replay
// window: no goroutine, no pion buffers.
func (sl *ServerLink) detachFrom(s *Server, p *peer) {
	d := &sl.data
	d.roamMu.Lock()
	d.onRoam = func(netip.AddrPort) { s.stats.roams.Add(1) } // the peer is gone: data records carry the roaming alone
	d.roamMu.Unlock()
	p.mute.Store(true)
	s.mu.Lock()
	s.detachedLinks++
	s.mu.Unlock()
	sid := d.path.Load().session
	conn := sl.conn.Swap(nil)
	_ = conn.Close()
	p.setConn(nil)
	sl.setDetached(func() {
		s.unregisterData(sid, sl)
		s.mu.Lock()
		s.detachedLinks--
		s.mu.Unlock()
	})
}
