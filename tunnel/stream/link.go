package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/tunnel"
	"github.com/rs/zerolog"
)

// Defaults applied by New for zero Options fields.
const (
	DefaultMTU          = 1400
	DefaultQueueBytes   = 256 << 10
	DefaultWriteTimeout = 10 * time.Second
	// ReceiveSlack is what a received packet may exceed the MTU by, so that
	// a peer with a slightly different MTU is not cut off.
	ReceiveSlack = 64
)

// Options configures a Link.
type Options struct {
	// MTU is the largest packet sent; received packets may be up to
	// MTU+ReceiveSlack bytes.
	MTU        int
	QueueBytes int // frames buffered but not yet written
	// WriteTimeout bounds one conn.Write, so that a peer that does not drain
	// the stream fails the link; negative means none.
	WriteTimeout      time.Duration
	KeepaliveInterval time.Duration // after this long without writing; zero: none
	IdleTimeout       time.Duration // fails the link after this long without reading; zero: none
	Now               func() time.Time
	Logger            zerolog.Logger
	// Control receives the TSP messages of control frames on the reader
	// goroutine; it must not block for long or retain msg. When nil, a
	// control frame fails the link.
	Control func(msg []byte)
}

func (o Options) withDefaults() Options {
	if o.MTU <= 0 {
		o.MTU = DefaultMTU
	}
	o.MTU = min(o.MTU, MaxFrameLen)
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Stats is a snapshot of a Link's counters.
type Stats struct {
	PacketsIn, BytesIn   uint64
	PacketsOut, BytesOut uint64 // queued for writing
	KeepalivesIn         uint64
	KeepalivesOut        uint64
	DroppedQueueFull     uint64 // tail drops: the write buffer was full
	DroppedOversize      uint64 // packets longer than the MTU or empty
	DroppedNotIPv4       uint64 // packets to write that are not IPv4
}

type counters struct {
	packetsIn, bytesIn, packetsOut, bytesOut atomic.Uint64
	keepalivesIn, keepalivesOut              atomic.Uint64
	droppedFull, droppedOversize             atomic.Uint64
	droppedNotIPv4                           atomic.Uint64
}

var errLocalClose = errors.New("stream: closed locally")

// Link carries IPv4 packets over a byte stream. It implements tunnel.Link.
type Link struct {
	conn      net.Conn
	r         tunnel.Receiver
	opts      Options
	maxPacket int
	stats     counters
	batch     [][]byte // the read loop's packets for the receiver (views into its buffer)
	// The read loop's too: its state across parking, whether a read deadline is armed, and
	// its buffer's size (tests).
	rs          readState
	deadlineSet bool
	readBuf     atomic.Int64
	parks       atomic.Uint64 // times the reader parked (tests)
	parkIdle    time.Duration // parkIdle (tests shorten it)
	stopCtx     func() bool   // Start's context.AfterFunc
	onDone      func(error)

	mu      sync.Mutex // guards pending, spare, closed, writing
	pending []byte     // frames waiting for the writer
	spare   []byte     // the writer's previous buffer, reused
	closed  bool
	writing bool          // a writer goroutine runs (see kick)
	wake    chan struct{} // cap 1: pending became non-empty
	writers sync.WaitGroup
	wrote   atomic.Bool // something was written since the last keepalive tick
	ka      *time.Timer // keepalive ticks, when KeepaliveInterval > 0

	failOnce sync.Once
	err      error         // first failure; set once before done closes
	done     chan struct{} // closed when the link failed or was closed
}

var _ tunnel.Link = (*Link)(nil)

// New returns a Link over conn, which it owns, delivering packets to r.
// WritePackets before Run queues them.
func New(conn net.Conn, r tunnel.Receiver, opts Options) *Link {
	opts = opts.withDefaults()
	return &Link{
		conn:      conn,
		r:         r,
		opts:      opts,
		maxPacket: min(opts.MTU+ReceiveSlack, MaxFrameLen),
		parkIdle:  parkIdle,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// Run moves packets until the peer closes the stream, an error occurs, ctx
// is done or Close is called. It returns nil for an orderly end (EOF,
// Close, ctx) and the error otherwise; either way the conn is closed.
func (l *Link) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	l.Start(ctx, func(err error) { errc <- err })
	return <-errc
}

// Start runs the link as Run does, without waiting: done gets what Run would return, once
// the link has ended and its writer has stopped. While the link is idle and its conn parks
// (Parker), no goroutine reads it.
func (l *Link) Start(ctx context.Context, done func(error)) {
	l.stopCtx = context.AfterFunc(ctx, func() { l.fail(errLocalClose) })
	l.onDone = done
	l.opts.Logger.Debug().Str("transport", tunnel.TLS).Msg("stream link started")
	if l.opts.KeepaliveInterval > 0 {
		l.mu.Lock()
		if !l.closed {
			l.ka = time.AfterFunc(l.opts.KeepaliveInterval, l.keepaliveTick)
		}
		l.mu.Unlock()
	}
	l.rs.lastRead = l.opts.Now()
	go l.read()
}

// read runs the read loop until the link ends or the reader parks; a parked reader is
// resumed here, in a new goroutine.
func (l *Link) read() {
	err := l.readLoop()
	if err == errParked {
		return
	}
	l.fail(err)
	l.writers.Wait()
	l.stopCtx()
	err = l.Err()
	l.opts.Logger.Debug().Str("transport", tunnel.TLS).Err(err).Msg("stream link stopped")
	l.onDone(err)
}

// Transport returns tunnel.TLS.
func (l *Link) Transport() string { return tunnel.TLS }

// Endpoint returns the TCP connection's remote address.
func (l *Link) Endpoint() netip.AddrPort {
	if ta, ok := l.conn.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Done is closed when the link has ended.
func (l *Link) Done() <-chan struct{} { return l.done }

// Err returns why the link ended: nil while it runs and for an orderly end.
func (l *Link) Err() error {
	select {
	case <-l.done:
	default:
		return nil
	}
	if errors.Is(l.err, errLocalClose) || errors.Is(l.err, io.EOF) || errors.Is(l.err, net.ErrClosed) {
		return nil
	}
	return l.err
}

// Close ends the link and closes the conn. Later writes fail with
// net.ErrClosed.
func (l *Link) Close() error {
	l.fail(errLocalClose)
	return nil
}

// fail records the first reason the link ends and tears it down.
func (l *Link) fail(err error) {
	l.failOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.err = err
		if l.ka != nil {
			l.ka.Stop()
		}
		l.mu.Unlock()
		close(l.done)
		_ = l.conn.Close()
	})
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	c := &l.stats
	return Stats{
		PacketsIn: c.packetsIn.Load(), BytesIn: c.bytesIn.Load(),
		PacketsOut: c.packetsOut.Load(), BytesOut: c.bytesOut.Load(),
		KeepalivesIn: c.keepalivesIn.Load(), KeepalivesOut: c.keepalivesOut.Load(),
		DroppedQueueFull: c.droppedFull.Load(), DroppedOversize: c.droppedOversize.Load(),
		DroppedNotIPv4: c.droppedNotIPv4.Load(),
	}
}

// WritePackets queues pkts without waiting for the network; packets that are
// empty, too long or do not fit are dropped and counted. It is safe for
// concurrent use and does not retain pkts.
func (l *Link) WritePackets(pkts [][]byte) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	queued := false
	for _, p := range pkts {
		switch {
		case len(p) == 0 || len(p) > l.opts.MTU:
			l.stats.droppedOversize.Add(1)
		case len(p) < MinPacketLen || p[0]>>4 != 4:
			// Not IPv4 (a TUN device's router solicitations): the peer would
			// take it for lost framing.
			l.stats.droppedNotIPv4.Add(1)
		case len(l.pending)+HeaderLen+len(p) > l.opts.QueueBytes:
			l.stats.droppedFull.Add(1)
		default:
			l.pending = AppendFrame(l.pending, p)
			l.stats.packetsOut.Add(1)
			l.stats.bytesOut.Add(uint64(len(p)))
			queued = true
		}
	}
	if queued {
		l.kickLocked()
	}
	l.mu.Unlock()
	return nil
}

