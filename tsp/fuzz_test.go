package tsp

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"
)

func FuzzParseDatagram(f *testing.F) {
	f.Add([]byte("\xf0\x00\x00\xf0\x00\x00\x02\xfbVERSION=2.0.2\r\n"))
	f.Add([]byte("\xf0\x00\x00\xf3\x00\x00\x03\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := ParseDatagram(b)
		if err != nil {
			return
		}
		if len(p) > MaxDatagramPayload || h.Seq > seqMask {
			t.Fatalf("bounds: %d %#x", len(p), h.Seq)
		}
		if !bytes.Equal(AppendDatagram(nil, h, p), b) {
			t.Fatal("round trip")
		}
	})
}

func FuzzSplitter(f *testing.F) {
	f.Add([]byte("AUTHENTICATE PLAIN\r\n\x00\x00alice\x00secret\r\n"), uint8(21))
	f.Add([]byte("VERSION=2.0.2\r\n\x00Content-length: 3\r\nabc200 Success\n"), uint8(5))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		const limit = 512
		s := NewSplitter(limit)
		at := min(int(cut), len(b))
		var total int
		for _, chunk := range [][]byte{b[:at], b[at:]} {
			s.Write(chunk)
			for {
				m, ok, err := s.Next()
				if err != nil {
					return
				}
				if !ok {
					break
				}
				if len(m) == 0 || len(m) > limit || !bytes.Equal(m, b[total:total+len(m)]) {
					t.Fatalf("message %q at %d", m, total)
				}
				total += len(m)
			}
		}
		if total+s.Buffered() != len(b) {
			t.Fatalf("lost bytes: %d + %d != %d", total, s.Buffered(), len(b))
		}
	})
}

func FuzzParseContent(f *testing.F) {
	f.Add([]byte("Content-length: 31\r\n301 No more tunnels available\r\n"))
	f.Add([]byte("\x00content-length:0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := ParseContent(b)
		if err != nil {
			return
		}
		if len(body) > maxContentLength {
			t.Fatal("body too large")
		}
		back, err := ParseContent(MarshalContent(body))
		if err != nil || !bytes.Equal(back, body) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("200 Success\r\n"))
	f.Add([]byte("1200 Redirection\n<tunnel/>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, _, err := ParseStatus(b)
		if err != nil {
			return
		}
		if st.Code < 0 || st.Code > maxStatusCode {
			t.Fatalf("code %d", st.Code)
		}
		back, rest, err := ParseStatus(st.Marshal())
		if err != nil || back != st || len(rest) != 0 {
			t.Fatalf("round trip %+v %v", back, err)
		}
	})
}

func FuzzParseVersion(f *testing.F) {
	f.Add([]byte("VERSION=2.0.2\r\n"))
	f.Add([]byte("\x00version=1.0.1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVersion(b)
		if err != nil {
			return
		}
		back, err := ParseVersion(v.Marshal())
		if err != nil || back != v {
			t.Fatalf("round trip %+v %v", back, err)
		}
	})
}

func FuzzParseCapability(f *testing.F) {
	f.Add([]byte("CAPABILITY TUNNEL=V6V4 TUNNEL=V6UDPV4 TUNNEL=V4V6 AUTH=ANONYMOUS AUTH=PLAIN AUTH=DIGEST-MD5\r\n"))
	f.Add([]byte("CAPABILITY TUNNEL=V4ANYV6 AUTH=EXTERNAL X=Y\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCapability(b)
		if err != nil {
			return
		}
		back, err := ParseCapability(c.Marshal())
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip %+v %v", back, err)
		}
	})
}

func FuzzParseAuthenticate(f *testing.F) {
	f.Add([]byte("AUTHENTICATE ANONYMOUS\r\n\x00"))
	f.Add([]byte("authenticate digest-md5\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAuthenticate(b)
		if err != nil {
			return
		}
		back, err := ParseAuthenticate(a.Marshal())
		if err != nil || back != a {
			t.Fatalf("round trip %+v %v", back, err)
		}
	})
}

