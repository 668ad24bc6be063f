package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestStatusWithoutTunnelIsExitCode3(t *testing.T) {
	_, err := execute(t, "--state-dir", t.TempDir(), "status")
	var de downError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("err = %v", err)
	}
}

func TestEnrollNeedsGatewayAndToken(t *testing.T) {
	_, err := execute(t, "--state-dir", t.TempDir(), "enroll", "--gateway", "gw.example")
	var ue usageError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want a usage error", err)
	}
}

func TestUpWithoutEnrollmentSaysSo(t *testing.T) {
	_, err := execute(t, "--state-dir", filepath.Join(t.TempDir(), "none"), "up", "--gateway", "gw.example")
	if err == nil || !strings.Contains(err.Error(), "enroll first") {
		t.Fatalf("err = %v", err)
	}
}

func TestWithPort(t *testing.T) {
	tests := map[string]string{
		"gw.example":         "gw.example:3653",
		"gw.example:4000":    "gw.example:4000",
		"2001:db8::1":        "[2001:db8::1]:3653",
		"[2001:db8::1]":      "[2001:db8::1]:3653",
		"[2001:db8::1]:3653": "[2001:db8::1]:3653",
		"192.0.2.1":          "192.0.2.1:3653",
	}
	for in, want := range tests {
		if got := withPort(in); got != want {
			t.Errorf("withPort(%q) = %q, want %q", in, got, want)
		}
	}
}