// writerLinger is how long the writer waits for more after it wrote everything pending before
// it exits: a busy link keeps one writer goroutine, an idle one has none.
const writerLinger = 2 * time.Second

// kickLocked has what is pending written: it wakes the writer, or starts one if none runs.
// l.mu is held.
func (l *Link) kickLocked() {
	if l.closed {
		return
	}
	if !l.writing {
		l.writing = true
		l.writers.Add(1)
		go l.routineWrite()
		return
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// routineWrite writes what is pending, one Write per wake-up, and exits writerLinger after
// the last write, giving its buffers back.
func (l *Link) routineWrite() {
	defer l.writers.Done()
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		if err := l.flush(); err != nil {
			l.fail(fmt.Errorf("stream: write: %w", err))
			return
		}
		linger.Reset(writerLinger)
		select {
		case <-l.done:
			return
		case <-l.wake:
		case <-linger.C:
			l.mu.Lock()
			if len(l.pending) == 0 { // both buffers go: an idle link holds none
				l.writing, l.pending, l.spare = false, nil, nil
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
		}
	}
}

// keepaliveTick queues a keepalive frame if nothing was written since the last tick, and
// arms the next tick.
func (l *Link) keepaliveTick() {
	if !l.wrote.Swap(false) {
		l.mu.Lock()
		if !l.closed {
			l.pending = AppendFrame(l.pending, nil)
			l.stats.keepalivesOut.Add(1)
			l.kickLocked()
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	if !l.closed {
		l.ka.Reset(l.opts.KeepaliveInterval)
	}
	l.mu.Unlock()
}

// readBufMax is the size a busy stream's read buffer grows to; it shrinks back after
// shrinkAfter small reads in a row (see readLoop).
const (
	// readBufIdle is the read buffer of a link that carries no traffic: room for
	// keepalives and control frames.
	readBufIdle = 512
	readBufMax  = 32 << 10
	shrinkAfter = 64
	// readShrinkIdle is how long a large, empty read buffer waits for data before it is
	// given back.
	readShrinkIdle = 2 * time.Second
	// parkIdle is how long the reader of a conn that parks waits, with its small buffer
	// empty, before it parks: a link with a packet now and then keeps its goroutine.
	parkIdle = time.Second
)

const receiveBatch = 64

func (l *Link) flush() error {
	l.mu.Lock()
	buf := l.pending
	l.pending, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	if len(buf) == 0 {
		l.putSpare(buf)
		return nil
	}
	if l.opts.WriteTimeout > 0 {
		if err := l.conn.SetWriteDeadline(l.opts.Now().Add(l.opts.WriteTimeout)); err != nil {
			return err
		}
	}
	_, err := l.conn.Write(buf)
	l.wrote.Store(true)
	l.putSpare(buf)
	return err
}

func (l *Link) putSpare(buf []byte) {
	l.mu.Lock()
	l.spare = buf[:0]
	l.mu.Unlock()
}

// readState is the read loop's, kept while it is parked.
type readState struct {
	buf                    []byte
	start, end, smallReads int
	lastRead               time.Time
	parked                 bool // resumed from parking: read before parking again
}

// errParked ends a read loop whose reader parked: it is resumed by the conn.
var errParked = errors.New("stream: reader parked")

// readLoop parses frames out of a buffer filled from conn and hands each
// packet to the receiver. A frame that does not fit makes the buffer grow.
func (l *Link) readLoop() error {
	// An idle link reads keepalives into readBufIdle bytes; a read that fills
	// them means more is waiting (or a frame larger than that), and the buffer
	// grows to large, which holds two frames at least. It shrinks back after
	// shrinkAfter reads in a row that would have fit, or when nothing came for
	// readShrinkIdle with the buffer empty (a burst ended; the link may stay
	// idle for hours); so does the receive batch. When nothing came for
	// parkIdle with the small buffer empty, the reader parks if the conn can
	// (Parker): buffer and batch go, and the goroutine ends until data comes.
	small := readBufIdle
	large := max(readBufMax, 2*(HeaderLen+l.maxPacket))
	parker, _ := l.conn.(Parker)
	rs := &l.rs
	buf, start, end, smallReads, lastRead := rs.buf, rs.start, rs.end, rs.smallReads, rs.lastRead
	resumed := rs.parked
	if buf == nil {
		buf = make([]byte, small)
	}
	shrink := func() {
		buf, start, end, smallReads = make([]byte, small), 0, 0, 0
		l.batch = nil
	}
	for {
		switch {
		case end == len(buf) && len(buf) < large:
			nb := make([]byte, large)
			copy(nb, buf[start:end])
			buf, start, end, smallReads = nb, 0, end-start, 0
		case len(buf) > small && start == end && smallReads >= shrinkAfter:
			shrink()
		}
		l.readBuf.Store(int64(len(buf)))
		n, err := l.deliver(buf[start:end])
		if err != nil {
			return err
		}
		start += n
		if start == end {
			start, end = 0, 0
		} else if len(buf)-end < min(len(buf)/2, HeaderLen+l.maxPacket) {
			end = copy(buf, buf[start:end])
			start = 0
		}
		shrinkWait := len(buf) > small && start == end
		parkWait := parker != nil && len(buf) == small && start == end && !resumed
		if parkWait && !l.opts.Now().Before(lastRead.Add(l.parkIdle)) {
			var d time.Time
			if l.opts.IdleTimeout > 0 {
				d = lastRead.Add(l.opts.IdleTimeout)
			}
			*rs = readState{lastRead: lastRead, smallReads: smallReads, parked: true}
			l.batch = nil
			l.readBuf.Store(0)
			if parker.Park(d, l.read) {
				l.parks.Add(1)
				return errParked // rs belongs to the resumed reader now
			}
			l.readBuf.Store(int64(len(buf)))
			parkWait = false // it cannot park now: this read waits for data
		}
		// A deadline that cannot be set on a conn the peer has closed (net.Pipe) leaves the
		// read to tell EOF; on a conn that still reads, it is the link's end.
		derr := l.setReadDeadline(lastRead, shrinkWait, parkWait)
		n, err = l.conn.Read(buf[end:])
		resumed = false
		if err == nil && derr != nil {
			return derr
		}
		end += n
		if n > 0 {
			lastRead = l.opts.Now()
		}
		if n < small/2 {
			smallReads++
		} else {
			smallReads = 0
		}
		if err != nil {
			var ne net.Error
			if (shrinkWait || parkWait) && n == 0 && errors.As(err, &ne) && ne.Timeout() && !l.idleExpired(lastRead) {
				if shrinkWait {
					shrink()
				}
				continue
			}
			if errors.Is(err, io.EOF) && start == end {
				return io.EOF
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("stream: read: %w", io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("stream: read: %w", err)
		}
	}
}

// deliver hands every complete frame in b to the receiver, the packets between two control
// frames in one batch, and returns the bytes consumed.
func (l *Link) deliver(b []byte) (int, error) {
	off, err := l.deliverFrames(b)
	if len(l.batch) > 0 {
		l.r.ReceivePackets(l.batch)
		clear(l.batch)
		l.batch = l.batch[:0]
	}
	return off, err
}

func (l *Link) deliverFrames(b []byte) (int, error) {
	off := 0
	for {
		if isControl(b[off:]) {
			msg, n, err := parseControl(b[off:])
			if errors.Is(err, errNeedMore) {
				return off, nil
			}
			if err != nil {
				return off, err
			}
			off += n
			if l.opts.Control == nil {
				return off, fmt.Errorf("%w: control frame on a link without a control handler", ErrNotIPv4)
			}
			if len(l.batch) > 0 { // the packets before it go first
				l.r.ReceivePackets(l.batch)
				clear(l.batch)
				l.batch = l.batch[:0]
			}
			l.opts.Control(msg)
			continue
		}
		pkt, n, err := parseFrame(b[off:], l.maxPacket)
		if errors.Is(err, errNeedMore) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
		off += n
		if pkt == nil {
			l.stats.keepalivesIn.Add(1)
			continue
		}
		l.stats.packetsIn.Add(1)
		l.stats.bytesIn.Add(uint64(len(pkt)))
		if l.batch == nil { // made for traffic, given back with the large read buffer
			l.batch = make([][]byte, 0, receiveBatch)
		}
		l.batch = append(l.batch, pkt)
		if len(l.batch) == cap(l.batch) {
			l.r.ReceivePackets(l.batch)
			clear(l.batch)
			l.batch = l.batch[:0]
		}
	}
}

// setReadDeadline arms the next read's deadline: IdleTimeout after the last data read, or
// sooner: readShrinkIdle from now when shrinkWait (the read buffer is large and empty),
// parkIdle after the last read when parkWait (the reader parks then).
func (l *Link) setReadDeadline(lastRead time.Time, shrinkWait, parkWait bool) error {
	var d time.Time
	if l.opts.IdleTimeout > 0 {
		d = lastRead.Add(l.opts.IdleTimeout)
	}
	sooner := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if shrinkWait {
		sooner(l.opts.Now().Add(readShrinkIdle))
	}
	if parkWait {
		sooner(lastRead.Add(l.parkIdle))
	}
	if d.IsZero() && !l.deadlineSet {
		return nil
	}
	l.deadlineSet = !d.IsZero()
	return l.conn.SetReadDeadline(d)
}

// idleExpired reports whether IdleTimeout has passed since lastRead.
func (l *Link) idleExpired(lastRead time.Time) bool {
	return l.opts.IdleTimeout > 0 && !l.opts.Now().Before(lastRead.Add(l.opts.IdleTimeout))
}
