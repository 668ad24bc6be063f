package dtls

import (
	"bytes"
	"testing"
)

// FuzzInspectDatagram checks the demultiplexer's record walker on
// arbitrary input: it never panics, a CID it reports is the CID field of a
// complete tls12_cid record in the input, and a ClientHello it reports is
// a complete epoch-0 handshake record at the start.
func FuzzInspectDatagram(f *testing.F) {
	cid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	f.Add(dtlsRecord(22, 0, nil, []byte{1, 0, 0, 0}))
	f.Add(dtlsRecord(25, 1, cid, []byte{0xAA}))
	f.Add(append(dtlsRecord(20, 0, nil, []byte{1}), dtlsRecord(25, 1, cid, nil)...))
	f.Add([]byte{25, 0xfe, 0xfd, 0, 1})
	f.Add([]byte{22})
	f.Fuzz(func(t *testing.T, b []byte) {
		info := inspectDatagram(b)
		if info.clientHello {
			if len(b) <= headerLen || b[0] != contentHandshake || b[3] != 0 || b[4] != 0 || b[headerLen] != handshakeHello {
				t.Fatalf("false ClientHello in %x", b)
			}
		}
		if info.hasCID && !containsCIDRecord(b, info.cid[:]) {
			t.Fatalf("CID %x not from a complete record in %x", info.cid, b)
		}
	})
}

// containsCIDRecord walks records the slow way and looks for cid.
func containsCIDRecord(b, cid []byte) bool {
	for len(b) > 0 {
		hl := headerLen
		if b[0] == contentCID {
			hl = cidHeaderLen
		}
		if len(b) < hl {
			return false
		}
		n := hl + int(b[hl-2])<<8 + int(b[hl-1])
		if n > len(b) {
			return false
		}
		if b[0] == contentCID && bytes.Equal(b[11:11+CIDLen], cid) {
			return true
		}
		b = b[n:]
	}
	return false
}

// FuzzParseClientHello checks the stateless front's ClientHello parser on arbitrary input:
// what it accepts is a complete epoch-0 ClientHello record at the start of the input, with
// the fields pion's own codec reads there; replacing the cookie and putting the old one back
// gives the input again, byte for byte; and the HelloVerifyRequest made for it is shorter
// than the ClientHello (no amplification) and reads back.
func FuzzParseClientHello(f *testing.F) {
	first, second := capturedHellos(f)
	h, _ := parseClientHello(first)
	shim, _ := appendWithCookie(nil, first, h, bytes.Repeat([]byte{0xAB}, cookieLen))
	f.Add(first)  // pion's first ClientHello
	f.Add(second) // pion's second, with a 20-byte cookie, message_seq 1
	f.Add(shim)   // what helloConn sends: the first with a gateway cookie, message_seq 0
	f.Add(append(bytes.Clone(first), dtlsRecord(20, 0, nil, []byte{1})...))
	f.Add(dtlsRecord(22, 0, nil, []byte{1, 0, 0, 0}))
	cookie := bytes.Repeat([]byte{0x5A}, cookieLen)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseClientHello(b)
		if !ok {
			return
		}
		recEnd := headerLen + int(be16(b[11:13]))
		switch {
		case b[0] != contentHandshake || be16(b[3:5]) != 0 || b[headerLen] != handshakeHello || recEnd > len(b):
			t.Fatalf("accepted a datagram that does not start with a ClientHello record: %x", b)
		case h.cookieAt+1+len(h.cookie) > recEnd || int(b[h.cookieAt]) != len(h.cookie) ||
			!bytes.Equal(b[h.cookieAt+1:h.cookieAt+1+len(h.cookie)], h.cookie):
			t.Fatalf("cookie %x is not the field at %d", h.cookie, h.cookieAt)
		case len(h.head) < 2+randomLen+1 || int(h.head[2+randomLen]) > maxSessionID || len(h.tail) < 2+2+1+1:
			t.Fatalf("head %x or tail %x too short", h.head, h.tail)
		}
		if rh, hh, m, err := pionClientHello(b); err == nil {
			if rh.SequenceNumber != h.recSeq || hh.MessageSequence != h.msgSeq || !bytes.Equal(m.Cookie, h.cookie) ||
				!bytes.Equal(m.SessionID, h.head[2+randomLen+1:]) || !bytes.Equal(randomBytes(m), h.head[2:2+randomLen]) {
				t.Fatalf("pion reads otherwise: %+v %+v %+v, we %+v", rh, hh, m, h)
			}
		}
		for _, c := range [][]byte{nil, cookie} {
			with, ok := appendWithCookie(nil, b, h, c)
			if !ok {
				if len(c) > len(h.cookie) {
					continue // the record is too long to grow
				}
				t.Fatal("removing or shortening a cookie failed")
			}
			h2, ok := parseClientHello(with)
			if !ok || !bytes.Equal(h2.cookie, c) || h2.msgSeq != h.msgSeq || h2.recSeq != h.recSeq ||
				!bytes.Equal(h2.head, h.head) || !bytes.Equal(h2.tail, h.tail) ||
				len(with) != len(b)+len(c)-len(h.cookie) {
				t.Fatalf("cookie %x not put in place: %x", c, with)
			}
			back, _ := appendWithCookie(nil, with, h2, h.cookie)
			if !bytes.Equal(back, b) {
				t.Fatalf("round trip changed the datagram:\n%x\n%x", b, back)
			}
		}
		hvr := appendHelloVerify(nil, h, cookie)
		if got, ok := parseHelloVerify(hvr); !ok || !bytes.Equal(got, cookie) || len(hvr) > len(b) {
			t.Fatalf("HelloVerifyRequest %x (%d bytes) for a ClientHello of %d", hvr, len(hvr), len(b))
		}
	})
}

// FuzzParseNegotiation: what parses as an offer or accept is exactly what marshal makes of it.
// Seeds: testdata/fuzz/FuzzParseNegotiation.
func FuzzParseNegotiation(f *testing.F) {
	f.Add(negotiation{kind: negOffer, version: dataV1, suite: 1, session: 0x01020304}.marshal())
	f.Add(negotiation{kind: negAccept, version: dataV2, suite: 2, session: 0xffffffff}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := parseNegotiation(b)
		if !ok {
			return
		}
		if !bytes.Equal(n.marshal(), b) {
			t.Fatalf("%x parses as %+v, which marshals as %x", b, n, n.marshal())
		}
	})
}
