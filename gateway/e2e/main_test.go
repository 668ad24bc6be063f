package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binaries holds the paths of the binaries built by TestMain; empty when the suite skips.
type binaries struct {
	gateway, client string
	etcd            string // the etcd server, built from its module (the cluster scenario)
	testop          string // the OpenID provider of the sign-in scenarios (internal/oidctest)
	skip            string // why the end-to-end tests skip, if they do
}

// bins is written once by TestMain before any test runs and only read afterwards: TestMain
// has no other way to hand the built binaries to the tests.
var bins binaries

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if bins.skip = skipReason(); bins.skip != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "dstm-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		return 1
	}
	bins.gateway = filepath.Join(dir, "dstm-gateway")
	bins.client = filepath.Join(dir, "dstm-client")
	bins.etcd = filepath.Join(dir, "etcd")
	bins.testop = filepath.Join(dir, "testop")
	return keepResolvConf(m.Run)
}

// keepResolvConf runs the tests and fails them if the host's /etc/resolv.conf changed: the
// clients run with `ip netns exec`, which shares it. A changed file is put back.
func keepResolvConf(run func() int) int {
	const path = "/etc/resolv.conf"
	fi, lerr := os.Lstat(path)
	before, rerr := os.ReadFile(path)
	code := run()
	fi2, lerr2 := os.Lstat(path)
	after, rerr2 := os.ReadFile(path)
	if (lerr == nil) == (lerr2 == nil) && (rerr == nil) == (rerr2 == nil) && bytes.Equal(before, after) &&
		(lerr != nil || fi.Mode() == fi2.Mode()) {
		return code
	}
	fmt.Fprintf(os.Stderr, "e2e: FAIL: the tests changed the host's %s (%q, was %q); putting it back\n", path, after, before)
	if lerr == nil && rerr == nil && fi.Mode().IsRegular() {
		if err := os.WriteFile(path+".dstm-e2e", before, fi.Mode().Perm()); err == nil {
			_ = os.Rename(path+".dstm-e2e", path)
		}
	}
	return 1
}

// skipReason says why the suite cannot run here, or "" when it can.
func skipReason() string {
	switch {
	case testing.Short():
		return "end-to-end tests skipped in -short mode"
	case os.Geteuid() != 0:
		return "end-to-end tests need root (network namespaces, TUN devices)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "end-to-end tests need /dev/net/tun: " + err.Error()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "end-to-end tests need iproute2 (ip netns exec)"
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "end-to-end tests need the go command to build the binaries"
	}
	return ""
}

// build compiles dstm-gateway, dstm-client, the etcd server (the version go.mod names) and
// the test OpenID provider (without -race, to keep them fast) into dir.
func build(dir string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	for name, pkg := range map[string]string{
		"dstm-gateway": "./cmd/dstm-gateway", "dstm-client": "./cmd/dstm-client", "etcd": "go.etcd.io/etcd/server/v3",
		"testop": "./internal/oidctest/testop",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
