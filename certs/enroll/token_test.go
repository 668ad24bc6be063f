package enroll_test

import (
	"encoding/base64"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
)

func jws(payload string) string {
	return "eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

func TestParseToken(t *testing.T) {
	tests := []struct {
		name  string
		token string
		want  enroll.TokenClaims
		err   error
	}{
		{"full", jws(`{"sub":"alice@corp","sans":["alice@corp"],"sha":"AB:CD","exp":1700000000}`),
			enroll.TokenClaims{Identity: "alice@corp", SANs: []string{"alice@corp"}, Fingerprint: "abcd", Expiry: time.Unix(1700000000, 0)}, nil},
		{"sans default to subject", jws(`{"sub":"host.corp"}`), enroll.TokenClaims{Identity: "host.corp", SANs: []string{"host.corp"}}, nil},
		{"no subject", jws(`{"sans":["x"]}`), enroll.TokenClaims{}, enroll.ErrMalformedToken},
		{"two parts", "a.b", enroll.TokenClaims{}, enroll.ErrMalformedToken},
		{"bad base64", "a.!!.c", enroll.TokenClaims{}, enroll.ErrMalformedToken},
		{"bad json", jws(`{"sub":`), enroll.TokenClaims{}, enroll.ErrMalformedToken},
		{"whitespace trimmed", " " + jws(`{"sub":"h"}`) + "\n", enroll.TokenClaims{Identity: "h", SANs: []string{"h"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := enroll.ParseToken(tc.token)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if got.Identity != tc.want.Identity || !slices.Equal(got.SANs, tc.want.SANs) ||
				got.Fingerprint != tc.want.Fingerprint || !got.Expiry.Equal(tc.want.Expiry) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	if got := enroll.NormalizeFingerprint(" AB:cd:EF "); got != "abcdef" {
		t.Errorf("got %q", got)
	}
}

func TestOptionsRequireFingerprintSource(t *testing.T) {
	_, err := enroll.Enroll(t.Context(), enroll.Options{Gateway: "127.0.0.1:1", Token: jws(`{"sub":"a@b"}`), StateDir: t.TempDir()})
	if !errors.Is(err, enroll.ErrNoFingerprint) {
		t.Fatalf("err %v, want ErrNoFingerprint (no trust on first use)", err)
	}
	_, err = enroll.Enroll(t.Context(), enroll.Options{Gateway: "no-port", Token: jws(`{"sub":"a@b"}`), StateDir: t.TempDir()})
	if err == nil {
		t.Fatal("accepted a gateway without port")
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{jws(`{"sub":"alice@corp","sans":["alice@corp"],"sha":"ab","exp":1}`), "a.b.c", "", "..", jws(`{"exp":1e400}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := enroll.ParseToken(in)
		if err != nil {
			if !errors.Is(err, enroll.ErrMalformedToken) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if c.Identity == "" || len(c.SANs) == 0 || len(in) > enroll.MaxTokenBytes+64 {
			t.Fatalf("accepted %q as %+v", in, c)
		}
	})
}
