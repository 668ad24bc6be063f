package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
)

// The reliability campaign (docs/reliability.md). Every scenario runs against the real binaries
// in namespaces. `make test` runs them small (a smoke: each path once, seconds); `make chaos`
// sets DSTM_CHAOS=full for the sizes the figures are taken at, and DSTM_CHAOS_REPORT to a file
// where each scenario appends its rows of the report.

// chaosFull reports whether the full campaign runs (else the smoke).
func chaosFull() bool { return os.Getenv("DSTM_CHAOS") == "full" }

// size returns full in the full campaign, smoke otherwise.
func size(smoke, full int) int {
	if chaosFull() {
		return full
	}
	return smoke
}

// report appends lines to the campaign's report (DSTM_CHAOS_REPORT) and logs them.
func report(t *testing.T, lines ...string) {
	t.Helper()
	for _, l := range lines {
		t.Log(l)
	}
	path := os.Getenv("DSTM_CHAOS_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, strings.Join(lines, "\n"))
}

// reportTable starts a table of the report: a title and the header row.
func reportTable(t *testing.T, title string, columns ...string) {
	t.Helper()
	seps := make([]string, len(columns))
	for i := range seps {
		seps[i] = "---"
	}
	report(t, "", "### "+title, "", "| "+strings.Join(columns, " | ")+" |", "|"+strings.Join(seps, "|")+"|")
}

// newLoadEnv starts a gateway with the load settings and a load client enrolled for TSP-SSL.
func newLoadEnv(t *testing.T) (*env, *loadClient) {
	t.Helper()
	return newLoadEnvWith(t, gwOptions{})
}

// newLoadEnvWith is newLoadEnv with more options.
func newLoadEnvWith(t *testing.T, opts gwOptions) (*env, *loadClient) {
	t.Helper()
	opts.load = true
	e := newEnv(t, opts)
	e.enroll()
	st, err := enroll.Load(e.cdir)
	if err != nil {
		t.Fatal(err)
	}
	l := newLoadClient(e)
	l.st = st
	t.Cleanup(l.closeAll)
	return e, l
}

// openMany opens n sessions of kind with workers in parallel.
func (l *loadClient) openMany(t *testing.T, kind sessionKind, n, workers int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := l.open(ctx, kind); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		l.e.logSummary(t)
		t.Fatalf("opening %d %s sessions: %v", n, kind, err)
	}
}

// liveSessions is the gateway's dstm_sessions, all transports.
func (e *env) liveSessions() (int, error) {
	text, err := e.scrape()
	if err != nil {
		return 0, err
	}
	n, _ := metric(text, "dstm_sessions")
	return int(n), nil
}

func (e *env) waitSessions(t *testing.T, want int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d live sessions", want), func() error {
		n, err := e.liveSessions()
		if err == nil && n != want {
			err = fmt.Errorf("%d live sessions", n)
		}
		return err
	})
}

// TestIdleMemoryPerSession measures what an idle session costs the gateway, per transport:
// resident memory and goroutines per session, from the difference between a gateway with a
// few sessions and one with n more, right after they were opened (with the handshakes'
// garbage) and idle, right after a collection once the freed memory went back to the system
// (collectGarbage). The goal is 20 KB a session (100k sessions in 2 GiB). Each kind runs
// twice: with Go's default pacing (the heap grows to twice the live data before a collection)
// and with memory_limit set, once the first sessions are up, to the Go runtime's memory then
// plus 20 KB for each session to come: the goal scaled down. The collector then keeps its
// slack within that, if the sessions' own memory fits.
// Report columns: transport, memory_limit, sessions, RSS per session just opened, RSS per
// session idle, of it live heap and stacks, goroutines per session, the gateway before → idle.
func TestIdleMemoryPerSession(t *testing.T) {
	requireE2E(t)
	const warm = 20
	n := size(50, 3000)
	if v := os.Getenv("DSTM_CHAOS_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	reportTable(t, "Idle memory per session", "transport", "memory_limit", "sessions", "RSS per session, just opened",
		"RSS per session, idle", "of it live heap", "of it stacks", "goroutines per session", "gateway before → idle")
	for _, kind := range []sessionKind{kindPlainTCP, kindPlainUDP, kindTLS, kindDTLS, kindDTLSParked} {
		for _, budget := range []bool{false, true} {
			if budget && !chaosFull() && kind != kindTLS {
				continue // the smoke run checks the reload of memory_limit once
			}
			name := string(kind)
			if budget {
				name += ", memory_limit"
			}
			t.Run(name, func(t *testing.T) {
				e, l := newLoadEnv(t)
				if err := l.addSources(warm + n); err != nil {
					t.Fatal(err)
				}
				l.openMany(t, kind, warm, 4)
				e.waitSessions(t, warm, 30*time.Second)
				minBefore := e.collectGarbage(t) // the baseline measured as the idle figure is
				before := e.settledStats(t)
				before.rss = minBefore
				limit := "none"
				if budget {
					// The limit counts the Go runtime's memory, not the binary's pages also in RSS.
					goMem := int64(before.memstats["sys"] - before.memstats["heap_released"])
					limit = fmt.Sprintf("%dMiB", max(64, (goMem+int64(n)*sessionBudget)>>20)) // 64MiB: its least
					e.setMemoryLimit(t, limit)
				}
				l.openMany(t, kind, n, 16)
				e.waitSessions(t, warm+n, time.Minute)
				after := e.settledStats(t)
				minIdle := e.collectGarbage(t)
				idle := e.settledStats(t)
				idle.rss = minIdle
				e.saveProfiles(t, strings.Fields(string(kind))[0]+"-"+strings.Fields(string(kind))[1])
				perRSS := float64(after.rss-before.rss) / float64(n)
				perIdle := float64(idle.rss-before.rss) / float64(n)
				perG := float64(after.goroutines-before.goroutines) / float64(n)
				perHeap := float64(idle.heap-before.heap) / float64(n)
				perStack := float64(idle.stacks-before.stacks) / float64(n)
				for _, k := range slices.Sorted(maps.Keys(idle.memstats)) {
					t.Logf("%s: %.1f KB per session", k, (idle.memstats[k]-before.memstats[k])/float64(n)/1024)
				}
				report(t, fmt.Sprintf("| %s | %s | %d | %.1f KB | %.1f KB | %.1f KB | %.1f KB | %.2f | %s → %s |",
					kind, limit, n, perRSS/1024, perIdle/1024, perHeap/1024, perStack/1024, perG, before, idle))
			})
		}
	}
}

