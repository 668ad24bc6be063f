package certs_test

import (
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/enroll"
)

func FuzzNormalizeIdentity(f *testing.F) {
	for _, s := range []string{"alice@corp.example", "Laptop-7.Corp.Example", "a@b", "", "x..y", "-a.b", "192.0.2.1", "a\x00b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id, err := certs.NormalizeIdentity(in)
		if err != nil {
			return
		}
		if id != strings.ToLower(in) || len(id) == 0 || len(id) > 253 {
			t.Fatalf("NormalizeIdentity(%q) = %q", in, id)
		}
		again, err := certs.NormalizeIdentity(id)
		if err != nil || again != id {
			t.Fatalf("not idempotent: %q -> %q, %v", id, again, err)
		}
		if strings.Count(id, "@") > 1 || strings.ContainsAny(id, " \t\r\n\x00,:/") {
			t.Fatalf("accepted %q", id)
		}
	})
}

func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"1", "0x1f", "01:ff:a0", "12345678901234567890", "-5", "0", "0x", "1_000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := certs.ParseSerial(in)
		if err != nil {
			return
		}
		n, ok := new(big.Int).SetString(s, 10)
		if !ok || n.Sign() <= 0 || n.String() != s {
			t.Fatalf("ParseSerial(%q) = %q, not canonical positive decimal", in, s)
		}
		if again, err := certs.ParseSerial(s); err != nil || again != s {
			t.Fatalf("not idempotent: %q -> %q, %v", s, again, err)
		}
	})
}

// FuzzSignHandler posts arbitrary bodies to /1.0/sign: the answer must be a
// client error, never a certificate and never a 500.
func FuzzSignHandler(f *testing.F) {
	for _, s := range []string{`{"token":"a.b.c","csr":""}`, `{}`, `[`, `{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`, ``} {
		f.Add(s)
	}
	ca, _ := newCA(f, newClock())
	h := ca.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, enroll.PathSign, strings.NewReader(body)))
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}
