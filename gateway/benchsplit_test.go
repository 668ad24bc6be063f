package gateway_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp"
)

// The split benchmarks run the gateway in this process and the clients in a child process
// (this test binary running TestBenchLoadClient), so that the gateway's own CPU per session is
// measured: sessions/s per core = 1e6 / gw-cpu-µs/session.

// Environment of the load-generating child.
const (
	envLoadProto   = "DSTM_BENCH_LOAD_PROTO" // "tcp" or "udp"
	envLoadAddr    = "DSTM_BENCH_LOAD_ADDR"
	envLoadN       = "DSTM_BENCH_LOAD_N"
	envLoadClients = "DSTM_BENCH_LOAD_CLIENTS"
)

// TestBenchLoadClient is the load generator of the split benchmarks; it does nothing unless
// started by one of them.
func TestBenchLoadClient(t *testing.T) {
	proto := os.Getenv(envLoadProto)
	if proto == "" {
		t.Skip("load generator of BenchmarkTSPSessionSplit*; not a test on its own")
	}
	n, err1 := strconv.Atoi(os.Getenv(envLoadN))
	clients, err2 := strconv.Atoi(os.Getenv(envLoadClients))
	if err1 != nil || err2 != nil || n < 0 || clients < 1 {
		t.Fatalf("bad load parameters %q %q", os.Getenv(envLoadN), os.Getenv(envLoadClients))
	}
	addr := os.Getenv(envLoadAddr)
	var left atomic.Int64
	left.Store(int64(n))
	var sessions atomic.Uint32
	var wg sync.WaitGroup
	var failed atomic.Value
	for i := range clients {
		wg.Go(func() {
			user := benchUser(i)
			buf := make([]byte, tsp.HeaderLen+tsp.MaxDatagramPayload)
			dialer := net.Dialer{Timeout: waitTimeout, KeepAlive: -1}
			for left.Add(-1) >= 0 {
				var err error
				switch proto {
				case "tcp":
					err = loadTCPSession(&dialer, addr, user)
				default:
					err = loadUDPSession(addr, user, sessions.Add(1), buf)
				}
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
}

func loadTCPSession(d *net.Dialer, addr, user string) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	m, err := newPlainMachine(tsp.TransportTCP, user)
	if err != nil {
		return err
	}
	if _, err := streamSession(c, m); err != nil || m.State() != tsp.ClientEstablished {
		return fmt.Errorf("session: %v (state %v)", err, m.State())
	}
	return nil
}

func loadUDPSession(addr, user string, n uint32, buf []byte) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp", benchLocal(n), ua)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	m, err := newPlainMachine(tsp.TransportUDP, user)
	if err != nil {
		return err
	}
	_, err = udpSessionBuf(c, m, buf)
	return err
}

// BenchmarkTSPSessionSplitTCP is BenchmarkTSPSessionTCP with the clients in a child process.
// Metrics: sessions/s end to end, gw-cpu-µs/session (this process: gateway and lease store),
// client-cpu-µs/session (the child).
func BenchmarkTSPSessionSplitTCP(b *testing.B) { benchSplit(b, "tcp") }

// BenchmarkTSPSessionSplitUDP is BenchmarkTSPSessionUDP with the clients in a child process.
func BenchmarkTSPSessionSplitUDP(b *testing.B) { benchSplit(b, "udp") }

func benchSplit(b *testing.B, proto string) {
	gw := startGateway(b, benchConfig(b))
	addr := gw.tcp
	if proto == "udp" {
		addr = gw.udp.String()
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchLoadClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLoadProto+"="+proto, envLoadAddr+"="+addr,
		envLoadN+"="+strconv.Itoa(b.N), envLoadClients+"="+strconv.Itoa(benchClients()))
	b.ResetTimer()
	cpu := startCPU()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	gwCPU := cpuTime() - cpu.start
	b.StopTimer()
	if err != nil {
		b.Fatalf("load generator: %v\n%s", err, out)
	}
	var child time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		child = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sessions/s")
	b.ReportMetric(float64(gwCPU.Microseconds())/float64(b.N), "gw-cpu-µs/session")
	b.ReportMetric(float64(child.Microseconds())/float64(b.N), "client-cpu-µs/session")
}
