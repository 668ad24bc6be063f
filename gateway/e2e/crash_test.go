package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
)

// leases returns `dstm-gateway leases --json`.
func (e *env) leases() ([]admin.Lease, error) {
	out, err := e.gwCmd("leases", "--json")
	if err != nil {
		return nil, err
	}
	var ls []admin.Lease
	if err := json.Unmarshal(out, &ls); err != nil {
		return nil, fmt.Errorf("leases --json: %w (%s)", err, out)
	}
	return ls, nil
}

// doubleAllocations checks the gateway's own view for an address held by two live sessions,
// or an active lease whose session is not live, and returns what it found.
func (e *env) doubleAllocations() ([]string, error) {
	ss, err := e.sessions()
	if err != nil {
		return nil, err
	}
	ls, err := e.leases()
	if err != nil {
		return nil, err
	}
	var bad []string
	holder := map[string]string{}
	live := map[string]bool{}
	for _, s := range ss {
		live[s.ID] = true
		if s.Lease == "" {
			continue
		}
		if other, ok := holder[s.Lease]; ok {
			bad = append(bad, fmt.Sprintf("%s held by sessions %s and %s", s.Lease, other, s.ID))
		}
		holder[s.Lease] = s.ID
	}
	for _, l := range ls {
		if l.State == "active" && !live[l.Session] {
			bad = append(bad, fmt.Sprintf("%s active for session %s, which is not live", l.Addr, l.Session))
		}
	}
	return bad, nil
}

