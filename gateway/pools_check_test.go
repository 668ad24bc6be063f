package gateway

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
)

// TestConfigRefusesWhatLeasesRefuse: a configuration that config.Validate passes must give a
// lease manager, so that a start never fails on what check-config passed. Random small
// configurations crowd a few addresses into overlapping pools, exclusions and reservations.
func TestConfigRefusesWhatLeasesRefuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(5572, 3653))
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(24))}) }
	prefix := func() netip.Prefix {
		p, _ := addr().Prefix(28 + rng.IntN(5))
		return p
	}
	valid, refused := 0, 0
	for i := range 20000 {
		cfg := config.Default()
		cfg.TEP.InnerV4 = addr()
		cfg.Pools = nil
		for p := range 1 + rng.IntN(3) {
			pool := config.Pool{Name: fmt.Sprintf("p%d", p)}
			for range rng.IntN(3) {
				pool.Prefixes = append(pool.Prefixes, prefix())
			}
			for range rng.IntN(3) {
				a, b := addr(), addr()
				if b.Less(a) {
					a, b = b, a
				}
				pool.Ranges = append(pool.Ranges, config.Range{First: a, Last: b})
			}
			for range rng.IntN(3) {
				pool.Exclude = append(pool.Exclude, prefix())
			}
			if rng.IntN(2) == 0 {
				nb := rng.IntN(2) == 0
				pool.ExcludeNetworkBroadcast = &nb
			}
			cfg.Pools = append(cfg.Pools, pool)
		}
		if rng.IntN(2) == 0 {
			cfg.Policy.Identities = map[string]auth.IdentityRule{"alice": {Rule: auth.Rule{StaticV4: addr()}}}
		}
		verr := cfg.Validate()
		pol, err := auth.NewPolicy(cfg.Policy)
		if err != nil {
			t.Fatalf("case %d: policy: %v", i, err)
		}
		_, lerr := lease.New(LeaseConfig(cfg, pol, time.Now), lease.NewMemStore())
		if verr == nil && lerr != nil {
			t.Fatalf("case %d: config.Validate accepts what the lease manager refuses (%v):\n%s", i, lerr, marshal(t, cfg))
		}
		if verr == nil {
			valid++
		} else {
			refused++
		}
	}
	if valid < 1000 || refused < 1000 {
		t.Fatalf("the generator is lopsided: %d valid, %d refused", valid, refused)
	}
}

func marshal(t *testing.T, cfg config.Config) string {
	t.Helper()
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
