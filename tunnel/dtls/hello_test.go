package dtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// sent is a datagram and its destination, or its source.
type sent struct {
	b  []byte
	to netip.AddrPort
}

// scriptConn is a net.PacketConn whose far end is the test: what pion writes arrives on out,
// and what the test puts on in is read, from peer. Deadlines are ignored; Close ends reads.
type scriptConn struct {
	in     chan sent // to: the source address; zero: peer
	out    chan []byte
	peer   *net.UDPAddr
	closed chan struct{}
	once   sync.Once
}

func newScriptConn() *scriptConn {
	return &scriptConn{
		in: make(chan sent, 16), out: make(chan []byte, 64), closed: make(chan struct{}),
		peer: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::53]:3653")),
	}
}

func (c *scriptConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		if d.to.IsValid() {
			return copy(b, d.b), net.UDPAddrFromAddrPort(d.to), nil
		}
		return copy(b, d.b), c.peer, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *scriptConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case c.out <- bytes.Clone(b):
	default:
	}
	return len(b), nil
}

func (c *scriptConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *scriptConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// next returns the next datagram written.
func (c *scriptConn) next(t testing.TB) []byte {
	t.Helper()
	select {
	case b := <-c.out:
		return b
	case <-time.After(testTimeout):
		t.Fatal("nothing written")
		return nil
	}
}

// pionHellos runs pion's client, with this package's options, against a script: it returns
// the client's first ClientHello and, after a HelloVerifyRequest carrying cookie, its second
// (message_seq 1), exactly as pion writes them.
func pionHellos(t testing.TB, cookie []byte) (first, second []byte) {
	t.Helper()
	ca := newTestCA(t, "capture root")
	sc := newScriptConn()
	cfg := ClientConfig{
		Certificates: []tls.Certificate{ca.issue(t, "alice@corp", false)},
		RootCAs:      ca.pool, ServerName: "gw.test",
	}
	dc, err := piondtls.ClientWithOptions(sc, sc.peer, clientOptions(cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dc.HandshakeContext(ctx)
	}()
	defer func() {
		cancel()
		_ = dc.Close()
		<-done
	}()
	first = sc.next(t)
	h, ok := parseClientHello(first)
	if !ok {
		t.Fatalf("pion's first ClientHello does not parse: %x", first)
	}
	sc.in <- sent{b: appendHelloVerify(nil, h, cookie)}
	for {
		b := sc.next(t)
		if h2, ok := parseClientHello(b); ok && h2.msgSeq == 1 {
			return first, b
		}
	}
}

var (
	helloOnce             sync.Once
	helloFirst, helloWith []byte // captured from pion's client; the second with testCookie
	testCookie            = bytes.Repeat([]byte{0xC0}, 20)
)

// capturedHellos returns pion's two ClientHellos (see pionHellos), captured once per run.
func capturedHellos(t testing.TB) (first, second []byte) {
	t.Helper()
	helloOnce.Do(func() { helloFirst, helloWith = pionHellos(t, testCookie) })
	if helloFirst == nil {
		t.Fatal("no ClientHello captured")
	}
	return bytes.Clone(helloFirst), bytes.Clone(helloWith)
}

// pionClientHello parses the first record of b with pion's own codecs.
func pionClientHello(b []byte) (recordlayer.Header, handshake.Header, *handshake.MessageClientHello, error) {
	var rh recordlayer.Header
	var hh handshake.Header
	if err := rh.Unmarshal(b); err != nil {
		return rh, hh, nil, err
	}
	body := b[recordlayer.FixedHeaderSize:]
	if err := hh.Unmarshal(body); err != nil {
		return rh, hh, nil, err
	}
	end := min(len(body), handshake.HeaderLength+int(hh.FragmentLength))
	m := &handshake.MessageClientHello{}
	if err := m.Unmarshal(body[handshake.HeaderLength:end]); err != nil {
		return rh, hh, nil, err
	}
	return rh, hh, m, nil
}

func TestParseClientHello(t *testing.T) {
	first, second := capturedHellos(t)
	edit := func(b []byte, at int, v ...byte) []byte {
		b = bytes.Clone(b)
		copy(b[at:], v)
		return b
	}
	// Offsets in pion's first ClientHello: the session_id length byte, then the cookie's.
	sidAt := helloBodyAt + 2 + randomLen
	cookieAt := sidAt + 1 + int(first[sidAt])
	suitesAt := cookieAt + 1
	compAt := suitesAt + 2 + int(binary.BigEndian.Uint16(first[suitesAt:]))
	extAt := compAt + 1 + int(first[compAt])
	extLen := binary.BigEndian.Uint16(first[extAt:])
	tests := []struct {
		name   string
		b      []byte
		ok     bool
		msgSeq uint16
		cookie []byte
	}{
		{"pion first", first, true, 0, nil},
		{"pion second", second, true, 1, testCookie},
		{"followed by another record", append(bytes.Clone(first), dtlsRecord(20, 0, nil, []byte{1})...), true, 0, nil},
		{"DTLS 1.0 record", edit(first, 1, 0xfe, 0xff), true, 0, nil},
		{"TLS record version", edit(first, 1, 3, 3), false, 0, nil},
		{"epoch 1", edit(first, 3, 0, 1), false, 0, nil},
		{"not handshake", edit(first, 0, 23), false, 0, nil},
		{"server hello", edit(first, headerLen, 2), false, 0, nil},
		{"fragment", edit(first, headerLen+9, 0, 0, 10), false, 0, nil},
		{"later fragment", edit(first, headerLen+6, 0, 0, 1), false, 0, nil},
		{"record shorter than message", edit(first, 11, 0, byte(len(first)-headerLen-1)), false, 0, nil},
		{"record past datagram", first[:len(first)-1], false, 0, nil},
		{"two messages in the record", edit(first, headerLen+1, 0, 0, 10), false, 0, nil},
		{"session_id over 32", edit(first, sidAt, 33), false, 0, nil},
		{"cookie past end", edit(first, cookieAt, 0xff), false, 0, nil},
		{"odd cipher_suites", edit(first, suitesAt, 0, 3), false, 0, nil},
		{"no cipher_suites", edit(first, suitesAt, 0, 0), false, 0, nil},
		{"no compression_methods", edit(first, compAt, 0), false, 0, nil},
		{"extensions length off", edit(first, extAt, byte((extLen-1)>>8), byte(extLen-1)), false, 0, nil},
		{"header only", first[:helloBodyAt], false, 0, nil},
		{"empty", nil, false, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := parseClientHello(tt.b)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if h.msgSeq != tt.msgSeq || !bytes.Equal(h.cookie, tt.cookie) {
				t.Fatalf("message_seq %d cookie %x, want %d %x", h.msgSeq, h.cookie, tt.msgSeq, tt.cookie)
			}
			rh, hh, m, err := pionClientHello(tt.b)
			if err != nil {
				t.Fatalf("pion does not parse what we accept: %v", err)
			}
			if h.recSeq != rh.SequenceNumber || h.msgSeq != hh.MessageSequence ||
				!bytes.Equal(h.cookie, m.Cookie) || !bytes.Equal(h.head[2:2+randomLen], randomBytes(m)) {
				t.Fatalf("disagrees with pion: %+v vs %+v %+v", h, rh, m)
			}
		})
	}
}

func randomBytes(m *handshake.MessageClientHello) []byte {
	r := m.Random.MarshalFixed()
	return r[:]
}

func TestAppendWithCookie(t *testing.T) {
	first, second := capturedHellos(t)
	tail := dtlsRecord(20, 0, nil, []byte{1})
	for _, b := range [][]byte{first, second, append(bytes.Clone(first), tail...)} {
		h, _ := parseClientHello(b)
		cookie := bytes.Repeat([]byte{7}, cookieLen)
		with, ok := appendWithCookie([]byte("prefix"), b, h, cookie)
		if !ok || string(with[:6]) != "prefix" {
			t.Fatal("appendWithCookie failed")
		}
		with = with[6:]
		h2, ok := parseClientHello(with)
		if !ok || !bytes.Equal(h2.cookie, cookie) || h2.msgSeq != h.msgSeq || h2.recSeq != h.recSeq ||
			!bytes.Equal(h2.head, h.head) || !bytes.Equal(h2.tail, h.tail) {
			t.Fatalf("cookie not in place: %+v", h2)
		}
		if _, _, m, err := pionClientHello(with); err != nil || !bytes.Equal(m.Cookie, cookie) {
			t.Fatalf("pion reads cookie %x, %v", m.Cookie, err)
		}
		back, _ := appendWithCookie(nil, with, h2, h.cookie)
		if !bytes.Equal(back, b) {
			t.Fatalf("round trip:\n%x\n%x", back, b)
		}
	}
	// pion's second ClientHello without its cookie is its first, but for message_seq and
	// the record sequence number.
	h, _ := parseClientHello(second)
	stripped, _ := appendWithCookie(nil, second, h, nil)
	copy(stripped[5:11], first[5:11])
	copy(stripped[headerLen+4:headerLen+6], first[headerLen+4:headerLen+6])
	if !bytes.Equal(stripped, first) {
		t.Fatalf("pion changed more than the cookie:\n%x\n%x", stripped, first)
	}
}

func TestHelloVerify(t *testing.T) {
	first, _ := capturedHellos(t)
	binary.BigEndian.PutUint16(first[9:11], 0x1234) // record sequence number
	first[headerLen+5] = 2                          // message_seq
	h, _ := parseClientHello(first)
	cookie := bytes.Repeat([]byte{9}, cookieLen)
	hvr := appendHelloVerify(nil, h, cookie)
	if len(hvr) != helloVerifyRecordLen || len(hvr) >= len(first) {
		t.Fatalf("HelloVerifyRequest of %d bytes for a ClientHello of %d", len(hvr), len(first))
	}
	got, ok := parseHelloVerify(hvr)
	if !ok || !bytes.Equal(got, cookie) {
		t.Fatalf("parseHelloVerify = %x, %v", got, ok)
	}
	var rh recordlayer.Header
	var hh handshake.Header
	var m handshake.MessageHelloVerifyRequest
	if err := rh.Unmarshal(hvr); err != nil {
		t.Fatal(err)
	}
	if err := hh.Unmarshal(hvr[headerLen:]); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmarshal(hvr[helloBodyAt:]); err != nil {
		t.Fatal(err)
	}
	if rh.SequenceNumber != 0x1234 || rh.Epoch != 0 || rh.Version.Minor != 0xff ||
		hh.Type != handshake.TypeHelloVerifyRequest || hh.MessageSequence != 2 ||
		hh.FragmentLength != hh.Length || m.Version.Minor != 0xff || !bytes.Equal(m.Cookie, cookie) {
		t.Fatalf("pion reads %+v %+v %+v", rh, hh, m)
	}
	// Not ours: pion's own (DTLS 1.2, 20 bytes), other lengths, anything truncated.
	notOurs := [][]byte{
		appendHelloVerify(nil, h, testCookie),
		appendHelloVerify(nil, h, cookie[:cookieLen-1]),
		hvr[:len(hvr)-1],
		append(bytes.Clone(hvr), 0),
	}
	pionStyle := bytes.Clone(hvr)
	pionStyle[helloBodyAt+1] = 0xfd
	notOurs = append(notOurs, pionStyle)
	for i, b := range notOurs {
		if _, ok := parseHelloVerify(b); ok {
			t.Errorf("case %d taken as the gateway's HelloVerifyRequest: %x", i, b)
		}
	}
}
