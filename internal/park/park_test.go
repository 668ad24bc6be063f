//go:build linux

package park

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

const waitTimeout = 5 * time.Second

// pair returns a parkable server side on p and the client side of a TCP connection.
func pair(t *testing.T, p *Poller) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(raw, raw.(*net.TCPConn), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, client
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// parked parks c and returns the channel its resume closes.
func parked(t *testing.T, c *Conn, deadline time.Time) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{})
	if !c.Park(deadline, func() { close(ch) }) {
		t.Fatal("Park refused")
	}
	return ch
}

func waitResumed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("not resumed by %s", what)
	}
}

func notResumed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
		t.Fatal("resumed with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestResume(t *testing.T) {
	for _, tc := range []struct {
		name string
		// wake does what resumes the reader; read is what its read must then return.
		wake func(c *Conn, client net.Conn)
		want func(n int, err error) bool
	}{
		{"data", func(_ *Conn, client net.Conn) { client.Write([]byte("hi")) },
			func(n int, err error) bool { return n == 2 && err == nil }},
		{"end of stream", func(_ *Conn, client net.Conn) { client.Close() },
			func(n int, err error) bool { return errors.Is(err, io.EOF) }},
		{"reset", func(_ *Conn, client net.Conn) {
			client.(*net.TCPConn).SetLinger(0)
			client.Close()
		}, func(n int, err error) bool { return err != nil && !errors.Is(err, net.ErrClosed) }},
		{"close", func(c *Conn, _ net.Conn) { c.Close() },
			func(n int, err error) bool { return errors.Is(err, net.ErrClosed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPoller(t)
			c, client := pair(t, p)
			ch := parked(t, c, time.Time{})
			notResumed(t, ch)
			if p.Parked() != 1 {
				t.Fatalf("Parked() = %d, want 1", p.Parked())
			}
			tc.wake(c, client)
			waitResumed(t, ch, tc.name)
			if p.Parked() != 0 {
				t.Fatalf("Parked() = %d after the resume, want 0", p.Parked())
			}
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			n, err := c.Read(make([]byte, 16))
			if !tc.want(n, err) {
				t.Fatalf("read after the resume: %d, %v", n, err)
			}
		})
	}
}

// TestDataBeforePark: bytes that came before the reader parked resume it at once (the
// registration is level-triggered).
func TestDataBeforePark(t *testing.T) {
	p := newPoller(t)
	c, client := pair(t, p)
	client.Write([]byte("early"))
	time.Sleep(10 * time.Millisecond) // nothing to wait for: the bytes are on their way
	waitResumed(t, parked(t, c, time.Time{}), "bytes already there")
}

func TestDeadline(t *testing.T) {
	p := newPoller(t)
	c, _ := pair(t, p)
	start := time.Now()
	ch := parked(t, c, start.Add(100*time.Millisecond))
	waitResumed(t, ch, "the deadline")
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("resumed before the deadline")
	}
	// A deadline passed already resumes at once.
	waitResumed(t, parked(t, c, start), "a past deadline")
}

// TestParkAgain: a resumed reader parks again, as an idle session does after each message.
func TestParkAgain(t *testing.T) {
	p := newPoller(t)
	c, client := pair(t, p)
	buf := make([]byte, 16)
	for i := range 100 {
		ch := parked(t, c, time.Time{})
		client.Write([]byte{byte(i)})
		waitResumed(t, ch, "data")
		if n, err := c.Read(buf); n != 1 || err != nil || buf[0] != byte(i) {
			t.Fatalf("round %d: read %d %v %v", i, n, err, buf[:n])
		}
	}
}

func TestRefused(t *testing.T) {
	p := newPoller(t)
	c, _ := pair(t, p)
	parked(t, c, time.Time{})
	if c.Park(time.Time{}, func() {}) {
		t.Fatal("a second Park of the same conn was taken")
	}
	c2, _ := pair(t, p)
	c2.Close()
	if c2.Park(time.Time{}, func() {}) {
		t.Fatal("Park of a closed conn was taken")
	}
	c3, _ := pair(t, nil)
	if c3.Park(time.Time{}, func() {}) {
		t.Fatal("Park without a poller was taken")
	}
}

// TestCloseResumesAll: closing the poller resumes every parked reader, and parking is refused
// from then on.
func TestCloseResumesAll(t *testing.T) {
	p := newPoller(t)
	var chs []<-chan struct{}
	var conns []*Conn
	for range 10 {
		c, _ := pair(t, p)
		conns = append(conns, c)
		chs = append(chs, parked(t, c, time.Time{}))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chs {
		waitResumed(t, ch, "the poller's Close")
	}
	if conns[0].Park(time.Time{}, func() {}) {
		t.Fatal("Park after Close was taken")
	}
}

// TestManyResumeOnce: with many connections parked, each is resumed once, by its own data.
func TestManyResumeOnce(t *testing.T) {
	p := newPoller(t)
	const n = 200
	resumed := make(chan int, 2*n)
	clients := make([]net.Conn, n)
	for i := range n {
		c, client := pair(t, p)
		clients[i] = client
		if !c.Park(time.Time{}, func() { resumed <- i }) {
			t.Fatal("Park refused")
		}
	}
	for i := n - 1; i >= 0; i-- {
		clients[i].Write([]byte{1})
	}
	seen := make([]bool, n)
	for range n {
		select {
		case i := <-resumed:
			if seen[i] {
				t.Fatalf("conn %d resumed twice", i)
			}
			seen[i] = true
		case <-time.After(waitTimeout):
			t.Fatal("not every conn resumed")
		}
	}
	select {
	case i := <-resumed:
		t.Fatalf("conn %d resumed again", i)
	case <-time.After(50 * time.Millisecond):
	}
}
