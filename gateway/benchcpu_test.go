package gateway_test

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime returns the CPU time (user+system, all threads) of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports, next to a rate per wall-clock second, the same count per CPU-second of
// the whole process (clients and gateway): on a shared machine the wall-clock rate moves with
// other load, the rate per CPU-second shows the code's own cost.
type cpuMeter struct{ start time.Duration }

func startCPU() cpuMeter { return cpuMeter{start: cpuTime()} }

func (c cpuMeter) report(b *testing.B, unit string) {
	if used := cpuTime() - c.start; used > 0 {
		b.ReportMetric(float64(b.N)/used.Seconds(), unit)
	}
}
