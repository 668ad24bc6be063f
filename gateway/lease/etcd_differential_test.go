package lease_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
)

// TestDifferentialEtcd runs the differential model test on the etcd store
// (fewer steps than on memory: each commit is a round trip to etcd).
func TestDifferentialEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	for _, policy := range []lease.LimitPolicy{lease.ReplaceOldest, lease.Refuse} {
		for seed := uint64(1); seed <= 2; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", policy, seed), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("/diff/%s/%d/", policy, seed), Owner: "gw1"})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				lease.RunDifferential(t, seed, policy, st, "gw1", 600)
			})
		}
	}
}
