package control

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first fails Accepts with EMFILE, as a process out of file
// descriptors does, then accepts for real.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// serveTCP runs the harness's TCP front on ln until the test ends.
func (h *harness) serveTCP(t *testing.T, ln net.Listener) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.ServeTCP(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		h.srv.Wait()
	})
	return done
}

// plainRefusal dials addr, sends a plain TSP line and returns the answer (plain TSP is off in
// the harness: "500 Invalid request").
func plainRefusal(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write([]byte("VERSION=2.0.2\r\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestAcceptErrorsAreSurvived: accept errors (out of file descriptors) make the TCP front wait
// and retry, never return: returning stops the whole gateway.
func TestAcceptErrorsAreSurvived(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fails.Store(5)
	done := h.serveTCP(t, ln)
	if got := plainRefusal(t, inner.Addr().String()); got != "500 Invalid request\r\n" {
		t.Fatalf("after accept errors: %q", got)
	}
	select {
	case err := <-done:
		t.Fatalf("ServeTCP returned %v after accept errors", err)
	default:
	}
	drops := map[string]uint64{}
	h.srv.Drops(drops)
	if drops["tcp_accept_error"] != 5 {
		t.Fatalf("accept errors counted %d, want 5", drops["tcp_accept_error"])
	}
}

// TestConnectionLimit: beyond MaxConns open connections a new one is closed at once, and the
// count goes down as connections close.
func TestConnectionLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.srv.tcp.maxConns = 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.serveTCP(t, ln)
	var held []net.Conn
	for range 2 { // silent: each holds a connection (and a handshake slot) until closed
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, "two counted connections", func() bool { return h.srv.tcp.conns.Load() == 2 })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection over the limit: read %v, want it closed", err)
	}
	c.Close()
	for _, c := range held {
		c.Close()
	}
	waitFor(t, "the count to drop", func() bool { return h.srv.tcp.conns.Load() == 0 })
	if got := plainRefusal(t, ln.Addr().String()); got != "500 Invalid request\r\n" {
		t.Fatalf("after the holders left: %q", got)
	}
}
