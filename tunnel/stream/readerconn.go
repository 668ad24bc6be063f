package stream

import (
	"io"
	"net"
)

// ReaderConn returns conn with its reads served by r. Use it when the TSP
// control plane read conn through a buffered reader: the bytes after the
// tunnel accept, possibly the first frames, are in that reader's buffer,
// so the Link must read through it. Deadlines set on the result apply to
// conn, which r reads from.
func ReaderConn(conn net.Conn, r io.Reader) net.Conn {
	return readerConn{Conn: conn, r: r}
}

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }
