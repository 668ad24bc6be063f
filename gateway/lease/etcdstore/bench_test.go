package etcdstore_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
)

// BenchmarkAllocEtcd is boltstore's BenchmarkAllocBolt on etcd: offer+accept of new
// identities by 1024 concurrent callers (512 per CPU), each a compare-and-swap transaction,
// with a one- and a three-member cluster (in this process, fsync on, sharing the CPUs with
// the gateway). Figures lease_alloc_etcd_1 and lease_alloc_etcd_3, unit "allocs/s".
func BenchmarkAllocEtcd(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			c := etcdtest.StartWith(b, members, etcdtest.Options{Fsync: true})
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints(), Owner: "gw-bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			m, err := lease.New(lease.Config{Owner: "gw-bench", Pools: []lease.PoolConfig{{Name: "big", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}, st)
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism(512)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("user%d@corp.example", next.Add(1))
					l, err := m.Offer(context.Background(), lease.Request{Identity: id, Session: "s"})
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := m.Accept(context.Background(), l.Addr, "s", ""); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs/s")
		})
	}
}
