package tsp

import (
	"errors"
	"strings"
	"testing"
)

func drain(t *testing.T, s *Splitter) []string {
	t.Helper()
	var out []string
	for {
		m, ok, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(m))
	}
}

func TestSplitter(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string
		rest   int
	}{
		{
			name:   "gogoc PLAIN on TCP keeps the NULs for the machine",
			chunks: []string{"AUTHENTICATE PLAIN\r\n\x00", "\x00alice\x00secret\r\n"},
			want:   []string{"AUTHENTICATE PLAIN\r\n", "\x00\x00alice\x00secret\r\n"},
		},
		{
			name:   "both PLAIN writes coalesced",
			chunks: []string{"AUTHENTICATE PLAIN\r\n\x00\x00alice\x00secret\r\n"},
			want:   []string{"AUTHENTICATE PLAIN\r\n", "\x00\x00alice\x00secret\r\n"},
		},
		{
			name:   "NUL before Content-length",
			chunks: []string{"AUTHENTICATE ANONYMOUS\r\n\x00", "Content-length: 3\r\nabc"},
			want:   []string{"AUTHENTICATE ANONYMOUS\r\n", "\x00Content-length: 3\r\nabc"},
		},
		{
			name:   "body split and LF header, body containing newlines",
			chunks: []string{"content-LENGTH: 5\n", "a\nb", "\nc", "VERSION=2.0.2\n"},
			want:   []string{"content-LENGTH: 5\na\nb\nc", "VERSION=2.0.2\n"},
		},
		{
			name:   "incomplete",
			chunks: []string{"VERSION=2.0", "\x00"},
			rest:   12,
		},
		{
			name:   "trailing NUL waits for the next message",
			chunks: []string{"AUTHENTICATE ANONYMOUS\r\n\x00"},
			want:   []string{"AUTHENTICATE ANONYMOUS\r\n"},
			rest:   1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSplitter(0)
			var got []string
			for _, c := range tt.chunks {
				s.Write([]byte(c))
				got = append(got, drain(t, s)...)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("got %q want %q", got, tt.want)
			}
			if s.Buffered() != tt.rest {
				t.Fatalf("buffered %d want %d", s.Buffered(), tt.rest)
			}
		})
	}
}

func TestSplitterLimits(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"endless line", strings.Repeat("a", 101)},
		{"long line", strings.Repeat("a", 100) + "\n"},
		{"content too large", "Content-length: 95\r\n"},
		{"content bad header", "Content-length: abc\r\n"},
		{"NUL flood", strings.Repeat("\x00", 101)},
	}
	for _, tt := range tests {
		s := NewSplitter(100)
		s.Write([]byte(tt.in))
		_, _, err := s.Next()
		if err == nil {
			t.Errorf("%s: no error", tt.name)
		}
		if tt.name != "content bad header" && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v is not ErrTooLarge", tt.name, err)
		}
	}
	s := NewSplitter(100)
	s.Write([]byte("Content-length: 70\r\n" + strings.Repeat("x", 70)))
	if m, ok, err := s.Next(); err != nil || !ok || len(m) != 90 {
		t.Fatalf("exactly at limit: %d %v %v", len(m), ok, err)
	}
}
