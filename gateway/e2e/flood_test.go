package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp"
)

// A flood runs from the test process inside the client namespace until ctx ends. Each uses
// addresses of loadSources: from (one source) or many (rotating over the rest).
type flood struct {
	name string
	run  func(ctx context.Context, l *loadClient, one netip.Addr, many []netip.Addr)
}

// floods are the attacks of the campaign, each by a host that does not authenticate.
func floods() []flood {
	return []flood{
		{"garbage on the TSP port (TCP, 32 connections at a time)", floodGarbage},
		{"TLS slowloris from one address (512 half-open handshakes)", func(ctx context.Context, l *loadClient, one netip.Addr, _ []netip.Addr) {
			floodSlowloris(ctx, l, []netip.Addr{one}, 512)
		}},
		{"TLS slowloris from 256 addresses (1024 half-open handshakes)", func(ctx context.Context, l *loadClient, _ netip.Addr, many []netip.Addr) {
			floodSlowloris(ctx, l, many, 1024)
		}},
		{"cookie-less DTLS ClientHellos from one address", floodDTLSHellos},
		{"TSP VERSIONs over UDP from 256 addresses, never continued", floodVersions},
		{"enrollment connections held open (TLS, ALPN http/1.1)", floodEnrollHolders},
	}
}

// dialAny dials network from src and returns the connection, or nil.
func (l *loadClient) dialAny(ctx context.Context, network string, src netip.Addr) net.Conn {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := l.dialFrom(dctx, network, src)
	if err != nil {
		return nil
	}
	return c
}

// floodGarbage sends random bytes on fresh TCP connections and reads until they close.
func floodGarbage(ctx context.Context, l *loadClient, one netip.Addr, many []netip.Addr) {
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			junk := make([]byte, 200)
			buf := make([]byte, 512)
			for i := w; ctx.Err() == nil; i += 32 {
				c := l.dialAny(ctx, "tcp", many[i%len(many)])
				if c == nil {
					continue
				}
				_, _ = rand.Read(junk)
				junk[0] = 'G' // not 0x16: plain TSP parsing
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				_, _ = c.Write(junk)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
}

// floodSlowloris keeps n connections that sent the start of a TLS ClientHello and nothing
// more, from the given sources, reopening those the gateway closes.
func floodSlowloris(ctx context.Context, l *loadClient, srcs []netip.Addr, n int) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c := l.dialAny(ctx, "tcp", srcs[i%len(srcs)])
				if c == nil {
					continue
				}
				_, _ = c.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
				stop := context.AfterFunc(ctx, func() { c.Close() })
				_, _ = c.Read(make([]byte, 1)) // until the gateway gives up on it
				stop()
				c.Close()
			}
		}()
	}
	wg.Wait()
}

// floodDTLSHellos sends a real ClientHello without a cookie as fast as one socket can.
func floodDTLSHellos(ctx context.Context, l *loadClient, one netip.Addr, _ []netip.Addr) {
	hello, err := corpusBytes("tunnel/dtls/testdata/fuzz/FuzzParseClientHello/pion_first_hello")
	if err != nil {
		panic(err)
	}
	c := l.dialAny(ctx, "udp", one)
	if c == nil {
		return
	}
	defer c.Close()
	go func() { // drain the HelloVerifyRequests
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	for ctx.Err() == nil {
		_, _ = c.Write(hello)
	}
}

// floodVersions opens TSP-over-UDP exchanges (a VERSION each) from many addresses and ports
// and never continues them.
func floodVersions(ctx context.Context, l *loadClient, _ netip.Addr, many []netip.Addr) {
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for i := w; ctx.Err() == nil; i += 8 {
				c := l.dialAny(ctx, "udp", many[i%len(many)])
				if c == nil {
					continue
				}
				for seq := uint32(0xf0); seq < 0xf0+16 && ctx.Err() == nil; seq++ {
					_, _ = c.Write(tsp.AppendDatagram(nil, tsp.Header{Seq: seq}, []byte("VERSION=2.0.2\r\n")))
				}
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
				_, _ = c.Read(buf)
				c.Close()
			}
		}()
	}
	wg.Wait()
}