// sessionBudget is the goal per idle session: 100k sessions in 2 GiB.
const sessionBudget = 20 << 10

// setMemoryLimit sets the running gateway's memory_limit by a reload (SIGHUP).
func (e *env) setMemoryLimit(t *testing.T, limit string) {
	t.Helper()
	e.opts.memoryLimit = limit
	if err := os.WriteFile(e.cfgPath, []byte(e.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the gateway to apply memory_limit "+limit, func() error {
		b, err := os.ReadFile(e.gw.logPath)
		if err != nil || !bytes.Contains(b, []byte(`"memory limit changed"`)) {
			return fmt.Errorf("no \"memory limit changed\" in the log (%v)", err)
		}
		return nil
	})
}

// collectGarbage has the gateway run its garbage collector a few times, as it does by itself
// at least every two minutes: the stacks of goroutines that went idle shrink. Then it follows
// the gateway's RSS while the runtime's scavenger gives the freed memory back to the system,
// until it stops falling (at most 90 s), and returns the lowest RSS seen: the idle gateway
// right after a collection. (Idle sessions still exchange keepalives, whose garbage makes RSS
// climb again towards the collector's next goal.)
func (e *env) collectGarbage(t *testing.T) (minRSS int64) {
	t.Helper()
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := get(ctx, httpIn(e.tp.Gateway, 30*time.Second), "http://"+metricsAddr+"/debug/pprof/heap?gc=1")
		cancel()
		if err != nil {
			t.Fatalf("gateway GC: %v", err)
		}
	}
	const step, settled = 64 << 10, 3 // RSS falling by less than step, settled polls in a row
	last, still := int64(-1), 0
	tick := time.NewTicker(time.Duration(size(250, 2000)) * time.Millisecond) // the smoke run: a few MB
	defer tick.Stop()
	deadline := time.After(90 * time.Second)
	for still < settled {
		s, err := e.gatewayStats()
		if err != nil {
			t.Fatal(err)
		}
		if last >= 0 && last-s.rss < step {
			still++
		} else {
			still = 0
		}
		if minRSS == 0 || s.rss < minRSS {
			minRSS = s.rss
		}
		last = s.rss
		select {
		case <-tick.C:
		case <-deadline:
			t.Logf("gateway RSS still falling after 90 s (%.1f MB)", float64(last)/1e6)
			return minRSS
		}
	}
	return minRSS
}

// settledStats reads the gateway's stats once its goroutine count has stopped moving (the
// sessions just opened have finished their handshakes and the workers have parked or ended).
func (e *env) settledStats(t *testing.T) procStats {
	t.Helper()
	var last procStats
	stable := 0
	eventually(t, 30*time.Second, "the gateway to settle", func() error {
		s, err := e.gatewayStats()
		if err != nil {
			return err
		}
		if s.goroutines == last.goroutines {
			stable++
		} else {
			stable = 0
		}
		last = s
		if stable < 5 {
			return fmt.Errorf("goroutines still moving (%d)", s.goroutines)
		}
		return nil
	})
	runtime.GC() // ours, not the gateway's: keeps the test process's own noise down
	return last
}

// logSummary logs how often each warning or error of the gateway's log occurred, with its
// reason: what went wrong under load, in a few lines.
func (e *env) logSummary(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(e.gw.logPath)
	if err != nil {
		t.Logf("gateway log: %v", err)
		return
	}
	counts := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		var rec struct{ Level, Message, Reason, Error string }
		if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "warn" && rec.Level != "error") {
			continue
		}
		counts[fmt.Sprintf("%s %q reason=%q error=%.100q", rec.Level, rec.Message, rec.Reason, rec.Error)]++
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int { return counts[b] - counts[a] })
	for _, k := range keys[:min(len(keys), 10)] {
		t.Logf("gateway log: %d× %s", counts[k], k)
	}
}

// saveProfiles writes the gateway's heap and goroutine profiles to DSTM_CHAOS_PROFILES/name-*
// when that directory is set.
func (e *env) saveProfiles(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("DSTM_CHAOS_PROFILES")
	if dir == "" {
		return
	}
	for _, p := range []string{"heap", "goroutine"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		b, err := get(ctx, httpIn(e.tp.Gateway, 30*time.Second), "http://"+metricsAddr+"/debug/pprof/"+p)
		cancel()
		if err != nil {
			t.Errorf("profile %s: %v", p, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+p+".pb.gz"), b, 0o644); err != nil {
			t.Error(err)
		}
	}
}
