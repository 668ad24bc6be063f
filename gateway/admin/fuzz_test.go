package admin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
)

// FuzzHandler sends arbitrary requests to the API handler backed by the
// working fake. Invariants: no panic, no 500 (every bad input is the
// client's fault), every error is a JSON body with a code and a message,
// and every 200 is valid JSON.
func FuzzHandler(f *testing.F) {
	f.Add(uint8(0), "/v1/leases", []byte(nil))
	f.Add(uint8(1), "/v1/revoke", []byte(`{"target":"alice@corp"}`))
	f.Add(uint8(1), "/v1/tokens", []byte(`{"identity":"a@b","ttl":"10m"}`))
	f.Add(uint8(2), "/v1/sessions/s-a1", []byte(nil))
	methods := [...]string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut}
	f.Fuzz(func(t *testing.T, m uint8, path string, body []byte) {
		req, err := http.NewRequest(methods[int(m)%len(methods)], "http://x"+path, bytes.NewReader(body))
		if err != nil || req.URL.Path == "" || req.URL.Path[0] != '/' {
			return // not a request a client could send
		}
		rec := httptest.NewRecorder()
		NewServer(newFakeBackend(), zerolog.Nop()).Handler().ServeHTTP(rec, req)
		checkResponse(t, rec)
	})
}

func checkResponse(t *testing.T, rec *httptest.ResponseRecorder) {
	switch rec.Code {
	case http.StatusOK:
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("200 with invalid JSON %q", rec.Body)
		}
	case http.StatusNoContent, http.StatusMovedPermanently, http.StatusTemporaryRedirect:
	case http.StatusBadRequest, http.StatusNotFound:
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Code == "" || eb.Error == "" {
			t.Fatalf("error %d with body %q", rec.Code, rec.Body)
		}
	default:
		t.Fatalf("unexpected status %d: %q", rec.Code, rec.Body)
	}
}