func FuzzParseTunnel(f *testing.F) {
	f.Add([]byte(routerRequest))
	f.Add([]byte(`<tunnel action="accept"></tunnel>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := ParseTunnel(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if x.Client != nil && (len(x.Client.Routes) > MaxRoutes || len(x.Client.DNSServers) > MaxDNSServers) {
			t.Fatal("limits")
		}
		out, err := x.Marshal()
		if err != nil {
			return
		}
		back, err := ParseTunnel(out)
		if err != nil || !reflect.DeepEqual(back, x) {
			t.Fatalf("round trip of %q:\n%+v\n%+v %v", out, x, back, err)
		}
	})
}

// FuzzParseTunnelDifferential checks ParseTunnel against the encoding/xml
// oracle (checkAgainstOracle).
func FuzzParseTunnelDifferential(f *testing.F) {
	f.Add([]byte(routerRequest))
	f.Add([]byte(`<?xml version="1.0"?><tunnel action='accept' x="&lt;&#x41;"><!-- c --></tunnel>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgainstOracle(t, b)
	})
}

// FuzzParseTunnelDifferentialGen is the structure-aware twin of
// FuzzParseTunnelDifferential: the fuzz bytes drive tunnelGen, which
// writes schema-shaped documents (repeated and unknown elements, entities,
// mixed content), and the result goes through the same differential check.
func FuzzParseTunnelDifferentialGen(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &tunnelGen{choose: choicesFrom(b)}
		checkAgainstOracle(t, []byte(g.document()))
	})
}

// FuzzServerStep feeds arbitrary client bytes to TCP and UDP server
// machines. Messages are separated by 0xFF bytes (never valid TSP) so the
// fuzzer can build multi-message sessions.
func FuzzServerStep(f *testing.F) {
	sep := []byte{0xff}
	f.Add(bytes.Join([][]byte{[]byte("VERSION=2.0.2\r\n"), []byte("AUTHENTICATE ANONYMOUS\r\n\x00"),
		[]byte(s1Request), []byte("Content-length: 35\r\n<tunnel action=\"accept\"></tunnel>\r\n")}, sep))
	f.Add(bytes.Join([][]byte{[]byte("VERSION=2.0.0\r\n"), []byte("AUTHENTICATE PLAIN\r\n\x00"),
		[]byte("\x00alice\x00secret\r\n")}, sep))
	f.Add(bytes.Join([][]byte{[]byte("VERSION=2.0.2\r\n"), []byte("AUTHENTICATE DIGEST-MD5\r\n\x00"), []byte("bm9uY2U9MQ==\r\n")}, sep))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs := bytes.Split(b, sep)
		fuzzUDP(t, msgs)
		fuzzTCP(t, bytes.Join(msgs, nil))
	})
}

func fuzzUDP(t *testing.T, msgs [][]byte) {
	srv, err := NewServer(testServerConfig(TransportUDP, &fakeBackend{mode: "ok", noTLS: true}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		replies, err := srv.Step(context.Background(), m)
		if err == ErrClosed {
			return
		}
		if len(replies) != 1 || len(replies[0].Payload) > MaxDatagramPayload {
			t.Fatalf("UDP replies %d", len(replies))
		}
		if err != nil && srv.State() != StateClosed {
			t.Fatal("error without close")
		}
	}
}

func fuzzTCP(t *testing.T, stream []byte) {
	srv, err := NewServer(testServerConfig(TransportTCP, &fakeBackend{mode: "ok", noTLS: true}))
	if err != nil {
		t.Fatal(err)
	}
	sp := NewSplitter(0)
	sp.Write(stream)
	for {
		m, ok, err := sp.Next()
		if err != nil || !ok {
			return
		}
		replies, err := srv.Step(context.Background(), m)
		for _, r := range replies {
			if len(r.Payload) == 0 {
				t.Fatal("empty TCP reply")
			}
		}
		if err == ErrClosed {
			return
		}
	}
}
