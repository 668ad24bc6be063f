package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
)

// benchParallelism multiplies GOMAXPROCS into the number of concurrent benchmark clients. A
// session waits on batched lease-store commits, so throughput grows with concurrency until
// the cores are busy (docs/benchmarks.md, "Design notes from measurements").
const benchParallelism = 128

// benchClients is the number of concurrent clients, each with its own identity (the lease
// manager serialises the allocations of one identity, as it must).
func benchClients() int { return benchParallelism * runtime.GOMAXPROCS(0) }

func benchUser(i int) string { return fmt.Sprintf("user%d", i) }

// benchConfig lets every benchmark client open many sessions without running out of leases:
// a large pool, no session limits, PLAIN for benchUser identities (password user + "-pw").
func benchConfig(b *testing.B) func(*config.Config) {
	users := make([]string, benchClients())
	for i := range users {
		users[i] = benchUser(i)
	}
	pw := digestFile(b, "dstm", users...)
	return func(c *config.Config) {
		c.Pools = []config.Pool{{Name: "default", Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}}}
		c.Leases.MaxSessions = 1 << 30
		c.TSP.MaxSessionsPerSource = 1 << 30
		// Every client is on one loopback address: no per-source rate, and a source's share of
		// the handshake slots (1/16) as large as the 4096 slots the benchmark needs.
		c.TSP.MaxHandshakes = 16 * 4096
		c.TSP.ConnectionRate = 0
		c.TSP.Plain = config.PlainAlways
		c.TSP.Passwords = pw
	}
}

// benchLocal returns the n-th distinct loopback address (127.1.0.1 onwards), port 0.
func benchLocal(n uint32) *net.UDPAddr {
	n += 1 << 16
	return &net.UDPAddr{IP: net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))}
}

func reportSessions(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
}

func plainMachine(b *testing.B, tr tsp.Transport, user string) *tsp.Client {
	m, err := newPlainMachine(tr, user)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// newPlainMachine is a benchmark client's TSP machine: PLAIN as user, create v4dtlsv6.
func newPlainMachine(tr tsp.Transport, user string) (*tsp.Client, error) {
	return tsp.NewClient(tsp.ClientConfig{
		Transport: tr, Mechanism: sasl.Plain, Username: user, Password: user + "-pw",
		AcceptType: tsp.TypeV4DTLSV6,
		Request:    &tsp.Tunnel{Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{IPv6: loopback6}},
	})
}

// BenchmarkTSPSessionTCP measures complete plain TSP sessions over TCP on loopback: connect,
// VERSION, CAPABILITY, AUTHENTICATE PLAIN, create v4dtlsv6 with a lease offer, accept, close;
// benchClients concurrent clients with distinct identities. Figure: sessions/s.
func BenchmarkTSPSessionTCP(b *testing.B) {
	gw := startGateway(b, benchConfig(b))
	var next atomic.Uint32
	// A load generator: no TCP keepalive (four setsockopt calls per connection) on sessions
	// that last milliseconds.
	dialer := net.Dialer{Timeout: waitTimeout, KeepAlive: -1}
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		user := benchUser(int(next.Add(1)-1) % benchClients())
		for pb.Next() {
			c, err := dialer.Dial("tcp", gw.tcp)
			if err != nil {
				b.Error(err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(waitTimeout))
			m := plainMachine(b, tsp.TransportTCP, user)
			_, err = streamSession(c, m)
			c.Close()
			if err != nil || m.State() != tsp.ClientEstablished {
				b.Errorf("session: %v", err)
				return
			}
		}
	})
	reportSessions(b)
	cpu.report(b, "sessions/cpu-s")
}

