package tsp

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/dstmgw/dstm/tsp/sasl"
)

func TestVersionRoundTrip(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "VERSION=2.0.2\r\n", want: "2.0.2"},
		{in: "version=2.0.0\n", want: "2.0.0"},
		{in: "\x00\x00VERSION=2.0.1\r\n", want: "2.0.1"},
		{in: "VERSION=2.0.2", want: "2.0.2"},
		{in: "VERSION=2.0\r\n", wantErr: true},
		{in: "VERSION=2.0.x\r\n", wantErr: true},
		{in: "VERSION 2.0.2\r\n", wantErr: true},
		{in: "VERSION=2.0.2\r\nextra", wantErr: true},
		{in: "VERSION=2.0.2\x00\r\n", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		v, err := ParseVersion([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseVersion(%q) err=%v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseVersion(%q) error %v does not wrap ErrMalformed", tt.in, err)
			}
			continue
		}
		if v.Version != tt.want {
			t.Errorf("ParseVersion(%q) = %q, want %q", tt.in, v.Version, tt.want)
		}
		if got := string(v.Marshal()); got != "VERSION="+tt.want+"\r\n" {
			t.Errorf("Marshal = %q", got)
		}
	}
}

func TestCapabilityRoundTrip(t *testing.T) {
	c := Capability{
		Tunnels:    []TunnelType{TypeV4V6, TypeV4DTLSV6, TypeV4TLSV6, TypeV4AnyV6},
		Mechanisms: []sasl.Mechanism{sasl.Anonymous, sasl.Plain},
	}
	const wire = "CAPABILITY TUNNEL=V4V6 TUNNEL=V4DTLSV6 TUNNEL=V4TLSV6 TUNNEL=V4ANYV6 AUTH=ANONYMOUS AUTH=PLAIN\r\n"
	if got := string(c.Marshal()); got != wire {
		t.Fatalf("Marshal = %q", got)
	}
	back, err := ParseCapability([]byte(wire))
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Fatalf("ParseCapability = %+v, %v", back, err)
	}
	// A real broker's line: unknown values are skipped, known ones kept.
	got, err := ParseCapability([]byte("CAPABILITY TUNNEL=V6V4 TUNNEL=V6UDPV4 TUNNEL=V4V6 AUTH=ANONYMOUS AUTH=PLAIN AUTH=DIGEST-MD5 AUTH=PASSDSS-3DES-1\r\n"))
	if err != nil || !got.HasTunnel(TypeV4V6) || !got.HasMechanism(sasl.DigestMD5) || got.HasMechanism(sasl.External) {
		t.Fatalf("ParseCapability broker line = %+v, %v", got, err)
	}
	for _, bad := range []string{"CAPABILITIES X=Y\r\n", "CAPABILITY TUNNEL\r\n", "CAPABILITY TUNNEL=\r\n", "200 Success\r\n"} {
		if _, err := ParseCapability([]byte(bad)); err == nil {
			t.Errorf("ParseCapability(%q) accepted", bad)
		}
	}
}

