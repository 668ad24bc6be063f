package tlsrec

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/dstmgw/dstm/tunnel/record"
)

// streamReader is a net.Conn that reads b, in pieces of at most step bytes, then io.EOF.
type streamReader struct {
	net.Conn
	r    *bytes.Reader
	step int
}

func (s *streamReader) Read(p []byte) (int, error) {
	return s.r.Read(p[:min(len(p), s.step)])
}

// fuzzKeys are the keys of the fuzzed stream's writer (c2s) and reader.
func fuzzConn(t testing.TB, raw net.Conn) *Conn {
	var c2s, s2c [32]byte
	c2s[0], s2c[0] = 1, 2
	c, err := newConnKeys(raw, record.AES256GCM, s2c, c2s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sealStream is what a writer with the fuzzed stream's keys sends for contents, with a close
// record at the end when closed.
func sealStream(t testing.TB, contents [][]byte, closed bool) []byte {
	var c2s, s2c [32]byte
	c2s[0], s2c[0] = 1, 2
	w, err := newConnKeys(nil, record.AES256GCM, c2s, s2c)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, c := range contents {
		if out, err = w.seal(out, c); err != nil {
			t.Fatal(err)
		}
	}
	if closed {
		out, _ = w.seal(out, nil)
	}
	return out
}

// FuzzConnRead feeds arbitrary bytes, in pieces of any size, to a Conn's reads: none may
// panic, a read loop ends with an error (io.EOF only after a close record), and the pieces
// change nothing: what comes out and how it ends are those of the same bytes read at once.
// Seeds: testdata/fuzz/FuzzConnRead.
func FuzzConnRead(f *testing.F) {
	f.Add(sealStream(f, [][]byte{[]byte("VERSION=2.0.2\r\n")}, true), uint8(7))
	f.Add(sealStream(f, [][]byte{[]byte("a"), bytes.Repeat([]byte{9}, 300)}, false), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		got, err := readAll(fuzzConn(t, &streamReader{r: bytes.NewReader(b), step: int(step) + 1}))
		if err == nil {
			t.Fatal("a read loop ended without an error")
		}
		whole, werr := readAll(fuzzConn(t, &streamReader{r: bytes.NewReader(b), step: len(b) + 1}))
		if !bytes.Equal(got, whole) || errors.Is(err, io.EOF) != errors.Is(werr, io.EOF) {
			t.Fatalf("in pieces of %d: %q, %v; at once: %q, %v", int(step)+1, got, err, whole, werr)
		}
	})
}
