package lease

import "testing"

// RunDifferential runs the differential model test on st, an empty store
// whose Manager (named owner) is its only writer, for another package's
// store (the lease package's tests cannot import it).
func RunDifferential(t *testing.T, seed uint64, policy LimitPolicy, st Store, owner string, steps int) {
	runDifferentialOn(t, seed, policy, st, owner, steps)
}
