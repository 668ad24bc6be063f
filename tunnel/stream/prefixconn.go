package stream

import (
	"net"
	"time"
)

// Parker is a conn whose next Read can wait without a goroutine (the gateway's idle
// connections). Park arranges for resume to be called, in a new goroutine, once a Read would
// not block (data, end of stream, an error, Close) or deadline (if not zero) has passed, and
// reports true; the caller then must not read until resumed. It reports false, and the caller
// reads as usual, when the conn cannot park, for example because it holds bytes read already.
type Parker interface {
	Park(deadline time.Time, resume func()) bool
}

// PrefixConn returns conn with prefix, bytes already read from it, served first. It parks
// (Parker) when prefix has been read and conn parks.
func PrefixConn(conn net.Conn, prefix []byte) net.Conn {
	return &prefixConn{Conn: conn, prefix: prefix}
}

type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) == 0 {
		return c.Conn.Read(b)
	}
	n := copy(b, c.prefix)
	c.prefix = c.prefix[n:]
	if len(c.prefix) == 0 {
		c.prefix = nil
	}
	return n, nil
}

func (c *prefixConn) Park(deadline time.Time, resume func()) bool {
	p, ok := c.Conn.(Parker)
	return ok && len(c.prefix) == 0 && p.Park(deadline, resume)
}