// BenchmarkTSPSessionUDP measures complete plain TSP sessions over UDP with gogoc's header
// (one datagram each way per message, PLAIN, the last one accepting the lease), concurrent
// clients with distinct identities. Figure: sessions/s.
func BenchmarkTSPSessionUDP(b *testing.B) {
	gw := startGateway(b, benchConfig(b))
	var next, sessions atomic.Uint32
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		user := benchUser(int(next.Add(1)-1) % benchClients())
		buf := make([]byte, tsp.HeaderLen+tsp.MaxDatagramPayload)
		for pb.Next() {
			// Every session from its own loopback address: the gateway keys UDP sessions on
			// (address, port), and a reused ephemeral port would hit
			// TestUDPReconnectFromSamePort's problem.
			c, err := net.DialUDP("udp", benchLocal(sessions.Add(1)), gw.udp)
			if err != nil {
				b.Error(err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(waitTimeout))
			m := plainMachine(b, tsp.TransportUDP, user)
			_, err = udpSessionBuf(c, m, buf)
			c.Close()
			if err != nil {
				b.Errorf("session: %v", err)
				return
			}
		}
	})
	reportSessions(b)
	cpu.report(b, "sessions/cpu-s")
}

// BenchmarkTSPSSLSession measures complete TSP-SSL sessions: a full TLS 1.3 mutual handshake
// (client certificate, ALPN tsp/2, no resumption), SASL EXTERNAL, create v4anyv6 with a
// lease offer, accept v4tlsv6, close; concurrent clients, each with its own enrolled
// identity. Figure: sessions/s (target ≥ 2,000/s).
func BenchmarkTSPSSLSession(b *testing.B) { benchTLS(b, false) }

// BenchmarkTSPSSLSessionResumed is BenchmarkTSPSSLSession with every client resuming its TLS
// session from a ticket of its previous session, as dstm-client does when it reconnects.
func BenchmarkTSPSSLSessionResumed(b *testing.B) { benchTLS(b, true) }

// BenchmarkTSPSSLSessionEtcd is BenchmarkTSPSSLSession in cluster mode: leases and the CA's
// state in etcd (one member in this process, fsync on). Figure tspssl_sessions_etcd, to
// compare with tspssl_sessions (bbolt) of the same run.
func BenchmarkTSPSSLSessionEtcd(b *testing.B) {
	c := etcdtest.StartWith(b, 1, etcdtest.Options{Fsync: true})
	benchTLSWith(b, false, func(cfg *config.Config) {
		cfg.Store.Etcd = &config.Etcd{Endpoints: c.Endpoints(), Name: "gw-bench"}
	})
}

func benchTLS(b *testing.B, resume bool) { benchTLSWith(b, resume, nil) }

func benchTLSWith(b *testing.B, resume bool, more func(*config.Config)) {
	base := benchConfig(b)
	gw := startGateway(b, func(c *config.Config) {
		base(c)
		if more != nil {
			more(c)
		}
	})
	n := benchClients()
	cfgs := make([]*tls.Config, n)
	for i := range cfgs {
		st := gw.enrollIdentity(b, fmt.Sprintf("bench%d@example.com", i))
		cfgs[i] = st.ClientTLSConfig("localhost", "tsp/2")
		cfgs[i].MinVersion = tls.VersionTLS13
		if resume {
			cfgs[i].ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
	}
	var next, resumed atomic.Uint32
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		cfg := cfgs[int(next.Add(1)-1)%n]
		d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: waitTimeout}}
		for pb.Next() {
			r, err := tlsSession(b, d, gw.tcp)
			if err != nil {
				b.Errorf("session: %v", err)
				return
			}
			if r {
				resumed.Add(1)
			}
		}
	})
	reportSessions(b)
	cpu.report(b, "sessions/cpu-s")
	b.ReportMetric(float64(resumed.Load())/float64(b.N), "resumed/op")
}

// tlsSession runs one TSP-SSL session and reports whether its TLS session was resumed.
func tlsSession(b testing.TB, d tls.Dialer, addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, err
	}
	defer c.Close()
	resumed := c.(*tls.Conn).ConnectionState().DidResume
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	m := externalClient(b, tsp.TypeV4AnyV6)
	if _, err := streamSession(c, m); err != nil {
		return resumed, err
	}
	if !m.Offer().Client.IPv4.IsValid() {
		return resumed, fmt.Errorf("offer without a lease")
	}
	replies, err := m.Accept(tsp.TypeV4TLSV6)
	if err != nil {
		return resumed, err
	}
	return resumed, writeReplies(c, replies)
}

