package admin

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestListenModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode = %v, want 0700", di.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"admin.sock", "admin.sock.lock"}) {
		t.Errorf("directory holds %v, want only the socket and its lock (no temporary left)", names)
	}
}

func TestListenKeepsExistingDirectoryMode(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(filepath.Join(dir, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o750 {
		t.Errorf("existing directory mode changed to %v", di.Mode().Perm())
	}
}

func TestListenSecondGatewayRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(path)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another dstm-gateway") {
		t.Fatalf("second Listen = %v, want ErrInUse naming another gateway", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("first socket disturbed: %v", err)
	}
}

func TestListenLiveForeignSocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	other, err := net.Listen("unix", path) // a listener that does not take our lock
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = Listen(path)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "listening on "+path) {
		t.Fatalf("Listen over a live socket = %v, want ErrInUse", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // as after kill -9: the file stays, nothing listens
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	c, _ := startServerAt(t, path)
	if _, err := c.Status(testCtx(t)); err != nil {
		t.Fatalf("client through the replacing socket: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file = %v, want refusal", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("regular file touched: %q %v", b, err)
	}
}

func TestCloseRemovesSocketAndReleasesLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after Close: %v, want removed", err)
	}
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	ln2.Close()
}

func TestCloseLeavesForeignReplacement(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", filepath.Join(dir, "other.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := os.Rename(filepath.Join(dir, "other.sock"), path); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed a socket it did not create: %v", err)
	}
}

func TestServeReturnsInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = NewServer(newFakeBackend(), zerolog.Nop()).Serve(context.Background(), path)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("Serve = %v, want ErrInUse", err)
	}
}

func TestShutdownRemovesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(newFakeBackend(), zerolog.Nop()).ServeListener(ctx, ln) }()
	c := NewClient(path)
	defer c.Close()
	if _, err := c.Status(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("ServeListener did not return")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after shutdown: %v", err)
	}
	if _, err := c.Status(testCtx(t)); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Status after shutdown = %v, want ErrNotRunning", err)
	}
}

func startServerAt(t *testing.T, path string) (*Client, string) {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(newFakeBackend(), zerolog.Nop()).ServeListener(ctx, ln) }()
	c := NewClient(path)
	t.Cleanup(func() {
		c.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Error("Serve did not return after cancel")
		}
	})
	return c, path
}

func TestClientNotRunning(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	stale := filepath.Join(dir, "stale.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	tests := []struct {
		path, msg string
	}{
		{missing, "is dstm-gateway running? socket " + missing + ": connect: no such file or directory"},
		{stale, "is dstm-gateway running? socket " + stale + ": connect: connection refused"},
	}
	for _, tt := range tests {
		c := NewClient(tt.path)
		_, err := c.Leases(testCtx(t))
		var de *DialError
		if !errors.Is(err, ErrNotRunning) || errors.Is(err, ErrPermission) || !errors.As(err, &de) {
			t.Errorf("%s: err = %#v, want a DialError matching ErrNotRunning", tt.path, err)
		}
		if err != nil && err.Error() != tt.msg {
			t.Errorf("message = %q, want %q", err, tt.msg)
		}
		if ExitCode(err) != ExitNotRunning {
			t.Errorf("ExitCode = %d, want %d", ExitCode(err), ExitNotRunning)
		}
		c.Close()
	}
}

func TestDialErrorPermission(t *testing.T) {
	err := error(&DialError{Path: "/run/dstm/admin.sock", Err: os.NewSyscallError("connect", syscall.EACCES)})
	if !errors.Is(err, ErrPermission) || errors.Is(err, ErrNotRunning) || ExitCode(err) != ExitPermission {
		t.Fatalf("EACCES DialError classes wrong: %v", err)
	}
	want := "permission denied on admin socket /run/dstm/admin.sock (run as root or as the gateway's user): connect: permission denied"
	if err.Error() != want {
		t.Fatalf("message = %q, want %q", err, want)
	}
}

// TestClientPermissionDenied exercises the real kernel check; root bypasses
// file permissions, so it only runs unprivileged.
func TestClientPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root bypasses socket permissions")
	}
	c, path := startServer(t, newFakeBackend())
	if err := os.Chmod(path, 0o000); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leases(testCtx(t)); !errors.Is(err, ErrPermission) {
		t.Fatalf("err = %v, want ErrPermission", err)
	}
}

func TestListenRefusesSymlinkedLock(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "victim")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.sock")
	if err := os.Symlink(target, path+".lock"); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); !errors.Is(err, syscall.ELOOP) {
		t.Fatalf("Listen with a symlinked lock file = %v, want ELOOP", err)
	}
}