// floodEnrollHolders keeps TLS connections with ALPN http/1.1 open without a request, from
// many addresses, reopening those the gateway closes.
func floodEnrollHolders(ctx context.Context, l *loadClient, _ netip.Addr, many []netip.Addr) {
	var wg sync.WaitGroup
	for i := range 1024 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c := l.dialAny(ctx, "tcp", many[i%len(many)])
				if c == nil {
					continue
				}
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				stop := context.AfterFunc(ctx, func() { c.Close() })
				if tc.HandshakeContext(ctx) == nil {
					_, _ = tc.Read(make([]byte, 1)) // until the gateway gives up on it
				}
				stop()
				c.Close()
			}
		}()
	}
	wg.Wait()
}

// corpusBytes reads the []byte value of a Go fuzz corpus file (path from the module root).
func corpusBytes(path string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	v, ok := strings.CutPrefix(lines[len(lines)-1], "[]byte(")
	if !ok {
		return nil, fmt.Errorf("%s: not a []byte corpus entry", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(v, ")"))
	return []byte(s), err
}

// setupTimes opens and closes n legitimate TSP-SSL sessions (TLS handshake with a client
// certificate, TSP up to an accepted TLS-stream tunnel) one after the other and returns how
// long each took; a session that fails counts as the time until it failed, and is reported.
func (l *loadClient) setupTimes(n int) (times []time.Duration, failures int) {
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		start := time.Now()
		err := l.open(ctx, kindTLS)
		times = append(times, time.Since(start))
		cancel()
		if err != nil {
			failures++
		}
		l.closeAll()
	}
	return times, failures
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestFloods: during each flood, a legitimate TSP-SSL session still sets up within twice its
// time without the flood (the goal), and the gateway's memory, descriptors and goroutines stay
// bounded and come back down after it.
func TestFloods(t *testing.T) {
	requireE2E(t)
	setups := size(3, 15)
	floodFor := time.Duration(size(2, 20)) * time.Second
	e, l := newLoadEnv(t)
	if err := l.addSources(2000); err != nil {
		t.Fatal(err)
	}
	legit := &loadClient{e: e, st: l.st, srcs: l.srcs[1000:]}
	one, many := l.srcs[0], l.srcs[1:257]
	base, fails := legit.setupTimes(setups)
	if fails > 0 {
		t.Fatalf("%d of %d sessions failed without a flood", fails, setups)
	}
	report(t, fmt.Sprintf("| no flood | %v | — | — | %s |", median(base).Round(time.Millisecond), e.mustStats(t)))
	for _, f := range floods() {
		t.Run(f.name, func(t *testing.T) {
			before := e.settledStats(t)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); f.run(ctx, l, one, many) }()
			peak := e.watchPeak(ctx)
			time.AfterFunc(floodFor, cancel)
			times, fails := legit.setupTimes(setups)
			<-ctx.Done()
			wg.Wait()
			during := <-peak
			after := e.settledStats(t)
			ratio := float64(median(times)) / float64(median(base))
			report(t, fmt.Sprintf("| %s | %v | %v (%d failed of %d) | %.1f× | %s → peak %s → %s |",
				f.name, median(base).Round(time.Millisecond), median(times).Round(time.Millisecond), fails, setups,
				ratio, before, during, after))
			if fails == setups {
				t.Errorf("no legitimate session got through during the flood")
			}
			if after.goroutines > before.goroutines+50 || after.fds > before.fds+50 {
				t.Errorf("the gateway did not come back down after the flood: %s → %s", before, after)
			}
		})
	}
}

// mustStats is gatewayStats for the test goroutine.
func (e *env) mustStats(t *testing.T) procStats {
	t.Helper()
	s, err := e.gatewayStats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// watchPeak samples the gateway's stats every 200 ms until ctx ends and then sends the
// highest of each.
func (e *env) watchPeak(ctx context.Context) <-chan procStats {
	out := make(chan procStats, 1)
	go func() {
		var peak procStats
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- peak
				return
			case <-tick.C:
			}
			if s, err := e.gatewayStats(); err == nil {
				peak.rss = max(peak.rss, s.rss)
				peak.fds = max(peak.fds, s.fds)
				peak.goroutines = max(peak.goroutines, s.goroutines)
			}
		}
	}()
	return out
}
