package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runMainEnv makes the test binary run main() with its arguments: the tests see exactly what
// the command prints and its exit code.
const runMainEnv = "DSTM_GATEWAY_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs the command as a process (prefix, e.g. ip netns exec NS, in front) and returns
// its stdout, stderr and exit code.
func runMain(t *testing.T, prefix []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	argv := append(append(append([]string(nil), prefix...), os.Args[0]), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// TestErrorsEndWithOneNewline: a failing command prints "dstm-gateway: ERROR" and exactly one
// newline on stderr, so the shell prompt starts on a line of its own.
func TestErrorsEndWithOneNewline(t *testing.T) {
	dir := t.TempDir()
	noCA := filepath.Join(dir, "nostate.yaml")
	if err := os.WriteFile(noCA, []byte(fmt.Sprintf("state_dir: %s\n", filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown command with a suggestion", []string{"chek-config"}, 1, "Did you mean this?"},
		{"unknown flag", []string{"run", "--bogus"}, 1, "unknown flag: --bogus"},
		{"missing configuration", []string{"run", "-c", filepath.Join(dir, "none.yaml")}, 2, "no such file"},
		{"invalid configuration", []string{"check-config", "-c", writeBad(t, dir)}, 2, "tep.mtu"},
		{"refused start: no CA", []string{"run", "-c", noCA}, 1, "run dstm-gateway init first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runMain(t, nil, tt.args...)
			checkErrorOutput(t, stderr, code, tt.code, tt.want)
		})
	}
}

// TestForwardingOffErrorEndsWithNewline: the refused start of the report, IPv4 forwarding off,
// in a new network namespace (root only).
func TestForwardingOffErrorEndsWithNewline(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if out, code := run(t, "init", "-c", cfgPath, "--state-dir", filepath.Join(dir, "state"),
		"--admin-socket", filepath.Join(dir, "admin.sock")); code != 0 {
		t.Fatalf("init exit %d:\n%s", code, out)
	}
	ns := fmt.Sprintf("dstm-test-fwd-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	// A new namespace starts with net.ipv4.ip_forward=0: the gateway refuses before it creates
	// its TUN device.
	_, stderr, code := runMain(t, []string{"ip", "netns", "exec", ns}, "run", "-c", cfgPath)
	checkErrorOutput(t, stderr, code, 1, "IPv4 forwarding is disabled")
}

func checkErrorOutput(t *testing.T, stderr string, code, wantCode int, want string) {
	t.Helper()
	if code != wantCode || !strings.HasPrefix(stderr, "dstm-gateway: ") || !strings.Contains(stderr, want) {
		t.Fatalf("exit %d, stderr %q; want exit %d and dstm-gateway: …%s…", code, stderr, wantCode, want)
	}
	if !strings.HasSuffix(stderr, "\n") || strings.HasSuffix(stderr, "\n\n") {
		t.Fatalf("stderr does not end with exactly one newline: %q", stderr)
	}
}

func writeBad(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(p, []byte("tep:\n  mtu: 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
