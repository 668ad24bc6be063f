package stream

import (
	"io"
	"net"
)

// ReaderConn returns conn with its reads served by r, for a conn the TSP
// control plane read through a buffered reader that may hold the first
// frames. Deadlines apply to conn.
func ReaderConn(conn net.Conn, r io.Reader) net.Conn {
	return readerConn{Conn: conn, r: r}
}

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }
