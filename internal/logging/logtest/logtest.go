// Package logtest collects a zerolog logger's JSON lines for tests:
// zerolog.New(&sink) logs into a Sink, safe for the goroutines of the code
// under test, and the test reads the lines back as field maps.
package logtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"sync"
	"testing"
)

// Sink is an io.Writer that keeps what is logged to it. The zero value is ready.
type Sink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// Lines returns every line logged so far, parsed, in order.
func (s *Sink) Lines(tb testing.TB) []map[string]any {
	tb.Helper()
	s.mu.Lock()
	b := append([]byte(nil), s.buf.Bytes()...)
	s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			tb.Fatalf("log line %q: %v", sc.Bytes(), err)
		}
		out = append(out, m)
	}
	return out
}

// Find returns the lines whose message is msg and whose fields include want.
func (s *Sink) Find(tb testing.TB, msg string, want map[string]any) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, m := range s.Lines(tb) {
		if m["message"] != msg {
			continue
		}
		match := true
		for k, v := range want {
			if m[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}
