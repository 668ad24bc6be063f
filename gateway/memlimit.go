package gateway

import (
	"math"
	"runtime/debug"

	"github.com/dstmgw/dstm/gateway/config"
)

// memoryLimit is the soft memory limit for c: memory_limit, else the one the process started
// with (GOMEMLIMIT; math.MaxInt64 when none).
func memoryLimit(c config.Config, atStart int64) int64 {
	if c.MemoryLimit > 0 {
		return int64(c.MemoryLimit)
	}
	return atStart
}

// applyMemoryLimit sets the process's soft memory limit for c (see memoryLimit) and returns
// it, 0 for none.
func (g *Gateway) applyMemoryLimit(c config.Config) int64 {
	l := memoryLimit(c, g.memLimitAtStart)
	debug.SetMemoryLimit(l)
	if l == math.MaxInt64 {
		return 0
	}
	return l
}
