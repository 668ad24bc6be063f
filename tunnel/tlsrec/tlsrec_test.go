package tlsrec

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/tunnel/record"
)

const testTimeout = 10 * time.Second

// connPair is two Conns over net.Pipe with the keys of one session.
func connPair(t testing.TB, suite record.Suite) (a, b *Conn, araw, braw net.Conn) {
	t.Helper()
	var c2s, s2c [32]byte
	c2s[0], s2c[0] = 1, 2
	araw, braw = net.Pipe()
	a, err := newConnKeys(araw, suite, c2s, s2c)
	if err != nil {
		t.Fatal(err)
	}
	b, err = newConnKeys(braw, suite, s2c, c2s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { araw.Close(); braw.Close() })
	return a, b, araw, braw
}

// readAll reads from c until an error and returns what came and the error.
func readAll(c net.Conn) ([]byte, error) {
	var out []byte
	buf := make([]byte, 3000)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

// tlsPair runs the handshake of a gateway-like server (ALPN ALPN, tsp/2) and a client
// offering clientProtos over TCP on loopback, with the switch where ALPN was chosen.
type tlsFixture struct{ scfg, ccfg *tls.Config }

func newTLSFixture(t *testing.T) tlsFixture {
	ca := certstest.New(t)
	scfg := ca.ServerTLSConfig(t, "gw.test")
	scfg.NextProtos = []string{ALPN, "tsp/2"}
	scfg.MinVersion = tls.VersionTLS13
	return tlsFixture{scfg: scfg, ccfg: ca.ClientTLSConfig(t, "alice@corp", "gw.test")}
}

func tlsPair(t *testing.T, f tlsFixture, clientProtos []string, cache tls.ClientSessionCache) (server, client net.Conn, ccs tls.ConnectionState) {
	t.Helper()
	scfg, ccfg := f.scfg, f.ccfg.Clone()
	ccfg.NextProtos = clientProtos
	ccfg.ClientSessionCache = cache
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	srv := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			srv <- result{err: err}
			return
		}
		bc := NewBoundaryConn(raw)
		tc := tls.Server(bc, scfg)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			srv <- result{err: err}
			return
		}
		if tc.ConnectionState().NegotiatedProtocol != ALPN {
			bc.PassThrough()
			srv <- result{c: tc}
			return
		}
		c, err := Switch(tc, bc, raw, true)
		srv <- result{c: c, err: err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, ccs, err = Client(ctx, raw, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	r := <-srv
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return r.c, client, ccs
}

// exchange sends sizes bytes each way at once and checks what arrives, then closes both
// writing sides and expects io.EOF.
func exchange(t *testing.T, a, b net.Conn, sizes []int) {
	t.Helper()
	var want []byte
	for i, n := range sizes {
		want = append(want, bytes.Repeat([]byte{byte(i + 1)}, n)...)
	}
	var wg sync.WaitGroup
	got := make([][]byte, 2)
	errs := make([]error, 2)
	for i, pair := range [][2]net.Conn{{a, b}, {b, a}} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			off := 0
			for _, n := range sizes {
				if _, err := pair[0].Write(want[off : off+n]); err != nil {
					t.Error(err)
					return
				}
				off += n
			}
			if cw, ok := pair[0].(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}()
		go func() {
			defer wg.Done()
			got[i], errs[i] = readAll(pair[1])
		}()
	}
	wg.Wait()
	for i := range got {
		if !bytes.Equal(got[i], want) {
			t.Fatalf("direction %d: got %d bytes, want %d", i, len(got[i]), len(want))
		}
		if !errors.Is(errs[i], io.EOF) {
			t.Fatalf("direction %d ended with %v, want io.EOF", i, errs[i])
		}
	}
}

// TestSwitch: a client offering ALPN gets a Conn, the stream carries writes of every size
// (several records for the large ones) both ways at once, a close record ends it as EOF,
// and the session ticket that came before the server's marker resumes the next connection,
// which switches too.
func TestSwitch(t *testing.T) {
	cache := tls.NewLRUClientSessionCache(4)
	sizes := []int{1, 100, MaxPlaintext - 1, MaxPlaintext, MaxPlaintext + 1, 3*MaxPlaintext + 7, 5}
	f := newTLSFixture(t)
	for _, resumed := range []bool{false, true} {
		srv, cl, cs := tlsPair(t, f, []string{ALPN, "tsp/2"}, cache)
		if _, ok := cl.(*Conn); !ok {
			t.Fatalf("client got %T, want *Conn", cl)
		}
		if _, ok := srv.(*Conn); !ok {
			t.Fatalf("server got %T, want *Conn", srv)
		}
		if cs.DidResume != resumed {
			t.Fatalf("resumed %v, want %v", cs.DidResume, resumed)
		}
		exchange(t, srv, cl, sizes)
	}
}

// TestNoSwitch: a client that offers only tsp/2 (an older dstm-client) keeps crypto/tls's
// records, and reads are no longer cut at record boundaries.
func TestNoSwitch(t *testing.T) {
	srv, cl, cs := tlsPair(t, newTLSFixture(t), []string{"tsp/2"}, nil)
	if cs.NegotiatedProtocol != "tsp/2" {
		t.Fatalf("negotiated %q", cs.NegotiatedProtocol)
	}
	if _, ok := cl.(*tls.Conn); !ok {
		t.Fatalf("client got %T, want *tls.Conn", cl)
	}
	exchange(t, srv, cl, []int{10, 20000})
}

