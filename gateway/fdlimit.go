package gateway

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TCP connections get three quarters of the file descriptor limit after fdReserve, so that
// running out of descriptors never stops the gateway. As root it first raises the limit to
// fdTarget (or the kernel's nr_open, if lower).
const (
	fdReserve = 128
	fdTarget  = 1 << 20
)

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard one, and both to fdTarget where
// allowed, and returns the soft limit in force.
func raiseFDLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	target := uint64(fdTarget)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			target = min(target, n)
		}
	}
	if rl.Max < target {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: target, Max: target}); err == nil {
			return target
		}
	}
	if rl.Cur < rl.Max {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: rl.Max, Max: rl.Max}); err == nil {
			return rl.Max
		}
	}
	return rl.Cur
}

// connLimit is the bound on TCP connections for a descriptor limit (0: unknown, no bound).
func connLimit(fds uint64) int {
	if fds == 0 {
		return 0
	}
	if fds <= 2*fdReserve {
		return max(16, int(fds/2))
	}
	return int((fds - fdReserve) * 3 / 4)
}
