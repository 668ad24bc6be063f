package gateway_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
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
	envLoadCerts   = "DSTM_BENCH_LOAD_CERTS" // TLS: client i's enrollment is in <dir>/<i>
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
	var tlsDialers []tls.Dialer
	if proto == "tls" || proto == "tls-resumed" {
		tlsDialers = loadTLSDialers(t, os.Getenv(envLoadCerts), clients, proto == "tls-resumed")
	}
	var left atomic.Int64
	left.Store(int64(n))
	var sessions, resumed atomic.Uint32
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
				case "udp":
					err = loadUDPSession(addr, user, sessions.Add(1), buf)
				default:
					var r bool
					if r, err = tlsSession(t, tlsDialers[i], addr); r {
						resumed.Add(1)
					}
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
	fmt.Printf("LOAD resumed %d\n", resumed.Load())
}

// loadTLSDialers loads the enrollments the parent made for each client.
func loadTLSDialers(t *testing.T, dir string, clients int, resume bool) []tls.Dialer {
	ds := make([]tls.Dialer, clients)
	for i := range ds {
		st, err := enroll.Load(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.ClientTLSConfig("localhost", "tsp/2")
		cfg.MinVersion = tls.VersionTLS13
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		ds[i] = tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: waitTimeout, KeepAlive: -1}}
	}
	return ds
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

// BenchmarkTSPSSLSessionSplit is BenchmarkTSPSSLSession with the clients in a child process:
// gw-cpu-µs/session is the gateway's CPU for a full TLS 1.3 mutual handshake, EXTERNAL and a
// lease (figures and the goal: docs/benchmarks.md).
func BenchmarkTSPSSLSessionSplit(b *testing.B) { benchSplit(b, "tls") }

// BenchmarkTSPSSLSessionSplitResumed is BenchmarkTSPSSLSessionSplit with every client
// resuming from the ticket of its previous session (resumed/op says how many did).
func BenchmarkTSPSSLSessionSplitResumed(b *testing.B) { benchSplit(b, "tls-resumed") }

func benchSplit(b *testing.B, proto string) {
	gw := startGateway(b, benchConfig(b))
	addr := gw.tcp
	if proto == "udp" {
		addr = gw.udp.String()
	}
	certs := b.TempDir()
	if proto == "tls" || proto == "tls-resumed" {
		for i := range benchClients() {
			gw.enrollIdentityIn(b, fmt.Sprintf("bench%d@example.com", i), filepath.Join(certs, strconv.Itoa(i)))
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchLoadClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLoadProto+"="+proto, envLoadAddr+"="+addr, envLoadCerts+"="+certs,
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
	if proto == "tls-resumed" {
		var resumed int
		for _, line := range strings.Split(string(out), "\n") {
			if _, err := fmt.Sscanf(line, "LOAD resumed %d", &resumed); err == nil {
				break
			}
		}
		b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
	}
}