func TestAuthenticateRoundTrip(t *testing.T) {
	for _, m := range []sasl.Mechanism{sasl.Anonymous, sasl.Plain, sasl.DigestMD5, sasl.External} {
		wire := Authenticate{Mechanism: m}.Marshal()
		if !bytes.HasSuffix(wire, []byte("\r\n\x00")) {
			t.Errorf("%s: gogoc sends a trailing NUL, got %q", m, wire)
		}
		a, err := ParseAuthenticate(wire)
		if err != nil || a.Mechanism != m {
			t.Errorf("%s: round trip = %+v, %v", m, a, err)
		}
	}
	if a, err := ParseAuthenticate([]byte("authenticate plain\n")); err != nil || a.Mechanism != sasl.Plain {
		t.Errorf("lower case: %+v %v", a, err)
	}
	for _, bad := range []string{"AUTHENTICATE\r\n", "AUTHENTICATE CRAM-MD5\r\n", "AUTHENTICATE PLAIN\r\n\x00x", "AUTH PLAIN\r\n"} {
		if _, err := ParseAuthenticate([]byte(bad)); err == nil {
			t.Errorf("ParseAuthenticate(%q) accepted", bad)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, code := range statusCodes() {
		st := NewStatus(code)
		back, rest, err := ParseStatus(st.Marshal())
		if err != nil || back != st || len(rest) != 0 {
			t.Errorf("%d: round trip %+v %q %v", code, back, rest, err)
		}
	}
	if got := string(NewStatus(301).Marshal()); got != "301 No more tunnels available\r\n" {
		t.Errorf("301 = %q", got)
	}
	if got := string(NewStatus(302).Marshal()); got != "302 Unsupported client version\r\n" {
		t.Errorf("302 = %q", got)
	}
	st, rest, err := ParseStatus([]byte("200 Success\r\n<tunnel/>"))
	if err != nil || st.Code != 200 || string(rest) != "<tunnel/>" {
		t.Errorf("with rest: %+v %q %v", st, rest, err)
	}
	for _, bad := range []string{"20 x\r\n", "20000 x\r\n", "200x\r\n", "abc\r\n", "200 \x01\r\n"} {
		if _, _, err := ParseStatus([]byte(bad)); err == nil {
			t.Errorf("ParseStatus(%q) accepted", bad)
		}
	}
}

func TestStatusErrorNeverLeaks(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{&StatusError{Code: 301, Err: errors.New("pool x empty")}, 301},
		{errors.New("secret text"), 310},
		{&StatusError{Code: 200}, 310},
		{&StatusError{Code: 999}, 310},
	}
	for _, tt := range tests {
		if got := wireStatus(tt.err); got != tt.code {
			t.Errorf("wireStatus(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
	inner := errors.New("inner")
	se := &StatusError{Code: 300, Err: inner}
	if !errors.Is(se, inner) {
		t.Error("StatusError does not unwrap")
	}
}

func TestContentFraming(t *testing.T) {
	body := []byte("301 No more tunnels available\r\n")
	wire := MarshalContent(body)
	if string(wire) != "Content-length: 31\r\n301 No more tunnels available\r\n" {
		t.Fatalf("MarshalContent = %q", wire)
	}
	tests := []struct {
		in      string
		body    string
		wantErr bool
	}{
		{in: string(wire), body: string(body)},
		{in: "\x00content-LENGTH:3\nabc", body: "abc"},
		{in: "Content-length: 0\r\n", body: ""},
		{in: "Content-length: 4\r\nabc", wantErr: true},
		{in: "Content-length: 2\r\nabc", wantErr: true},
		{in: "Content-length: x\r\nabc", wantErr: true},
		{in: "Content-length: 3abc", wantErr: true},
		{in: "Content-length: 99999\r\n", wantErr: true},
		{in: "Content-type: 3\r\nabc", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseContent([]byte(tt.in))
		if (err != nil) != tt.wantErr || (!tt.wantErr && string(got) != tt.body) {
			t.Errorf("ParseContent(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	raw := []byte{0xf0, 0x00, 0x00, 0xf0, 0x00, 0x00, 0x02, 0xfb, 'h', 'i'}
	h, p, err := ParseDatagram(raw)
	if err != nil || h.Seq != 0xf0 || h.Timestamp != 0x2fb || string(p) != "hi" {
		t.Fatalf("ParseDatagram = %+v %q %v", h, p, err)
	}
	if got := AppendDatagram(nil, h, p); !bytes.Equal(got, raw) {
		t.Fatalf("AppendDatagram = % x", got)
	}
	if !IsDatagram(raw) || IsDatagram([]byte{0x16}) || IsDatagram(nil) {
		t.Error("IsDatagram")
	}
	for _, bad := range [][]byte{nil, raw[:7], {0x60, 0, 0, 0, 0, 0, 0, 0}, append(raw[:8:8], make([]byte, MaxDatagramPayload+1)...)} {
		if _, _, err := ParseDatagram(bad); err == nil {
			t.Errorf("ParseDatagram(% x…) accepted", bad[:min(len(bad), 8)])
		}
	}
	if _, p, err := ParseDatagram(raw[:8]); err != nil || len(p) != 0 {
		t.Errorf("header-only datagram: %q %v", p, err)
	}
}

func TestSeqBefore(t *testing.T) {
	tests := []struct {
		a, b uint32
		want bool
	}{
		{0xf0, 0xf1, true}, {0xf1, 0xf0, false}, {5, 5, false},
		{seqMask, 0, true}, {0, seqMask, false},
	}
	for _, tt := range tests {
		if got := seqBefore(tt.a, tt.b); got != tt.want {
			t.Errorf("seqBefore(%#x,%#x) = %v", tt.a, tt.b, got)
		}
	}
}
