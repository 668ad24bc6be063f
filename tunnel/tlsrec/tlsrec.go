package tlsrec

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/tunnel/record"
)

const (
	// ALPN is the protocol name a client offers, before "tsp/2", to have the records taken
	// over after the handshake.
	ALPN = "tsp/2-rec1"
	// Marker is the TLS application data each side sends after the handshake: the last TLS
	// record of its direction.
	Marker = "DSTM-REC1\r\n"
	// ExporterLabel is the RFC 5705 label of the two directions' secrets, the client's first.
	ExporterLabel = "EXPORTER-dstm-stream-v1"
	// MaxPlaintext is the most stream bytes a record carries, as in TLS.
	MaxPlaintext = 16384
	// lenLen is the length prefix; maxRecord the longest data record after it.
	lenLen    = 2
	maxRecord = MaxPlaintext + record.Overhead
	// smallRecord is the longest record read into the Conn's own array. A longer one gets a
	// buffer of its own: one of its size, given back once read, below bulkRecord (TSP
	// messages); one for any record from there on, kept until a small record comes (an idle
	// stream's keepalives), so that an idle Conn holds no buffer.
	smallRecord = 96
	bulkRecord  = 4096
	// keepWrite: a write of at least this much keeps its buffer for the next (bulk data); a
	// smaller write's buffer, and what was kept before it, is left to the collector.
	keepWrite = 2048
	// closeTimeout bounds the close record's write.
	closeTimeout = 5 * time.Second
)

// Errors of a Conn's reads.
var (
	ErrMarker = errors.New("tlsrec: the peer's first application data is not the marker")
	ErrLength = errors.New("tlsrec: record length out of range")
)

// Conn is a TSP-SSL connection after the switch: a net.Conn whose reads and writes are stream
// records on the TCP connection under it. One goroutine may read while others write.
type Conn struct {
	net.Conn // the TCP connection: deadlines, addresses and Close go to it
	sealer   *record.Sealer
	opener   *record.Opener

	wmu    sync.Mutex
	wbuf   []byte
	wended bool  // the close record was sent
	werr   error // a write that failed (perhaps part way): the stream is broken; sticky

	// Read state, owned by the reader; a read that stops (deadline) resumes where it was.
	lenBuf [lenLen]byte
	lenN   int    // bytes of the length prefix read
	recLen int    // the record's length, once the prefix is complete
	recN   int    // bytes of the record read
	rec    []byte // the record being read: small or a larger buffer
	plain  []byte // opened content not yet returned, in rec
	small  [smallRecord]byte
	rerr   error // a failure that ends reading; sticky
	closed atomic.Bool
}

// suiteOf is the AEAD of the stream records for a TLS cipher suite.
func suiteOf(cs uint16) record.Suite {
	switch cs {
	case tls.TLS_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return record.ChaCha20Poly1305
	}
	return record.AES256GCM
}

// newConn derives the record keys of tc's session for raw.
func newConn(tc *tls.Conn, raw net.Conn, server bool) (*Conn, error) {
	cs := tc.ConnectionState()
	exp, err := cs.ExportKeyingMaterial(ExporterLabel, nil, record.ExporterLen)
	if err != nil {
		return nil, fmt.Errorf("tlsrec: export: %w", err)
	}
	sec, err := record.SplitSecrets(exp)
	if err != nil {
		return nil, err
	}
	send, recv := sec.Directions(server)
	return newConnKeys(raw, suiteOf(cs.CipherSuite), send, recv)
}

// newConnKeys is a Conn on raw that seals with send and opens with recv.
func newConnKeys(raw net.Conn, suite record.Suite, send, recv [32]byte) (*Conn, error) {
	s, err := record.NewSealer(suite, send, 0)
	if err != nil {
		return nil, err
	}
	o, err := record.NewStreamOpener(suite, recv, 0)
	if err != nil {
		return nil, err
	}
	c := &Conn{Conn: raw, sealer: s, opener: o}
	c.rec = c.small[:0]
	return c, nil
}

// Switch exchanges markers on tc, whose handshake is done and whose reads went through bc
// (NewBoundaryConn over raw), and returns the Conn that carries the stream on raw from there.
// The caller sets deadlines on raw for the exchange and drops tc.
func Switch(tc *tls.Conn, bc *BoundaryConn, raw net.Conn, server bool) (*Conn, error) {
	if _, err := tc.Write([]byte(Marker)); err != nil {
		return nil, fmt.Errorf("tlsrec: send marker: %w", err)
	}
	var m [len(Marker)]byte
	if _, err := io.ReadFull(tc, m[:]); err != nil {
		return nil, fmt.Errorf("tlsrec: read marker: %w", err)
	}
	if string(m[:]) != Marker || !bc.atBoundary() {
		return nil, ErrMarker
	}
	return newConn(tc, raw, server)
}

