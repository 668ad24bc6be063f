package gateway

import (
	"net"
	"sync"
)

// semaphore bounds concurrent handshakes; TryAcquire never blocks.
type semaphore struct{ ch chan struct{} }

func newSemaphore(n int) *semaphore { return &semaphore{ch: make(chan struct{}, n)} }

// TryAcquire takes a slot if one is free.
func (s *semaphore) TryAcquire() bool {
	select {
	case s.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

// Once returns a release function for an acquired slot that is safe to call many times.
func (s *semaphore) Once() func() {
	var once sync.Once
	return func() { once.Do(func() { <-s.ch }) }
}

// chanListener is a net.Listener fed with connections that were accepted (and TLS-handshaken)
// by the port demultiplexer, so an http.Server can serve the enrollment API on the TSP port.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

// deliver hands a connection to the HTTP server; when the queue is full (64 waiting) or the
// listener is closed the connection is closed instead.
func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	default:
		c.Close()
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