// openAll opens one session of kinds[i] from srcs[i] for every i, in parallel.
func (l *loadClient) openAll(kinds []sessionKind, srcs []netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, len(srcs))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range srcs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := l.openFrom(ctx, kinds[i], srcs[i]); err != nil {
				errs <- fmt.Errorf("%s from %s: %w", kinds[i], srcs[i], err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// plainLeases maps the identity of each plain (ANONYMOUS) session, its IPv6 address, to its
// active lease.
func (e *env) plainLeases() (map[string]string, error) {
	ls, err := e.leases()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range ls {
		if l.State == "active" && l.Transport == "v4v6" {
			out[l.Identity] = l.Addr
		}
	}
	return out, nil
}

// TestKillUnderLoad kills the gateway with SIGKILL under mixed sessions (plain v4v6 over TCP
// and UDP, TSP-SSL with DTLS and the TLS stream), starts it again and reconnects every session:
// every plain client gets the IPv4 address it had, no address is ever held twice, and the
// report says how long it took until every session was back.
func TestKillUnderLoad(t *testing.T) {
	requireE2E(t)
	rounds, per := size(1, 5), size(5, 50)
	e, l := newLoadEnv(t)
	if err := l.addSources(4 * per); err != nil {
		t.Fatal(err)
	}
	var kinds []sessionKind
	for _, k := range []sessionKind{kindPlainTCP, kindPlainUDP, kindTLS, kindDTLS} {
		for range per {
			kinds = append(kinds, k)
		}
	}
	srcs := l.srcs[:len(kinds)]
	if err := l.openAll(kinds, srcs); err != nil {
		t.Fatal(err)
	}
	e.waitSessions(t, len(kinds), time.Minute)
	first, err := e.plainLeases()
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2*per {
		t.Fatalf("%d plain leases, want %d", len(first), 2*per)
	}
	reportTable(t, "Kill -9 under load", "round", "sessions", "time until all are back", "plain clients on the same IPv4", "double allocations")
	for round := range rounds {
		e.gw.kill()
		l.closeAll()
		start := time.Now()
		e.startGateway()
		if err := l.openAll(kinds, srcs); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		e.waitSessions(t, len(kinds), time.Minute)
		back := time.Since(start)
		now, err := e.plainLeases()
		if err != nil {
			t.Fatal(err)
		}
		same := 0
		for id, addr := range first {
			if now[id] == addr {
				same++
			}
		}
		bad, err := e.doubleAllocations()
		if err != nil {
			t.Fatal(err)
		}
		report(t, fmt.Sprintf("| %d | %d (%d of each kind) | %v | %d of %d | %d |",
			round+1, len(kinds), per, back.Round(time.Millisecond), same, len(first), len(bad)))
		if same != len(first) {
			t.Errorf("round %d: %d of %d plain clients got their address back", round, same, len(first))
		}
		if len(bad) > 0 {
			t.Fatalf("round %d: %v", round, bad)
		}
	}
}

// TestSessionChurn opens and closes plain and TLS sessions in batches and reports how the
// gateway's memory, descriptors and goroutines grow per 1,000 sessions (they should not).
func TestSessionChurn(t *testing.T) {
	requireE2E(t)
	batches, batch := size(3, 10), size(100, 1000)
	e, l := newLoadEnv(t)
	if err := l.addSources(batch); err != nil {
		t.Fatal(err)
	}
	kinds := make([]sessionKind, batch)
	for i := range kinds {
		kinds[i] = []sessionKind{kindPlainTCP, kindTLS}[i%2]
	}
	var first, last procStats
	for b := range batches {
		if err := l.openAll(kinds, l.srcs[:batch]); err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		e.waitSessions(t, batch, time.Minute)
		l.closeAll()
		e.waitSessions(t, 0, time.Minute)
		s := e.backDown(t, procStats{goroutines: 300, fds: 30})
		if b == 0 {
			first = s
		}
		last = s
	}
	perK := func(a, b int64) float64 { return float64(b-a) / float64((batches-1)*batch) * 1000 }
	reportTable(t, "Churn", "sessions", "RSS per 1,000 after the first batch", "fds per 1,000", "goroutines per 1,000", "gateway after the first batch → after the last")
	report(t, fmt.Sprintf("| %d in batches of %d | %+.1f KB | %+.2f | %+.2f | %s → %s |",
		batches*batch, batch, perK(first.rss, last.rss)/1024, perK(int64(first.fds), int64(last.fds)),
		perK(int64(first.goroutines), int64(last.goroutines)), first, last))
	if last.fds > first.fds+5 || last.goroutines > first.goroutines+backDownSlack {
		t.Errorf("descriptors or goroutines grow with churn: %s → %s", first, last)
	}
}

// TestFullDisk runs the gateway's state directory on a small file system and fills it: new
// sessions are refused with a TSP status while the sessions already up go on, and new sessions
// work again once there is room.
func TestFullDisk(t *testing.T) {
	requireE2E(t)
	e, l := newLoadEnvWith(t, gwOptions{prepare: func(e *env) {
		state := filepath.Join(e.dir, "state")
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "dstm-e2e-full", state).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs for the state directory: %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", "-l", state).Run() })
	}})
	const tries = 500
	if err := l.addSources(4 + tries + 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 4 {
		if err := l.open(ctx, kindPlainTCP); err != nil {
			t.Fatal(err)
		}
	}
	e.waitSessions(t, 4, 30*time.Second)
	filler := filepath.Join(e.dir, "state", "filler")
	fill := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M")
	_ = fill.Run() // ends with "No space left on device"
	// gogoc, as the load client, does not wait for an answer to its accept: the gateway's
	// count of 310 answers tells the refusals.
	status310 := func() int {
		text, err := e.scrape()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := metric(text, "dstm_tsp_responses_total", "status=310")
		return int(n)
	}
	before310 := status310()
	for range tries {
		_ = l.open(ctx, kindPlainTCP)
	}
	var refused, live int
	eventually(t, 30*time.Second, "every refusal counted", func() error {
		var err error
		if live, err = e.liveSessions(); err != nil {
			return err
		}
		refused = status310() - before310
		if refused+live-4 != tries {
			return fmt.Errorf("%d refused + %d live - 4 before != %d tried", refused, live, tries)
		}
		return nil
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		_ = l.open(ctx, kindPlainTCP)
	}
	recovered := 0
	_ = poll(30*time.Second, 100*time.Millisecond, func() error {
		n, err := e.liveSessions()
		if err != nil {
			return err
		}
		if recovered = n - live; recovered != 10 {
			return fmt.Errorf("%d of 10 sessions live", recovered)
		}
		return nil
	})
	reportTable(t, "Full disk", "new sessions refused (310) while full", "sessions live while full (4 before)", "new sessions once there was room")
	report(t, fmt.Sprintf("| %d of %d | %d | %d of 10 |", refused, tries, live, recovered))
	if refused == 0 {
		t.Error("no new session was refused with the disk full (did the state directory fill?)")
	}
	if live < 4 {
		t.Errorf("%d sessions live while the disk was full, want the 4 from before", live)
	}
	if recovered != 10 {
		t.Errorf("%d of 10 sessions once there was room again", recovered)
	}
}
