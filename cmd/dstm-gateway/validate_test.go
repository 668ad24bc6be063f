package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigAndRunAgree runs check-config and what `run` does before it touches the host
// (openGateway: the configuration, then the CA and the lease store of an initialised state
// directory) on the same bad files: both refuse, with the same error and exit code, and the
// error names the field.
func TestCheckConfigAndRunAgree(t *testing.T) {
	dir := t.TempDir()
	state, sock := filepath.Join(dir, "state"), filepath.Join(dir, "admin.sock")
	if out, code := run(t, "init", "-c", filepath.Join(dir, "init.yaml"), "--state-dir", state,
		"--admin-socket", sock, "--pool", "10.99.0.0/24", "--inner-v4", "10.99.0.1"); code != 0 {
		t.Fatalf("init exit %d:\n%s", code, out)
	}
	head := fmt.Sprintf("state_dir: %s\nadmin:\n  socket: %s\n", state, sock)
	pool := func(body string) string { return "pools:\n  - name: a\n" + body }
	tests := []struct{ name, yaml, want string }{
		{"bad mtu", "tep:\n  mtu: 100\n", "tep.mtu: 100 is outside"},
		{"overlap in one pool", pool("    prefixes: [10.0.0.0/24]\n    ranges: [{first: 10.0.0.5, last: 10.0.0.6}]\n"),
			"pools[0].ranges[0]: 10.0.0.5-10.0.0.6 overlaps pools[0].prefixes[0]"},
		{"overlap across pools", pool("    ranges: [{first: 10.0.0.5, last: 10.0.0.6}]\n") + "  - name: b\n    ranges: [{first: 10.0.0.6, last: 10.0.0.9}]\n",
			"pools[1].ranges[0]: 10.0.0.6-10.0.0.9 overlaps pools[0].ranges[0]"},
		{"only the inner address", "tep:\n  inner_v4: 10.0.0.1\n" + pool("    prefixes: [10.0.0.1/32]\n"),
			`pools[0]: pool "a" has no address to lease: its only address 10.0.0.1 is tep.inner_v4`},
		{"default route", pool("    prefixes: [0.0.0.0/0]\n"), "pools[0].prefixes[0]: 0.0.0.0/0 is every IPv4 address"},
		{"multicast", pool("    prefixes: [10.0.0.0/24]\n") + "  - name: b\n    prefixes: [224.0.0.0/24]\n", "pools[1].prefixes[0]: 224.0.0.0/24 is multicast"},
		{"class E", pool("    prefixes: [240.0.0.0/24]\n"), "pools[0].prefixes[0]: 240.0.0.0/24 is reserved (class E"},
		{"loopback", pool("    prefixes: [127.1.0.0/16]\n"), "pools[0].prefixes[0]: 127.1.0.0/16 is loopback"},
		{"link-local", pool("    prefixes: [169.254.1.0/24]\n"), "pools[0].prefixes[0]: 169.254.1.0/24 is link-local"},
		{"this network", pool("    prefixes: [0.0.0.0/24]\n"), `pools[0].prefixes[0]: 0.0.0.0/24 is "this network"`},
		{"broadcast", pool("    ranges: [{first: 255.255.255.255, last: 255.255.255.255}]\n"), "pools[0].ranges[0]: 255.255.255.255-255.255.255.255 is the limited broadcast address"},
		{"static on the inner address", "policy:\n  identities:\n    alice:\n      static_v4: 100.64.0.1\n",
			`policy.identities["alice"].static_v4: 100.64.0.1 is tep.inner_v4`},
		{"plain transport without ipv6", "tep:\n  plain_transport: true\n", "tep.ipv6: required with tep.plain_transport"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("bad%d.yaml", i))
			if err := os.WriteFile(file, []byte(head+tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, code := run(t, "check-config", "-c", file)
			s, err := openGateway(&globals{config: file}, io.Discard)
			if err == nil {
				s.gw.Close()
				t.Fatalf("run would start (check-config: exit %d):\n%s", code, out)
			}
			checkErr := strings.TrimSuffix(strings.TrimPrefix(out, "error: "), "\n")
			if code != exitCode(err) || checkErr != err.Error() {
				t.Fatalf("check-config and run differ:\ncheck-config (exit %d): %s\nrun (exit %d): %v", code, out, exitCode(err), err)
			}
			if code != exitConfig || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("exit %d, error %q, want exit %d and %q", code, err, exitConfig, tt.want)
			}
		})
	}

	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(head+pool("    prefixes: [10.0.0.0/24]\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, "check-config", "-c", good); code != 0 {
		t.Fatalf("check-config refuses the good file: exit %d\n%s", code, out)
	}
	s, err := openGateway(&globals{config: good}, io.Discard)
	if err != nil {
		t.Fatalf("run refuses the good file: %v", err)
	}
	if err := s.gw.Close(); err != nil {
		t.Fatal(err)
	}
}
