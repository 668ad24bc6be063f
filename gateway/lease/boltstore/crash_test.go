package boltstore

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

const (
	crashEnvDB    = "DSTM_LEASE_CRASH_DB"
	crashEnvRound = "DSTM_LEASE_CRASH_ROUND"
)

// TestCrashChild is the body of the child process of TestCrashRecovery:
// it allocates leases from several goroutines forever and prints one ACK
// line per allocation that Accept acknowledged. Run directly it skips.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnvDB)
	if path == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	s, err := OpenBolt(path, BoltOptions{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Println("FATAL", err)
		os.Exit(2)
	}
	m, err := lease.New(testConfig(), s)
	if err != nil {
		fmt.Println("FATAL", err)
		os.Exit(2)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for n := 0; ; n++ {
				id := fmt.Sprintf("r%s-g%d-n%d", os.Getenv(crashEnvRound), g, n)
				l, err := m.Offer(ctx, lease.Request{Identity: id, Session: "s"})
				if err == nil {
					l, err = m.Accept(ctx, l.Addr, "s", "")
				}
				out.Lock()
				if err != nil {
					fmt.Println("ERR", err)
				} else {
					fmt.Println("ACK", l.Addr, id)
				}
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashRecovery re-executes the test binary as a child that allocates
// in a loop, SIGKILLs it mid-allocation, reopens the store and checks that
// every acknowledged allocation is present and nothing is allocated twice.
// Five rounds run on the same file.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	acked := map[netip.Addr]string{}
	for round := range 5 {
		acks := runCrashChild(t, path, round, 300)
		for a, id := range acks {
			if prev, dup := acked[a]; dup {
				t.Fatalf("round %d: %v acknowledged to %s and earlier to %s", round, a, id, prev)
			}
			acked[a] = id
		}
		verifyStore(t, path, acked)
	}
}

func runCrashChild(t *testing.T, path string, round, want int) map[netip.Addr]string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDB+"="+path, fmt.Sprintf("%s=%d", crashEnvRound, round))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	acks := map[netip.Addr]string{}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(60 * time.Second)
	for len(acks) < want {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited after %d acks", len(acks))
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "ACK":
				a := netip.MustParseAddr(f[1])
				if prev, dup := acks[a]; dup {
					t.Fatalf("%v acknowledged twice (%s, %s)", a, prev, f[2])
				}
				acks[a] = f[2]
			case len(f) > 0 && (f[0] == "ERR" || f[0] == "FATAL"):
				t.Fatalf("child: %s", line)
			}
		case <-deadline:
			t.Fatalf("child produced only %d acks", len(acks))
		}
	}
	// Kill while the goroutines are in the middle of commits.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	// Acks printed before the kill landed are acknowledged too.
	for line := range lines {
		// Each ACK is one write(2) of a short line, so it is whole or absent.
		if f := strings.Fields(line); len(f) == 3 && f[0] == "ACK" {
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				t.Fatalf("torn ack line %q", line)
			}
			acks[a] = f[2]
		}
	}
	_ = cmd.Wait()
	return acks
}

func verifyStore(t *testing.T, path string, acked map[netip.Addr]string) {
	t.Helper()
	s, err := OpenBolt(path, BoltOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	snap, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("load after kill: %v", err)
	}
	byAddr := map[netip.Addr]lease.Record{}
	byIdentity := map[string]netip.Addr{}
	for _, r := range snap.Leases {
		if _, dup := byAddr[r.Lease.Addr]; dup {
			t.Fatalf("two records for %v", r.Lease.Addr)
		}
		byAddr[r.Lease.Addr] = r
		if prev, dup := byIdentity[r.Lease.Identity]; dup {
			t.Fatalf("identity %s has %v and %v", r.Lease.Identity, prev, r.Lease.Addr)
		}
		byIdentity[r.Lease.Identity] = r.Lease.Addr
	}
	for a, id := range acked {
		r, ok := byAddr[a]
		if !ok || r.Lease.Identity != id || r.Lease.State != lease.StateActive {
			t.Fatalf("acknowledged %v for %s missing after kill: %+v", a, id, r)
		}
	}
	m, err := lease.New(testConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	st := m.Stats()[0]
	if uint64(st.Offered+st.Active+st.Held)+st.Free != st.Size || st.Offered+st.Active+st.Held != len(snap.Leases) {
		t.Fatalf("stats %+v for %d records", st, len(snap.Leases))
	}
	t.Logf("after kill: %d records, %d acknowledged, %d in flight (offered)", len(snap.Leases), len(acked), st.Offered)
}
