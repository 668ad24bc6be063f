package dtls

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// RebindConn is a net.PacketConn whose socket can be replaced while a DTLS
// session runs over it: with RFC 9146 connection IDs the server follows the
// client to its new address without a new handshake.
type RebindConn struct {
	mu            sync.Mutex
	inner         net.PacketConn
	gen           uint64              // bumped by Rebind
	bw            *udpmux.BatchWriter // on inner, made on first use
	readDeadline  time.Time
	writeDeadline time.Time
	closed        bool
}

var _ net.PacketConn = (*RebindConn)(nil)

// NewRebindConn wraps inner, which it owns.
func NewRebindConn(inner net.PacketConn) *RebindConn {
	return &RebindConn{inner: inner}
}

// Rebind switches to newInner (owned from now on) and closes the previous
// socket, which releases a read blocked on it; the read continues on
// newInner. Deadlines carry over.
func (c *RebindConn) Rebind(newInner net.PacketConn) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = newInner.Close()
		return net.ErrClosed
	}
	old := c.inner
	c.inner = newInner
	c.bw = nil
	c.gen++
	errR := newInner.SetReadDeadline(c.readDeadline)
	errW := newInner.SetWriteDeadline(c.writeDeadline)
	c.mu.Unlock()
	return errors.Join(errR, errW, old.Close())
}

func (c *RebindConn) current() (net.PacketConn, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner, c.gen, c.closed
}

func (c *RebindConn) rebound(gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && c.gen != gen
}

// ReadFrom reads from the current socket.
func (c *RebindConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		inner, gen, closed := c.current()
		if closed {
			return 0, nil, net.ErrClosed
		}
		n, addr, err := inner.ReadFrom(b)
		if err != nil && c.rebound(gen) {
			continue
		}
		return n, addr, err
	}
}

// WriteTo writes from the current socket.
func (c *RebindConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	inner, gen, closed := c.current()
	if closed {
		return 0, net.ErrClosed
	}
	n, err := inner.WriteTo(b, addr)
	if err != nil && c.rebound(gen) {
		inner, _, _ = c.current()
		return inner.WriteTo(b, addr)
	}
	return n, err
}

// WriteBatch writes bufs to to from the current socket, several per system call when it is
// a *net.UDPConn (the data records' path).
func (c *RebindConn) WriteBatch(bufs [][]byte, to netip.AddrPort) error {
	c.mu.Lock()
	inner, gen, closed, bw := c.inner, c.gen, c.closed, c.bw
	if !closed && bw == nil {
		if u, ok := inner.(*net.UDPConn); ok {
			bw = udpmux.NewBatchWriter(u)
			c.bw = bw
		}
	}
	c.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	err := writeBatch(inner, bw, bufs, to)
	if err != nil && c.rebound(gen) {
		return c.WriteBatch(bufs, to)
	}
	return err
}

func writeBatch(c net.PacketConn, bw *udpmux.BatchWriter, bufs [][]byte, to netip.AddrPort) error {
	if bw != nil {
		return bw.WriteBatch(bufs, to)
	}
	ua := net.UDPAddrFromAddrPort(to)
	for _, b := range bufs {
		if _, err := c.WriteTo(b, ua); err != nil {
			return err
		}
	}
	return nil
}

// readBatches reads the current socket in batches until it is closed (net.ErrClosed) and
// goes on with the new one after a Rebind; a socket that is not a *net.UDPConn is read one
// datagram at a time.
func (c *RebindConn) readBatches(fn func([]byte, netip.AddrPort), end func()) error {
	buf := make([]byte, 65536)
	var r *udpmux.BatchReader
	var rgen uint64
	var pause errorPause
	for {
		inner, gen, closed := c.current()
		if closed {
			return net.ErrClosed
		}
		var err error
		if u, ok := inner.(*net.UDPConn); ok {
			if r == nil || rgen != gen {
				r, rgen = udpmux.NewBatchReader(u, clientBatch, 65535), gen
			}
			_, err = r.Read(fn, nil)
		} else {
			var n int
			var addr net.Addr
			n, addr, err = inner.ReadFrom(buf)
			if ua, ok := addr.(*net.UDPAddr); ok && err == nil {
				fn(buf[:n], ua.AddrPort())
			}
		}
		switch {
		case err == nil:
			pause.after(nil)
			end()
		case c.rebound(gen):
		case errors.Is(err, net.ErrClosed):
			return err
		default:
			pause.after(err)
		}
	}
}

// Close closes the current socket; later calls fail with net.ErrClosed.
func (c *RebindConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	inner := c.inner
	c.mu.Unlock()
	return inner.Close()
}

// LocalAddr returns the current socket's local address.
func (c *RebindConn) LocalAddr() net.Addr {
	inner, _, _ := c.current()
	return inner.LocalAddr()
}

// SetDeadline sets both deadlines, which survive Rebind.
func (c *RebindConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// SetReadDeadline sets the read deadline, which survives Rebind.
func (c *RebindConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return c.inner.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, which survives Rebind.
func (c *RebindConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDeadline = t
	return c.inner.SetWriteDeadline(t)
}
