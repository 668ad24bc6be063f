package tlsrec

import (
	"encoding/binary"
	"net"
	"sync/atomic"
)

// tlsHeaderLen is a TLS record's header: type, version, length.
const tlsHeaderLen = 5

// BoundaryConn is the connection crypto/tls reads through until the switch: a read returns
// at most the rest of the current TLS record (its header, then its body), so that crypto/tls
// has buffered nothing past the record it last asked for. PassThrough ends that (for a
// connection that does not switch), at a record boundary.
type BoundaryConn struct {
	net.Conn
	hdr  [tlsHeaderLen]byte
	hdrN int // header bytes of the current record read
	left int // body bytes of the current record still to read
	pass atomic.Bool
}

// NewBoundaryConn wraps c, which has delivered nothing of its TLS records yet.
func NewBoundaryConn(c net.Conn) *BoundaryConn { return &BoundaryConn{Conn: c} }

// PassThrough makes reads go straight to the connection; call it between records (after the
// handshake).
func (b *BoundaryConn) PassThrough() { b.pass.Store(true) }

// atBoundary reports whether the last read ended a record.
func (b *BoundaryConn) atBoundary() bool { return b.hdrN == 0 && b.left == 0 }

func (b *BoundaryConn) Read(p []byte) (int, error) {
	if b.pass.Load() || len(p) == 0 {
		return b.Conn.Read(p)
	}
	if b.hdrN < tlsHeaderLen {
		p = p[:min(len(p), tlsHeaderLen-b.hdrN)]
		n, err := b.Conn.Read(p)
		copy(b.hdr[b.hdrN:], p[:n])
		b.hdrN += n
		if b.hdrN == tlsHeaderLen {
			b.left = int(binary.BigEndian.Uint16(b.hdr[3:]))
			if b.left == 0 {
				b.hdrN = 0
			}
		}
		return n, err
	}
	n, err := b.Conn.Read(p[:min(len(p), b.left)])
	b.left -= n
	if b.left == 0 {
		b.hdrN = 0
	}
	return n, err
}
