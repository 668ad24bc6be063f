package boltstore

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

// BenchmarkAllocBolt measures offer+accept of new identities persisted in
// bbolt (fsync on) by 1024 concurrent callers (512 per CPU on the 2-CPU machine) whose commits are
// group-committed. Figure lease_alloc_bbolt, unit "allocs/s".
func BenchmarkAllocBolt(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "bench.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m, err := lease.New(lease.Config{Pools: []lease.PoolConfig{{Name: "big", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}, s)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(512)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("user%d@corp.example", next.Add(1))
			l, err := m.Offer(ctx, lease.Request{Identity: id, Session: "s"})
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := m.Accept(ctx, l.Addr, "s", ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs/s")
}
