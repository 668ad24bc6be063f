package lease

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func slash8Config() Config {
	return Config{Pools: []PoolConfig{{Name: "big", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/8")}, ExcludeNetworkBroadcast: true}}}
}

// allocRound is how many leases one round of BenchmarkAllocMem allocates
// into a fresh manager: the rate is measured while a gateway fills up from
// empty to allocRound active leases, whatever b.N is.
const allocRound = 100_000

// BenchmarkAllocMem measures offer+accept of new identities with the
// in-memory store, in rounds that each fill a fresh manager, so that the
// figure does not depend on b.N. Figure lease_alloc_mem, unit "allocs/s".
func BenchmarkAllocMem(b *testing.B) {
	benchAlloc(b, allocRound)
}

// BenchmarkAllocMemMillion is BenchmarkAllocMem with rounds of a million
// leases: the rate of a very large gateway.
func BenchmarkAllocMemMillion(b *testing.B) {
	benchAlloc(b, 1_000_000)
}

func benchAlloc(b *testing.B, round int) {
	ids := make([]string, round)
	for i := range ids {
		ids[i] = fmt.Sprintf("user%d@corp.example", i)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed, cpu time.Duration
	for done := 0; done < b.N; {
		b.StopTimer()
		m, err := New(slash8Config(), NewMemStore())
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC() // the previous round's manager is garbage: do not bill its collection here
		n := min(round, b.N-done)
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		for i := range n {
			l, err := m.Offer(ctx, Request{Identity: ids[i], Session: "s"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Accept(ctx, l.Addr, "s", ""); err != nil {
				b.Fatal(err)
			}
		}
		elapsed += time.Since(start)
		cpu += cpuTime() - cpu0
		done += n
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "allocs/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "allocs/cpu-s")
}

// cpuTime returns the CPU time (user+system, all threads) of the process:
// on a shared machine allocations per CPU-second show the code's cost
// when wall-clock rates are distorted by other load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPoolLoadSlash8 measures New with one /8 pool. Figure
// pool_load_slash8, unit "ms".
func BenchmarkPoolLoadSlash8(b *testing.B) {
	b.ReportAllocs()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := New(slash8Config(), NewMemStore()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms")
}

// BenchmarkMemPerActive measures the Go heap per active lease (cache only,
// in-memory store excluded) over 100,000 leases, with realistic identity,
// session, endpoint and transport values. Figure
// lease_mem_per_active, unit "bytes".
func BenchmarkMemPerActive(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	var perLease float64
	// One measurement whatever b.N is: it is a size, not a rate, and one
	// round takes seconds (so -benchtime=Nx cannot make it run for hours).
	for range 1 {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("user%d@corp.example", i)
		}
		m, err := New(slash8Config(), discardStore{})
		if err != nil {
			b.Fatal(err)
		}
		before := heapInUse()
		for i := range n {
			sess := fmt.Sprintf("sess-%d", i)
			l, err := m.Offer(ctx, Request{Identity: ids[i], Session: sess, Endpoint: netip.MustParseAddr("2001:db8::1"), Transport: "v4dtlsv6"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Accept(ctx, l.Addr, sess, ""); err != nil {
				b.Fatal(err)
			}
		}
		after := heapInUse()
		if got := m.Stats()[0].Active; got != n {
			b.Fatalf("%d active", got)
		}
		perLease = float64(after-before) / n
		runtime.KeepAlive(m)
	}
	b.ReportMetric(perLease, "bytes")
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// discardStore accepts every commit and keeps nothing, so that
// BenchmarkMemPerActive counts the manager's cache alone.
type discardStore struct{}

func (discardStore) Load(context.Context) (Snapshot, error) { return Snapshot{}, nil }
func (discardStore) Commit(context.Context, Txn) error      { return nil }

// BenchmarkLoad100k measures New over a store holding 100,000 active
// leases scattered over a /8 (a restart of a busy gateway).
func BenchmarkLoad100k(b *testing.B) {
	st := NewMemStore()
	var txn Txn
	for i := range 100_000 {
		a := addr4(u32(mustAddr("10.0.0.0")) + uint32(i)*97 + 1)
		l := Lease{Addr: a, Identity: fmt.Sprintf("user%d@corp.example", i), Session: "s", State: StateActive,
			Granted: time.Unix(1, 0), Expires: time.Unix(3600, 0)}
		txn.Leases = append(txn.Leases, Change{Addr: a, Lease: &l})
		txn.Index = append(txn.Index, IndexChange{Identity: l.Identity, Addrs: []netip.Addr{a}})
	}
	if err := st.Commit(context.Background(), txn); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		m, err := New(slash8Config(), st)
		if err != nil {
			b.Fatal(err)
		}
		if s := m.Stats()[0]; s.Active != 100_000 {
			b.Fatalf("stats %+v", s)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms")
}
