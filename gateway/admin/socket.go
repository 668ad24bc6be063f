package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// probeTimeout bounds the connect used to tell a live socket from a stale one.
const probeTimeout = time.Second

// Listen binds the admin socket at path:
//
//   - a missing parent directory is created with mode 0700;
//   - an exclusive flock on path+".lock" is held for the listener's life, so
//     a second gateway fails with [ErrInUse] (the lock file is never removed:
//     that would reopen the race it closes);
//   - an existing socket is replaced only if nothing accepts connections on
//     it; a path that is not a socket is refused;
//   - the socket is bound in a private 0700 directory, chmod'ed to 0600 and
//     renamed into place, so it is never reachable with looser permissions.
//
// Closing the listener removes the socket (if still ours) and releases the
// lock.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin: create socket directory: %w", err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	ln, err := bindPrivate(dir, path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return ln.withLock(lock), nil
}

func lockFile(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("admin: open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("admin: %w: another dstm-gateway holds %s", ErrInUse, name)
		}
		return nil, fmt.Errorf("admin: lock %s: %w", name, err)
	}
	return f, nil
}

// checkExisting returns nil if path is absent or a stale socket.
func checkExisting(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin: %s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("admin: %w: another process is listening on %s", ErrInUse, path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("admin: probe existing socket: %w", err)
}

func bindPrivate(dir, path string) (*socketListener, error) {
	if err := checkExisting(path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".admin-")
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	ul.SetUnlinkOnClose(false)
	if err := publish(tmp, path); err != nil {
		ul.Close()
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	return &socketListener{UnixListener: ul, path: path, info: fi}, nil
}

func publish(tmp, path string) error {
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("admin: chmod socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("admin: install socket: %w", err)
	}
	return nil
}

type socketListener struct {
	*net.UnixListener
	path string
	info fs.FileInfo
	lock *os.File

	once sync.Once
	err  error
}

func (l *socketListener) withLock(lock *os.File) *socketListener {
	l.lock = lock
	return l
}

// Close removes the socket if it is still the one this listener created and
// releases the lock. It is idempotent.
func (l *socketListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.info) {
			if err := os.Remove(l.path); err != nil && l.err == nil {
				l.err = err
			}
		}
		if l.lock != nil {
			l.lock.Close()
		}
	})
	return l.err
}
