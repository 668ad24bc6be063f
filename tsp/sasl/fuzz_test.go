package sasl

import (
	"bytes"
	"testing"
)

func FuzzParsePlain(f *testing.F) {
	f.Add([]byte("\x00alice\x00secret"))
	f.Add([]byte("admin\x00alice\x00secret"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, u, p, err := ParsePlain(b)
		if err != nil {
			return
		}
		if u == "" || p == "" || len(a) > MaxFieldLen || len(u) > MaxFieldLen || len(p) > MaxFieldLen {
			t.Fatal("invariants")
		}
		if !bytes.Equal(EncodePlain(a, u, p), b) {
			t.Fatal("round trip")
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add([]byte(s3Challenge))
	f.Add([]byte(`realm="cdpatsps",nonce="0000ABCD",qop=auth,algorithm=md5-sess,charset=utf8`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseChallenge(b)
		if err != nil {
			return
		}
		if c.Nonce == "" || len(c.Realm) > MaxFieldLen || len(c.Nonce) > MaxFieldLen {
			t.Fatal("invariants")
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte(s3Response))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		if r.Username == "" || r.Response == "" || len(r.DigestURI) > MaxFieldLen {
			t.Fatal("invariants")
		}
		// Quoted fields always survive a round trip.
		back, err := ParseResponse(r.Marshal())
		if err == nil && (back.Username != r.Username || back.DigestURI != r.DigestURI || back.CNonce != r.CNonce) {
			t.Fatalf("round trip %+v %+v", r, back)
		}
		ch := NewChallenge(r.Realm, r.Nonce)
		VerifyResponse(ch, r, HA1(r.Username, r.Realm, "x"), true)
	})
}

func FuzzParseRspAuth(f *testing.F) {
	f.Add([]byte("rspauth=" + s3RspAuth))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseRspAuth(b)
		if err != nil {
			return
		}
		if len(v) != 32 {
			t.Fatal("length")
		}
		back, err := ParseRspAuth(MarshalRspAuth(v))
		if err != nil || back != v {
			t.Fatal("round trip")
		}
	})
}
