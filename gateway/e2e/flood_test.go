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
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp"
)

// A flood runs from the test process inside the client namespace until ctx ends, at a fixed
// rate of attempts (connections or datagrams): the attacker shares the machine's two cores
// with the gateway and the legitimate client, so an unpaced one would measure how fast the
// test process can spin. Each uses addresses of loadSources: one source, or many.
type flood struct {
	name string
	run  func(ctx context.Context, l *loadClient, pace <-chan time.Time, one netip.Addr, many []netip.Addr)
	rate int // attempts per second
}

// floods are the attacks of the campaign, each by hosts that do not authenticate.
func floods() []flood {
	return []flood{
		{"garbage on the TSP port (TCP, 512 at a time)", floodGarbage, 2000},
		{"TLS slowloris from one address (512 half-open handshakes)", func(ctx context.Context, l *loadClient, pace <-chan time.Time, one netip.Addr, _ []netip.Addr) {
			floodSlowloris(ctx, l, pace, []netip.Addr{one}, 512)
		}, 2000},
		{"TLS slowloris from 256 addresses (1024 half-open handshakes)", func(ctx context.Context, l *loadClient, pace <-chan time.Time, _ netip.Addr, many []netip.Addr) {
			floodSlowloris(ctx, l, pace, many, 1024)
		}, 2000},
		{"cookie-less DTLS ClientHellos from one address", floodDTLSHellos, 20000},
		{"TSP VERSIONs over UDP from 256 addresses, never continued", floodVersions, 20000},
		{"enrollment connections held open (TLS, ALPN http/1.1, 1024)", floodEnrollHolders, 2000},
	}
}

// pacer hands out rate attempts a second until ctx ends, then closes its channel: every
// millisecond it offers that millisecond's share (Go's timers do not tick faster), and a share
// nobody takes is lost, as a rate demands. sent counts the attempts taken.
func pacer(ctx context.Context, rate int, sent *atomic.Int64) <-chan time.Time {
	perTick := max(1, rate/1000)
	period := time.Duration(perTick) * time.Second / time.Duration(rate)
	out := make(chan time.Time, perTick)
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				close(out)
				return
			case now := <-tick.C:
			offer:
				for range perTick {
					select {
					case out <- now:
						sent.Add(1)
					default:
						break offer
					}
				}
			}
		}
	}()
	return out
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
func floodGarbage(ctx context.Context, l *loadClient, pace <-chan time.Time, one netip.Addr, many []netip.Addr) {
	var wg sync.WaitGroup
	const workers = 512
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			junk := make([]byte, 200)
			buf := make([]byte, 512)
			for i := w; ; i += workers {
				if _, ok := <-pace; !ok {
					return
				}
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
func floodSlowloris(ctx context.Context, l *loadClient, pace <-chan time.Time, srcs []netip.Addr, n int) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, ok := <-pace; !ok {
					return
				}
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
func floodDTLSHellos(ctx context.Context, l *loadClient, pace <-chan time.Time, one netip.Addr, _ []netip.Addr) {
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
	for range pace {
		_, _ = c.Write(hello)
	}
}

// floodVersions opens TSP-over-UDP exchanges (a VERSION each) from many addresses and ports
// and never continues them.
func floodVersions(ctx context.Context, l *loadClient, pace <-chan time.Time, _ netip.Addr, many []netip.Addr) {
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
				for seq := uint32(0xf0); seq < 0xf0+16; seq++ {
					if _, ok := <-pace; !ok {
						break
					}
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
func floodEnrollHolders(ctx context.Context, l *loadClient, pace <-chan time.Time, _ netip.Addr, many []netip.Addr) {
	var wg sync.WaitGroup
	for i := range 1024 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, ok := <-pace; !ok {
					return
				}
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
	e, l := newLoadEnvWith(t, gwOptions{connRate: 50}) // the default: floods come from one /64
	if err := l.addSources(257); err != nil {
		t.Fatal(err)
	}
	legit := &loadClient{e: e, st: l.st}
	if err := legit.addSourcesIn(legitSources, 1000); err != nil {
		t.Fatal(err)
	}
	one, many := l.srcs[0], l.srcs[1:257]
	base, fails := legit.setupTimes(setups)
	if fails > 0 {
		t.Fatalf("%d of %d sessions failed without a flood", fails, setups)
	}
	reportTable(t, "Floods", "flood, attempts/s reached", "TSP-SSL setup without", "during (failed)", "ratio (goal ≤ 2×)", "gateway before → peak → after")
	report(t, fmt.Sprintf("| none | %v | — | — | %s |", median(base).Round(time.Millisecond), e.mustStats(t)))
	for _, f := range floods() {
		t.Run(f.name, func(t *testing.T) {
			before := e.settledStats(t)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			var sent atomic.Int64
			began := time.Now()
			go func() { defer wg.Done(); f.run(ctx, l, pacer(ctx, f.rate, &sent), one, many) }()
			peak := e.watchPeak(ctx)
			time.AfterFunc(floodFor, cancel)
			times, fails := legit.setupTimes(setups)
			<-ctx.Done()
			reached := float64(sent.Load()) / time.Since(began).Seconds()
			wg.Wait()
			during := <-peak
			after := e.backDown(t, before)
			ratio := float64(median(times)) / float64(median(base))
			report(t, fmt.Sprintf("| %s, %.0f/s | %v | %v (%d of %d) | %.1f× | %s → %s → %s |",
				f.name, reached, median(base).Round(time.Millisecond), median(times).Round(time.Millisecond), fails, setups,
				ratio, before, during, after))
			if fails == setups {
				t.Errorf("no legitimate session got through during the flood")
			}
			if after.goroutines > before.goroutines+backDownSlack || after.fds > before.fds+backDownSlack {
				t.Errorf("the gateway did not come back down after the flood: %s → %s", before, after)
			}
		})
	}
}

// backDownSlack is how many goroutines and descriptors above the level before a flood count
// as back down.
const backDownSlack = 50

// backDown waits until the gateway's goroutines and descriptors are back near their level
// before (idle connection workers leave after 10 s), at most 30 s, and returns its stats.
func (e *env) backDown(t *testing.T, before procStats) procStats {
	t.Helper()
	var s procStats
	_ = poll(30*time.Second, 250*time.Millisecond, func() error {
		var err error
		if s, err = e.gatewayStats(); err != nil {
			return err
		}
		if s.goroutines > before.goroutines+backDownSlack || s.fds > before.fds+backDownSlack {
			return fmt.Errorf("not back down: %s", s)
		}
		return nil
	})
	return s
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
