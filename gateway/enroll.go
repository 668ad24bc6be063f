package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/internal/limit"
)

// Enrollment connections (TLS with ALPN http/1.1 on the TSP port) are bounded in all and per
// source, and live only as long as an enrollment or renewal needs: a handful of requests.
const (
	enrollMaxConns   = 256 // open at once
	enrollPerAddr    = 4   // per source address
	enrollPerNet     = 16  // per source IPv6 /64
	enrollQueue      = 64  // handed over, not yet taken by the HTTP server
	enrollHeader     = 5 * time.Second
	enrollReadWrite  = 15 * time.Second
	enrollIdle       = 5 * time.Second
	enrollShutdownIn = 5 * time.Second
)

// serveEnrollment serves the CA's enrollment API to the connections g.enroll takes.
func (g *Gateway) serveEnrollment(ctx context.Context) error {
	srv := &http.Server{
		Handler:           g.ca.Handler(),
		ReadHeaderTimeout: enrollHeader,
		ReadTimeout:       enrollReadWrite,
		WriteTimeout:      enrollReadWrite,
		IdleTimeout:       enrollIdle,
		MaxHeaderBytes:    16 << 10,
	}
	go func() {
		<-ctx.Done()
		g.enroll.Close()
		sctx, cancel := context.WithTimeout(context.Background(), enrollShutdownIn)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(g.enroll); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// chanListener feeds an http.Server the TLS connections the TSP port's demultiplexer
// accepted, within enrollMaxConns and each source's share; an admitted one counts until closed.
type chanListener struct {
	addr      net.Addr
	conns     chan net.Conn
	done      chan struct{}
	closed    sync.Once
	open      atomic.Int64
	perSource *limit.PerSource
	refused   atomic.Uint64 // connections closed at once: over a bound, or queue full
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{
		addr: addr, conns: make(chan net.Conn, enrollQueue), done: make(chan struct{}),
		perSource: limit.NewPerSource(enrollPerAddr, enrollPerNet),
	}
}

// deliver hands a connection to the HTTP server, or closes it (and counts it) when the bounds
// are reached, the queue is full or the listener is closed.
func (l *chanListener) deliver(c net.Conn) {
	src := remoteAddr(c)
	if l.open.Load() >= enrollMaxConns || !l.perSource.Acquire(src) {
		l.refused.Add(1)
		c.Close()
		return
	}
	l.open.Add(1)
	ec := &enrollConn{Conn: c, release: func() {
		l.open.Add(-1)
		l.perSource.Release(src)
	}}
	select {
	case l.conns <- ec:
	case <-l.done:
		ec.Close()
	default:
		l.refused.Add(1)
		ec.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// enrollConn is an admitted enrollment connection; closing it gives its place back.
type enrollConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *enrollConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}