// Write seals b into stream records and writes them in one write.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.wended {
		return 0, net.ErrClosed
	}
	need := len(b) + (len(b)/MaxPlaintext+1)*(lenLen+record.Overhead)
	buf := c.wbuf[:0]
	if cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	for rest := b; len(rest) > 0; {
		chunk := rest[:min(len(rest), MaxPlaintext)]
		rest = rest[len(chunk):]
		var err error
		if buf, err = c.seal(buf, chunk); err != nil {
			return 0, err
		}
	}
	_, err := c.Conn.Write(buf)
	if len(b) >= keepWrite {
		c.wbuf = buf[:0]
	} else {
		c.wbuf = nil // an idle stream keeps no write buffer
	}
	if err != nil {
		c.werr = err
		return 0, err
	}
	return len(b), nil
}

// seal appends the length-prefixed record of content to buf.
func (c *Conn) seal(buf, content []byte) ([]byte, error) {
	off := len(buf)
	buf = append(buf, 0, 0)
	buf, err := c.sealer.Seal(buf, content)
	if err != nil {
		return buf[:off], fmt.Errorf("tlsrec: %w", err)
	}
	binary.BigEndian.PutUint16(buf[off:], uint16(len(buf)-off-lenLen))
	return buf, nil
}

// CloseWrite sends the close record: the peer reads io.EOF after what was written.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendCloseLocked()
}

// sendCloseLocked sends the close record once; c.wmu is held.
func (c *Conn) sendCloseLocked() error {
	if c.wended {
		return nil
	}
	c.wended = true
	rec, err := c.seal(make([]byte, 0, lenLen+record.Overhead), nil)
	if err != nil {
		return err
	}
	_, err = c.Conn.Write(rec)
	return err
}

// Close sends the close record and closes the TCP connection. A Close during a Write (one
// that may be blocked on a peer that reads nothing) only closes, as crypto/tls's does, and so
// does a second one.
func (c *Conn) Close() error {
	if !c.closed.Swap(true) && c.wmu.TryLock() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeTimeout))
		_ = c.sendCloseLocked()
		c.wmu.Unlock()
	}
	return c.Conn.Close()
}

// Client runs the TLS handshake on raw with cfg and returns the connection to speak TSP on:
// a *Conn when the server chose ALPN (which cfg.NextProtos should offer first), the
// *tls.Conn otherwise; and the TLS connection's state. The handshake and the markers end by
// ctx's deadline, which raw keeps. On an error raw is closed.
func Client(ctx context.Context, raw net.Conn, cfg *tls.Config) (net.Conn, tls.ConnectionState, error) {
	bc := NewBoundaryConn(raw)
	tc := tls.Client(bc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, tls.ConnectionState{}, err
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ALPN {
		bc.PassThrough()
		return tc, cs, nil
	}
	if d, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(d) // for the markers; the caller sets its own after
	}
	c, err := Switch(tc, bc, raw, false)
	if err != nil {
		raw.Close()
		return nil, cs, err
	}
	return c, cs, nil
}

// Read returns the stream's next bytes: the rest of the last record opened, or the next
// record's content.
func (c *Conn) Read(p []byte) (int, error) {
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.readRecord(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, err // a deadline: the next Read resumes
			}
			c.rerr = err
			return 0, err
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	if len(c.plain) == 0 && cap(c.rec) > smallRecord && cap(c.rec) < bulkRecord {
		c.rec = c.small[:0]
	}
	return n, nil
}

// Park has the next Read wait without a goroutine when no record is partly read or unread
// and the connection below parks (see stream.Parker); false otherwise.
func (c *Conn) Park(deadline time.Time, resume func()) bool {
	p, ok := c.Conn.(interface {
		Park(deadline time.Time, resume func()) bool
	})
	return ok && len(c.plain) == 0 && c.lenN == 0 && c.rerr == nil && p.Park(deadline, resume)
}

// readRecord reads and opens the next record into c.plain, resuming a partial one.
func (c *Conn) readRecord() error {
	for c.lenN < lenLen {
		n, err := c.Conn.Read(c.lenBuf[c.lenN:])
		c.lenN += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF // no close record: truncated
			}
			return err
		}
	}
	if c.recLen == 0 {
		l := int(binary.BigEndian.Uint16(c.lenBuf[:]))
		if l < record.Overhead || l > maxRecord {
			return fmt.Errorf("%w: %d bytes", ErrLength, l)
		}
		c.recLen, c.recN = l, 0
		switch {
		case l <= smallRecord:
			c.rec = c.small[:l]
		case cap(c.rec) >= l && cap(c.rec) > smallRecord:
			c.rec = c.rec[:l]
		case l < bulkRecord:
			c.rec = make([]byte, l) // a TSP message: given back once read
		default:
			c.rec = make([]byte, l, maxRecord) // bulk data: kept while it flows
		}
	}
	for c.recN < c.recLen {
		n, err := c.Conn.Read(c.rec[c.recN:c.recLen])
		c.recN += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	c.lenN, c.recLen = 0, 0
	content, _, err := c.opener.Open(c.rec) // the counter must be the next (ErrOrder)
	if err != nil {
		return fmt.Errorf("tlsrec: %w", err)
	}
	if len(content) == 0 {
		return io.EOF // the close record
	}
	c.plain = content
	return nil
}
