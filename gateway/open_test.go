package gateway_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease/boltstore"
)

// lockWait bounds how long a second gateway on a state directory in use may take to say so.
const lockWait = time.Second

// initState returns a configuration whose state directory holds a CA (as `init` leaves it).
func initState(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	ca, err := certs.Init(filepath.Join(cfg.StateDir, gateway.CADir), gateway.CAOptions(cfg, zerolog.Nop(), time.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestOpenStateErrors: New says "run dstm-gateway init first" only when there is no CA, and
// keeps the operating system's error for everything else.
func TestOpenStateErrors(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) string // returns the state_dir to use
		want    string
		init    bool // the error suggests init
	}{
		{"no state directory", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "missing")
		}, "no certificate authority in DIR/missing/ca", true},
		{"empty state directory", func(t *testing.T, dir string) string {
			return dir
		}, "no certificate authority in DIR/ca", true},
		{"state directory is a file", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "state"))
			return filepath.Join(dir, "state")
		}, "not a directory", false},
		{"ca is a file", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, gateway.CADir))
			return dir
		}, "not a directory", false},
		{"ca.json is a directory", func(t *testing.T, dir string) string {
			if err := os.MkdirAll(filepath.Join(dir, gateway.CADir, "ca.json"), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "is a directory", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default()
			cfg.StateDir = tt.prepare(t, dir)
			g, err := gateway.New(cfg, zerolog.Nop(), gateway.Options{})
			if err == nil {
				g.Close()
				t.Fatal("New succeeded")
			}
			msg := strings.ReplaceAll(err.Error(), dir, "DIR")
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			if got := strings.Contains(msg, "init first"); got != tt.init {
				t.Errorf("error %q: suggests init = %t, want %t", msg, got, tt.init)
			}
			if got := errors.Is(err, certs.ErrNotInitialized); got != tt.init {
				t.Errorf("errors.Is(err, certs.ErrNotInitialized) = %t, want %t", got, tt.init)
			}
		})
	}
}

// TestSecondGatewayOnTheSameState: a second gateway on a state directory in use says so at
// once, whether the CA or only the lease store is held.
func TestSecondGatewayOnTheSameState(t *testing.T) {
	t.Run("CA and leases held", func(t *testing.T) {
		cfg := initState(t)
		first, err := gateway.New(cfg, zerolog.Nop(), gateway.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		checkLocked(t, cfg)
	})
	t.Run("lease store held", func(t *testing.T) {
		cfg := initState(t)
		st, err := boltstore.OpenBolt(filepath.Join(cfg.StateDir, gateway.LeaseFile), boltstore.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		checkLocked(t, cfg)
	})
}

func checkLocked(t *testing.T, cfg config.Config) {
	t.Helper()
	start := time.Now()
	g, err := gateway.New(cfg, zerolog.Nop(), gateway.Options{})
	took := time.Since(start)
	if err == nil {
		g.Close()
		t.Fatal("second gateway opened the same state directory")
	}
	want := "another dstm-gateway is running with state directory " + cfg.StateDir + " (lock held)"
	if err.Error() != want || !errors.Is(err, gateway.ErrStateLocked) {
		t.Errorf("error %q, want %q (matching gateway.ErrStateLocked)", err, want)
	}
	if took >= lockWait {
		t.Errorf("took %v to say the state directory is in use, want less than %v", took, lockWait)
	}
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}