// TestBadStreams: a stream record that is tampered with, replayed, reordered, too long or
// cut short ends the reading side with an error, never with data.
func TestBadStreams(t *testing.T) {
	seal := func(t *testing.T, c *Conn, content string) []byte {
		b, err := c.seal(nil, []byte(content))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		wire func(t *testing.T, a *Conn) []byte
		want error
	}{
		{"tampered", func(t *testing.T, a *Conn) []byte {
			b := seal(t, a, "hello")
			b[len(b)-1] ^= 1
			return b
		}, record.ErrAuth},
		{"replayed", func(t *testing.T, a *Conn) []byte {
			b := seal(t, a, "hello")
			return append(b, b...)
		}, record.ErrOrder},
		{"reordered", func(t *testing.T, a *Conn) []byte {
			b1 := seal(t, a, "one")
			b2 := seal(t, a, "two")
			return append(b2, b1...)
		}, record.ErrOrder},
		{"too long", func(*testing.T, *Conn) []byte { return []byte{0xff, 0xff} }, ErrLength},
		{"too short", func(*testing.T, *Conn) []byte { return []byte{0, 3, 1, 2, 3} }, ErrLength},
		{"truncated record", func(t *testing.T, a *Conn) []byte { return seal(t, a, "hello")[:10] }, io.ErrUnexpectedEOF},
		{"no close record", func(t *testing.T, a *Conn) []byte { return seal(t, a, "hello") }, io.ErrUnexpectedEOF},
		{"not a record", func(*testing.T, *Conn) []byte {
			return append([]byte{0, byte(record.Overhead)}, make([]byte, record.Overhead)...)
		}, record.ErrNotRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, araw, _ := connPair(t, record.AES256GCM)
			wire := tc.wire(t, a)
			go func() { _, _ = araw.Write(wire); araw.Close() }()
			got, err := readAll(b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("read ended with %v, want %v", err, tc.want)
			}
			if tc.name == "replayed" || tc.name == "reordered" || tc.name == "no close record" {
				return // the first record was good
			}
			if len(got) != 0 {
				t.Fatalf("read %q from a bad stream", got)
			}
		})
	}
}

// TestReadResumesAfterDeadline: a read deadline that passes in the middle of a record is a
// timeout, and the next read goes on with the same record.
func TestReadResumesAfterDeadline(t *testing.T) {
	a, b, araw, braw := connPair(t, record.ChaCha20Poly1305)
	wire, err := a.seal(nil, bytes.Repeat([]byte{7}, 1000))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = araw.Write(wire[:1]); _, _ = araw.Write(wire[1:500]) }()
	_ = braw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 2000)
	if _, err := b.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %v, want a timeout", err)
	}
	_ = braw.SetReadDeadline(time.Now().Add(testTimeout))
	go func() { _, _ = araw.Write(wire[500:]) }()
	n, err := b.Read(buf)
	if err != nil || n != 1000 || buf[999] != 7 {
		t.Fatalf("read after the timeout: %d bytes, %v", n, err)
	}
}

// TestIdleKeepsNoLargeBuffer: after a large record, a small one gives the read buffer back;
// after a large write, a small write gives the write buffer back.
func TestIdleKeepsNoLargeBuffer(t *testing.T) {
	a, b, _, _ := connPair(t, record.AES256GCM)
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(make([]byte, MaxPlaintext))
		if err == nil {
			_, err = a.Write([]byte{1, 2})
		}
		done <- err
	}()
	buf := make([]byte, 100)
	total := 0
	for total < MaxPlaintext+2 {
		n, err := b.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if total == MaxPlaintext && cap(b.rec) < MaxPlaintext {
			t.Fatalf("large record read into %d bytes", cap(b.rec))
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cap(b.rec) > smallRecord {
		t.Fatalf("the reader keeps %d bytes after a small record", cap(b.rec))
	}
	a.wmu.Lock()
	held := cap(a.wbuf)
	a.wmu.Unlock()
	if held != 0 {
		t.Fatalf("the writer keeps %d bytes after a small write", held)
	}
	// A TSP-sized record (offer, accept) is read into a buffer of its own, given back once
	// read: an idle control connection's last record is one of those.
	go func() { _, err := a.Write(make([]byte, 700)); done <- err }()
	if _, err := io.ReadFull(b, make([]byte, 700)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cap(b.rec) > smallRecord {
		t.Fatalf("the reader keeps %d bytes after a TSP-sized record", cap(b.rec))
	}
}

// TestCloseDuringBlockedWrite: Close while a Write waits on a peer that reads nothing ends
// the Write and returns without waiting for it.
func TestCloseDuringBlockedWrite(t *testing.T) {
	_, _, araw, _ := connPair(t, record.AES256GCM)
	bc := &blockedConn{Conn: araw, entered: make(chan struct{})}
	var c2s, s2c [32]byte
	a, err := newConnKeys(bc, record.AES256GCM, c2s, s2c)
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := a.Write([]byte("nobody reads this"))
		werr <- err
	}()
	select {
	case <-bc.entered: // net.Pipe: the write waits for a reader that never comes
	case <-time.After(testTimeout):
		t.Fatal("the write never started")
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatal("Close waited for the blocked write")
	}
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("the blocked write succeeded")
		}
	case <-time.After(testTimeout):
		t.Fatal("the blocked write did not end")
	}
}

// blockedConn tells when its first Write starts.
type blockedConn struct {
	net.Conn
	entered chan struct{}
	once    sync.Once
}

func (c *blockedConn) Write(b []byte) (int, error) {
	c.once.Do(func() { close(c.entered) })
	return c.Conn.Write(b)
}
