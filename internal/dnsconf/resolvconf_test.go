package dnsconf

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestRender(t *testing.T) {
	const head = "# Written by dstm-client up: the DNS servers of the tunnel.\n# The original is put back when the tunnel ends.\n"
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"one server", Config{Servers: addrs("10.0.0.53")}, "nameserver 10.0.0.53\n"},
		{"IPv6 and IPv4", Config{Servers: addrs("2001:db8::53", "10.0.0.53")}, "nameserver 2001:db8::53\nnameserver 10.0.0.53\n"},
		{"at most three", Config{Servers: addrs("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")},
			"nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"},
		{"search domains only", Config{Servers: addrs("10.0.0.53"), Domains: []string{"corp.example", "~lab.corp.example", "~.", "b.example"}},
			"nameserver 10.0.0.53\nsearch corp.example b.example\n"},
		{"routing only", Config{Servers: addrs("10.0.0.53"), Domains: []string{"~corp.example"}}, "nameserver 10.0.0.53\n"},
		{"invalid domain left out", Config{Servers: addrs("10.0.0.53"), Domains: []string{"a b\nnameserver 6.6.6.6", "ok.example"}},
			"nameserver 10.0.0.53\nsearch ok.example\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(Render(tc.c)); got != head+tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, head+tc.want)
			}
		})
	}
}

// fileState is what a path is: its kind, bytes or target, and mode.
type fileState struct {
	kind   string
	data   []byte
	target string
	mode   fs.FileMode
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileState{kind: kindAbsent}
	}
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		if err != nil {
			t.Fatal(err)
		}
		return fileState{kind: kindSymlink, target: target}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{kind: kindFile, data: data, mode: fi.Mode().Perm()}
}

func (s fileState) equal(o fileState) bool {
	return s.kind == o.kind && bytes.Equal(s.data, o.data) && s.target == o.target && s.mode == o.mode
}

// originals are the kinds of /etc/resolv.conf a laptop has.
var originals = []struct {
	name  string
	setup func(t *testing.T, path string)
}{
	{"file", func(t *testing.T, path string) {
		// No final newline, a comment, options: the bytes come back exactly.
		if err := os.WriteFile(path, []byte("# from DHCP\nnameserver 192.0.2.1\noptions ndots:2 edns0"), 0o640); err != nil {
			t.Fatal(err)
		}
	}},
	{"empty file", func(t *testing.T, path string) {
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
	{"symlink", func(t *testing.T, path string) {
		// The stub file of a stopped resolved, relative as Debian links it.
		target := filepath.Join(filepath.Dir(path), "run", "stub-resolv.conf")
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, []byte("nameserver 127.0.0.53\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("run/stub-resolv.conf", path); err != nil {
			t.Fatal(err)
		}
	}},
	{"dangling symlink", func(t *testing.T, path string) {
		if err := os.Symlink("/nonexistent/resolv.conf", path); err != nil {
			t.Fatal(err)
		}
	}},
	{"missing", func(*testing.T, string) {}},
}

var tunnelConfig = Config{Servers: addrs("10.0.0.53", "10.0.0.54"), Domains: []string{"corp.example", "~lab.corp.example"}}

// TestResolvConfSetRestore: after Set the file is ours (a regular file; a symlink's target
// untouched), a second Set keeps the first original, and Restore puts the original back
// exactly: bytes and mode, the symlink and its target, or no file.
func TestResolvConfSetRestore(t *testing.T) {
	for _, o := range originals {
		t.Run(o.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "resolv.conf")
			o.setup(t, path)
			before := stateOf(t, path)
			var targetBefore []byte
			if before.kind == kindSymlink {
				targetBefore, _ = os.ReadFile(path)
			}
			r := &ResolvConf{Path: path, StateDir: filepath.Join(dir, "state")}
			if err := r.Set(tunnelConfig); err != nil {
				t.Fatal(err)
			}
			if got := stateOf(t, path); !got.equal(fileState{kind: kindFile, data: Render(tunnelConfig), mode: 0o644}) {
				t.Fatalf("after Set: %+v", got)
			}
			second := Config{Servers: addrs("10.0.0.99")}
			if err := r.Set(second); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, Render(second)) {
				t.Fatalf("after a second Set: %q", got)
			}
			if err := r.Restore(); err != nil {
				t.Fatal(err)
			}
			if got := stateOf(t, path); !got.equal(before) {
				t.Fatalf("restored %+v, want %+v", got, before)
			}
			if before.kind == kindSymlink && targetBefore != nil {
				if got, _ := os.ReadFile(path); !bytes.Equal(got, targetBefore) {
					t.Fatalf("the symlink's target changed: %q", got)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state", SavedFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("saved original left behind: %v", err)
			}
			if err := r.Restore(); err != nil {
				t.Fatalf("a second Restore: %v", err)
			}
			if got := stateOf(t, path); !got.equal(before) {
				t.Fatalf("a second Restore changed it: %+v", got)
			}
		})
	}
}

// TestResolvConfCrashRestore: a run that died after Set leaves its original saved; the next
// run's RestoreSaved (a new ResolvConf, as after a restart) puts it back before anything else,
// and its own Set then saves the real original, not the dead run's file.
func TestResolvConfCrashRestore(t *testing.T) {
	for _, o := range originals {
		t.Run(o.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "resolv.conf")
			state := filepath.Join(dir, "state")
			o.setup(t, path)
			before := stateOf(t, path)
			if err := (&ResolvConf{Path: path, StateDir: state}).Set(tunnelConfig); err != nil {
				t.Fatal(err)
			}
			// The process dies here. The next start:
			next := &ResolvConf{Path: path, StateDir: state}
			restored, err := next.RestoreSaved()
			if err != nil || !restored {
				t.Fatalf("RestoreSaved = %v, %v; want true, nil", restored, err)
			}
			if got := stateOf(t, path); !got.equal(before) {
				t.Fatalf("restored %+v, want %+v", got, before)
			}
			if restored, err := next.RestoreSaved(); err != nil || restored {
				t.Fatalf("RestoreSaved again = %v, %v; want false, nil", restored, err)
			}
			if err := next.Set(tunnelConfig); err != nil {
				t.Fatal(err)
			}
			if err := next.Restore(); err != nil {
				t.Fatal(err)
			}
			if got := stateOf(t, path); !got.equal(before) {
				t.Fatalf("after the next run: %+v, want %+v", got, before)
			}
		})
	}
}

func TestResolvConfRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	r := &ResolvConf{Path: path, StateDir: filepath.Join(dir, "state")}
	if err := r.Set(Config{}); err == nil {
		t.Fatal("Set without servers accepted")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Set without servers wrote a file")
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := r.Set(tunnelConfig); err == nil || !strings.Contains(err.Error(), "neither a file nor a symlink") {
		t.Fatalf("a directory: %v", err)
	}
	// A saved original of another path is not put back here.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := r.Set(tunnelConfig); err != nil {
		t.Fatal(err)
	}
	other := &ResolvConf{Path: filepath.Join(dir, "other.conf"), StateDir: r.StateDir}
	if _, err := other.RestoreSaved(); err == nil {
		t.Fatal("restored another path's original")
	}
}
