package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTicketKeysRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), TicketKeysFile)
	t0 := time.Unix(1_800_000_000, 0)
	first, err := ticketKeys(path, t0)
	if err != nil || len(first) != 1 {
		t.Fatalf("first start: %d keys, %v", len(first), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	steps := []struct {
		name  string
		after time.Duration
		want  int  // keys
		fresh bool // the newest key is new
		kept  bool // the first key is still there
	}{
		{"restart within a day", time.Hour, 1, false, true},
		{"a day later", ticketKeyLife, 2, true, true},
		{"two days later", 2 * ticketKeyLife, 2, true, false},
		{"long down", 10 * ticketKeyLife, 1, true, false},
	}
	prev := first
	for _, s := range steps {
		keys, err := ticketKeys(path, t0.Add(s.after))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if len(keys) != s.want || (keys[0].key != prev[0].key) != s.fresh {
			t.Errorf("%s: %d keys, newest fresh %v; want %d, %v", s.name, len(keys), keys[0].key != prev[0].key, s.want, s.fresh)
		}
		kept := false
		for _, k := range keys {
			kept = kept || k.key == first[0].key
		}
		if kept != s.kept {
			t.Errorf("%s: first key kept %v, want %v", s.name, kept, s.kept)
		}
		// What was returned is what a restart reads back.
		again, err := readTicketKeys(path)
		if err != nil || len(again) != len(keys) || again[0] != keys[0] {
			t.Errorf("%s: file holds %d keys (%v), returned %d", s.name, len(again), err, len(keys))
		}
		prev = keys
	}
}

func TestTicketKeysFileErrors(t *testing.T) {
	for _, body := range []string{
		"12345\n",
		"12345 abcd\n",
		"x " + strings.Repeat("ab", 32) + "\n",
		"1 2 " + strings.Repeat("ab", 32) + "\n",
		"1 " + strings.Repeat("zz", 32) + "\n",
	} {
		path := filepath.Join(t.TempDir(), TicketKeysFile)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ticketKeys(path, time.Now())
		if err == nil || !strings.Contains(err.Error(), TicketKeysFile+" line 1") {
			t.Errorf("%q: %v, want an error naming the file and line", body, err)
		}
	}
}
