package sasl

import (
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
)

// Vectors from tsp-wire-notes §3.6 / §10.3 (gogoc run s3). The password
// "secret" reproduces the observed response and rspauth exactly.
const (
	s3Challenge = `realm="fakerealm",nonce="N142cbcee",qop="auth",algorithm=md5-sess,charset=utf-8`
	s3Response  = `charset=utf-8,username="alice",realm="fakerealm",nonce="N142cbcee",nc=00000001,cnonce="1795634805",digest-uri="tsp/[::1]:3653",response=588d1ce82ad150bd8a3746209d59a5e4,qop=auth`
	s3RspAuth   = "7e64a926d2351a322b932033544ef0d8"
)

func TestDigestNotesVector(t *testing.T) {
	ch := NewChallenge("fakerealm", "N142cbcee")
	if got := string(ch.Marshal()); got != s3Challenge {
		t.Fatalf("challenge %q", got)
	}
	back, err := ParseChallenge([]byte(s3Challenge))
	if err != nil || back != ch {
		t.Fatalf("ParseChallenge %+v %v", back, err)
	}
	inner := HA1("alice", "fakerealm", "secret")
	r := ClientResponse(ch, "alice", inner, "tsp/[::1]:3653", FormatCNonce(1795634805), false)
	if got := string(r.Marshal()); got != s3Response {
		t.Fatalf("response\n got %s\nwant %s", got, s3Response)
	}
	pr, err := ParseResponse([]byte(s3Response))
	if err != nil || pr != r {
		t.Fatalf("ParseResponse %+v %v", pr, err)
	}
	rsp, ok := VerifyResponse(ch, pr, inner, false)
	if !ok || rsp != s3RspAuth {
		t.Fatalf("VerifyResponse %q %v", rsp, ok)
	}
	if got := string(MarshalRspAuth(rsp)); got != "rspauth="+s3RspAuth {
		t.Fatal(got)
	}
	if v, err := ParseRspAuth([]byte("rspauth=" + s3RspAuth)); err != nil || !CheckRspAuth(v, s3RspAuth) {
		t.Fatalf("ParseRspAuth %q %v", v, err)
	}
	if CheckRspAuth("00000000000000000000000000000000", s3RspAuth) {
		t.Fatal("CheckRspAuth accepted a wrong value")
	}
}

func TestVerifyResponseRejects(t *testing.T) {
	ch := NewChallenge("fakerealm", "N142cbcee")
	inner := HA1("alice", "fakerealm", "secret")
	good := ClientResponse(ch, "alice", inner, "tsp/gw", "1", false)
	tests := []struct {
		name string
		mut  func(*Response)
	}{
		{"nc", func(r *Response) { r.NC = "00000002" }},
		{"realm", func(r *Response) { r.Realm = "other" }},
		{"nonce", func(r *Response) { r.Nonce = "replayed" }},
		{"qop", func(r *Response) { r.Qop = "auth-int" }},
		{"uri", func(r *Response) { r.DigestURI = "imap/gw" }},
		{"response form", func(r *Response) { r.Response = "xyz" }},
		{"response value", func(r *Response) { r.Response = "00000000000000000000000000000000" }},
		{"cnonce changed", func(r *Response) { r.CNonce = "2" }},
	}
	for _, tt := range tests {
		r := good
		tt.mut(&r)
		if _, ok := VerifyResponse(ch, r, inner, false); ok {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, ok := VerifyResponse(ch, good, HA1("alice", "fakerealm", "nope"), false); ok {
		t.Error("wrong HA1 accepted")
	}
	upper := good
	upper.Response = hexUpper(upper.Response)
	if _, ok := VerifyResponse(ch, upper, inner, false); !ok {
		t.Error("upper-case hex response rejected")
	}
}

func hexUpper(s string) string {
	b, _ := hex.DecodeString(s)
	const digits = "0123456789ABCDEF"
	out := make([]byte, 0, 32)
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestParseDirectives(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
		err  bool
	}{
		{in: `a=1,b="x,y",C=z`, want: map[string]string{"a": "1", "b": "x,y", "c": "z"}},
		{in: `a="q\"uote" , b = 2`, want: map[string]string{"a": `q"uote`, "b": "2"}},
		{in: ``, want: map[string]string{}},
		{in: `a=1,a=2`, err: true},
		{in: `a="open`, err: true},
		{in: `=1`, err: true},
		{in: `a=1;b=2`, err: true},
		{in: `a b=1`, err: true},
		{in: "a=\"x\x01\"", err: true},
		{in: `a="x\`, err: true},
	}
	for _, tt := range tests {
		got, err := parseDirectives(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if !tt.err && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %v", tt.in, got)
		}
		if tt.err && !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v does not wrap ErrMalformed", tt.in, err)
		}
	}
	// Marshal with quotes and backslashes round-trips.
	r := Response{Charset: "utf-8", Username: `a"b\c`, Realm: "r", Nonce: "n", NC: DigestNC, CNonce: "c", DigestURI: "tsp/x", Response: "r", Qop: "auth"}
	back, err := ParseResponse(r.Marshal())
	if err != nil || back != r {
		t.Fatalf("quoted round trip %+v %v", back, err)
	}
}

func TestPlain(t *testing.T) {
	tests := []struct {
		in               string
		authz, user, pwd string
		err              bool
	}{
		{in: "\x00alice\x00secret", user: "alice", pwd: "secret"},
		{in: "admin\x00alice\x00secret", authz: "admin", user: "alice", pwd: "secret"},
		{in: "alice\x00secret", err: true},
		{in: "\x00\x00secret", err: true},
		{in: "\x00alice\x00", err: true},
		{in: "\x00a\x00b\x00c", err: true},
		{in: "\x00" + string(make([]byte, 0)) + "alice\x00" + string(make([]byte, 300)), err: true},
	}
	for _, tt := range tests {
		a, u, p, err := ParsePlain([]byte(tt.in))
		if (err != nil) != tt.err || (!tt.err && (a != tt.authz || u != tt.user || p != tt.pwd)) {
			t.Errorf("ParsePlain(%q) = %q %q %q %v", tt.in, a, u, p, err)
		}
		if !tt.err && string(EncodePlain(a, u, p)) != tt.in {
			t.Errorf("EncodePlain round trip for %q", tt.in)
		}
	}
}

func TestParseMechanism(t *testing.T) {
	for in, want := range map[string]Mechanism{"plain": Plain, "Digest-MD5": DigestMD5, "EXTERNAL": External, "anonymous": Anonymous} {
		if m, err := ParseMechanism(in); err != nil || m != want {
			t.Errorf("%s: %v %v", in, m, err)
		}
	}
	if _, err := ParseMechanism("PASSDSS-3DES-1"); err == nil {
		t.Error("PASSDSS accepted")
	}
}

func TestParseChallengeAndRspAuthRejects(t *testing.T) {
	for _, bad := range []string{`realm="r"`, `nonce="n"`, `nonce="n",qop=auth,nonce="m"`} {
		if _, err := ParseChallenge([]byte(bad)); err == nil {
			t.Errorf("challenge %q accepted", bad)
		}
	}
	for _, bad := range []string{"rspauth=abc", "rspauth=" + s3RspAuth + ",x=1", "x=" + s3RspAuth} {
		if _, err := ParseRspAuth([]byte(bad)); err == nil {
			t.Errorf("rspauth %q accepted", bad)
		}
	}
	if _, err := ParseResponse([]byte(`username="a"`)); err == nil {
		t.Error("incomplete response accepted")
	}
}
