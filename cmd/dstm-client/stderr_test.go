package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// runMainEnv makes the test binary run main() with its arguments: the tests see exactly what
// the command prints and its exit code.
const runMainEnv = "DSTM_CLIENT_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestErrorsEndWithOneNewline: a failing command prints "dstm-client: ERROR" and exactly one
// newline on stderr, so the shell prompt starts on a line of its own.
func TestErrorsEndWithOneNewline(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown command with a suggestion", []string{"upp"}, exitFailure, "Did you mean this?"},
		{"unknown flag", []string{"up", "--bogus"}, exitFailure, "unknown flag: --bogus"},
		{"usage", []string{"--state-dir", t.TempDir(), "enroll"}, exitUsage, "--gateway and --token (or --sso) are required"},
		{"no tunnel", []string{"--state-dir", t.TempDir(), "status"}, exitDown, "not running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tt.args...)
			cmd.Env = append(os.Environ(), runMainEnv+"=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tt.code {
				t.Fatalf("%v, want exit code %d; stderr %q", err, tt.code, stderr.String())
			}
			s := stderr.String()
			if !strings.HasPrefix(s, "dstm-client: ") || !strings.Contains(s, tt.want) {
				t.Fatalf("stderr %q, want dstm-client: …%s…", s, tt.want)
			}
			if !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") {
				t.Fatalf("stderr does not end with exactly one newline: %q", s)
			}
		})
	}
}
