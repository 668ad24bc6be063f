package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

// FuzzSOCKS5Request: any bytes after a greeting are a request, a refusal with a reply code
// (*errSocks), or a read error; a request names a host this server could dial.
func FuzzSOCKS5Request(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add(append([]byte{5, 2, 0, 2, 5, 1, 0, 3, 11}, append([]byte("example.com"), 1, 187)...))
	f.Add([]byte{5, 1, 0, 5, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		if _, err := readGreeting(r); err != nil {
			return
		}
		req, err := readRequest(r)
		var es *errSocks
		switch {
		case errors.As(err, &es):
			if es.rep == repSuccess {
				t.Fatalf("a refusal with the success code: %v", err)
			}
		case err == nil:
			if req.cmd != cmdConnect || req.port == 0 || req.host == "" {
				t.Fatalf("accepted %+v", req)
			}
		}
	})
}
