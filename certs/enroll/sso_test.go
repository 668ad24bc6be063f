package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// TestDeviceFlowOutcomes: the provider's device-flow answers become errors a
// user can act on (the provider here is an RFC 8628 endpoint pair answering
// one fixed error).
func TestDeviceFlowOutcomes(t *testing.T) {
	for _, tc := range []struct {
		code string
		want error
	}{
		{"expired_token", ErrDeviceCodeExpired},
		{"access_denied", ErrSignInDenied},
	} {
		t.Run(tc.code, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				switch r.URL.Path {
				case "/device":
					_ = json.NewEncoder(w).Encode(map[string]any{"device_code": "d", "user_code": "ABCD-EFGH",
						"verification_uri": "https://idp.example/device", "expires_in": 60, "interval": 1})
				default:
					w.WriteHeader(http.StatusBadRequest)
					_ = json.NewEncoder(w).Encode(map[string]string{"error": tc.code})
				}
			}))
			defer srv.Close()
			cfg := &oauth2.Config{ClientID: "dstm", Endpoint: oauth2.Endpoint{DeviceAuthURL: srv.URL + "/device", TokenURL: srv.URL + "/token"}}
			var prompt strings.Builder
			_, err := deviceFlow(context.Background(), cfg, &prompt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if !strings.Contains(prompt.String(), "enter the code ABCD-EFGH") {
				t.Fatalf("prompt %q", prompt.String())
			}
		})
	}
}

func TestUnverifiedClaim(t *testing.T) {
	for _, tc := range []struct {
		raw, claim, want string
		ok               bool
	}{
		{"h.eyJlbWFpbCI6ImFAYi5jIn0.s", "email", "a@b.c", true},
		{"h.eyJlbWFpbCI6ImFAYi5jIn0.s", "sub", "", false},
		{"not-a-jwt", "email", "", false},
		{"h.!!!.s", "email", "", false},
	} {
		got, err := unverifiedClaim(tc.raw, tc.claim)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q %s: %q %v", tc.raw, tc.claim, got, err)
		}
	}
}

// FuzzUnverifiedClaim: any text as an ID token yields a claim or an error,
// never a panic.
func FuzzUnverifiedClaim(f *testing.F) {
	f.Add("h.eyJlbWFpbCI6ImFAYi5jIn0.s", "email")
	f.Fuzz(func(t *testing.T, raw, claim string) {
		v, err := unverifiedClaim(raw, claim)
		if err == nil && v == "" {
			t.Fatal("empty claim without an error")
		}
	})
}
