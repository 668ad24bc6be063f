package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/client"
)

// defaultStateDir is the system-wide state directory of the platform.
func defaultStateDir() string {
	switch runtime.GOOS {
	case "windows":
		return filepath.Join(os.Getenv("ProgramData"), "dstm-client")
	case "darwin":
		return "/Library/Application Support/dstm-client"
	}
	return "/var/lib/dstm-client"
}

// defaultStatusSocket is where a client run as a service serves its status to every local
// user (`dstm-client service install` passes it to up; `status` looks there when the state
// directory has no status it may read).
func defaultStatusSocket() string {
	switch runtime.GOOS {
	case "windows":
		return filepath.Join(os.Getenv("ProgramData"), "dstm-client", "status.sock")
	case "darwin":
		return "/var/run/dstm-client.sock"
	}
	return "/run/dstm-client.sock"
}

// statusServer serves the running up's status, read only, on a unix socket any local user
// may connect to (the status holds no secret: lease, gateway, identity, transport).
type statusServer struct {
	path string
	cur  atomic.Pointer[client.Status]
	srv  *http.Server
	done chan struct{}
}

// listenStatus serves on path: a socket left by a dead client is replaced, one a live client
// serves is an error.
func listenStatus(path string) (*statusServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("status socket %s: another dstm-client up serves it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	s := &statusServer{path: path, done: make(chan struct{})}
	s.cur.Store(&client.Status{State: "connecting", PID: os.Getpid()})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.cur.Load())
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *statusServer) set(st client.Status) {
	st.PID = os.Getpid()
	s.cur.Store(&st)
}

func (s *statusServer) close() {
	_ = s.srv.Close()
	<-s.done
	_ = os.Remove(s.path)
}

// socketStatus reads the status a client serves on path.
func socketStatus(ctx context.Context, path string) (client.Status, error) {
	var st client.Status
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dstm-client/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status socket %s: %s", path, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