// BenchmarkRevokeToClose measures the time from an operator's revocation (admin API, by
// certificate serial) to the close of the revoked client's live TSP-SSL tunnel. Figure: ms
// (mean per revocation).
func BenchmarkRevokeToClose(b *testing.B) {
	gw := startGateway(b, func(c *config.Config) { c.TSP.ConnectionRate = 0 }) // every client is on loopback
	ctx := testCtx(b)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A fresh identity each time: revoking a serial also releases the leases of its
		// identity's other sessions (see TestRevokeOneSerialKeepsOtherCertificates).
		st := gw.enrollIdentity(b, fmt.Sprintf("revoked%d@example.com", i))
		tt := openTLSTunnel(b, gw, st)
		b.StartTimer()
		d, _, err := revokeToClose(ctx, gw, tt.c, st.Leaf.SerialNumber.String())
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms")
}

const (
	stormClients = 2000 // clients of BenchmarkReconnectStorm
	// stormEnrollers enroll them in parallel, below the enrollment API's bound per source
	// address (4): every client is on 127.0.0.1.
	stormEnrollers = 3
)

// BenchmarkReconnectStorm restarts a gateway under stormClients enrolled clients, each with a
// lease, and measures how long all of them take to be back: a TSP-SSL session with their lease
// accepted again, all reconnecting at once. The clients run in this process, on the gateway's
// cores. Figure: storm-s (seconds from the new gateway's start to the last client back).
func BenchmarkReconnectStorm(b *testing.B) {
	b.Run("full", func(b *testing.B) { benchStorm(b, false) })
	b.Run("resumed", func(b *testing.B) { benchStorm(b, true) })
}

func benchStorm(b *testing.B, resume bool) {
	mutate := func(c *config.Config) {
		benchConfig(b)(c)
		c.TSP.MaxHandshakes = 16 * stormClients
	}
	gw := startGateway(b, mutate)
	dialers := make([]tls.Dialer, stormClients)
	enrolled := make(chan error, stormClients)
	var next atomic.Int32
	for range stormEnrollers {
		go func() {
			for i := int(next.Add(1) - 1); i < stormClients; i = int(next.Add(1) - 1) {
				st, err := stormEnroll(gw, fmt.Sprintf("storm%d@example.com", i), b.TempDir())
				if err != nil {
					enrolled <- err
					continue
				}
				cfg := st.ClientTLSConfig("localhost", "tsp/2")
				cfg.MinVersion = tls.VersionTLS13
				if resume {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				}
				dialers[i] = tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: waitTimeout}}
				_, err = tlsSession(b, dialers[i], gw.tcp) // the lease, and a ticket
				enrolled <- err
			}
		}()
	}
	for range stormClients {
		if err := <-enrolled; err != nil {
			b.Fatal(err)
		}
	}
	var total time.Duration
	var resumed atomic.Int32
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		gw.stop()
		b.StartTimer()
		start := time.Now()
		gw = startGateway(b, func(c *config.Config) {
			mutate(c)
			c.StateDir = gw.cfg.StateDir
		})
		errs := make(chan error, stormClients)
		for i := range dialers {
			go func() {
				r, err := tlsSession(b, dialers[i], gw.tcp)
				if r {
					resumed.Add(1)
				}
				errs <- err
			}()
		}
		for range stormClients {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "storm-s")
	b.ReportMetric(float64(resumed.Load())/float64(b.N*stormClients), "resumed/op")
}

// stormEnroll is enrollIdentity for a goroutine other than the benchmark's.
func stormEnroll(gw *testGW, identity, dir string) (*enroll.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tok, err := gw.admin.Token(ctx, identity, time.Hour)
	if err != nil {
		return nil, err
	}
	return enroll.Enroll(ctx, enroll.Options{Gateway: gw.tcp, ServerName: "localhost", Token: tok.Token, StateDir: dir})
}
