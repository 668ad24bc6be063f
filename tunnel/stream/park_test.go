//go:build linux

package stream

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/dstmgw/dstm/internal/park"
)

// parkedPair returns a link over the server side of a TCP connection whose reader parks on a
// real poller (as the gateway's), the peer link over the client side, and what the peer
// receives. The parked link's end is reported on the returned channel.
func parkedPair(t *testing.T, opts Options) (l *Link, done <-chan error, peer *Link, recv *chanReceiver) {
	t.Helper()
	p, err := park.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, client := dialParkable(t, ln, p)
	recv = newChanReceiver()
	l = New(PrefixConn(pc, nil), recv, opts)
	l.parkIdle = 20 * time.Millisecond
	errc := make(chan error, 1)
	l.Start(context.Background(), func(err error) { errc <- err })
	peer = New(client, newChanReceiver(), Options{MTU: 1400})
	ctx, cancel := context.WithCancel(context.Background())
	go peer.Run(ctx)
	t.Cleanup(func() {
		cancel()
		l.Close()
	})
	return l, errc, peer, recv
}

// dialParkable connects to ln and returns the accepted side, parkable on p, and the client's.
func dialParkable(t *testing.T, ln net.Listener, p *park.Poller) (*park.Conn, net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := park.NewConn(raw, raw.(*net.TCPConn), p)
	if err != nil {
		t.Fatal(err)
	}
	return pc, client
}

// waitParks waits until l's reader has parked more than n times.
func waitParks(t *testing.T, l *Link, n uint64) {
	t.Helper()
	deadline := time.After(testTimeout)
	for l.parks.Load() <= n {
		select {
		case <-deadline:
			t.Fatalf("the reader did not park (parked %d times)", l.parks.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestParkedLinkCarriesPackets: an idle link's reader parks, holding no read buffer; packets
// that come then are delivered, in order, and the reader parks again. Writes need no reader.
func TestParkedLinkCarriesPackets(t *testing.T) {
	l, _, peer, recv := parkedPair(t, Options{MTU: 1400, IdleTimeout: time.Minute})
	for round := range 3 {
		waitParks(t, l, uint64(round))
		if got := l.readBuf.Load(); got != 0 {
			t.Fatalf("round %d: a parked reader holds %d bytes of read buffer", round, got)
		}
		var burst [][]byte
		for i := range 3 { // they fit the idle read buffer: no growth, no shrink to wait for
			burst = append(burst, ipv4Packet(100+i, byte(round)))
		}
		if err := peer.WritePackets(burst); err != nil {
			t.Fatal(err)
		}
		for i := range burst {
			if p := recv.next(t); len(p) != 100+i || p[1] != byte(round) {
				t.Fatalf("round %d: packet %d is %d bytes of %d", round, i, len(p), p[1])
			}
		}
		if err := l.WritePackets([][]byte{ipv4Packet(60, byte(round))}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestParkedLinkEnds: a parked link ends as a reading one does, by the peer's close, Close,
// its context or the idle timeout, and reports it once.
func TestParkedLinkEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration
		end  func(l, peer *Link)
		want func(error) bool
	}{
		{"peer closes", time.Minute, func(_, peer *Link) { peer.Close() }, func(err error) bool { return err == nil }},
		{"Close", time.Minute, func(l, _ *Link) { l.Close() }, func(err error) bool { return err == nil }},
		{"idle timeout", 150 * time.Millisecond, func(*Link, *Link) {},
			func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, done, peer, _ := parkedPair(t, Options{MTU: 1400, IdleTimeout: tc.idle})
			waitParks(t, l, 0)
			start := time.Now()
			tc.end(l, peer)
			select {
			case err := <-done:
				if !tc.want(err) {
					t.Fatalf("link ended with %v", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("the parked link did not end")
			}
			if tc.idle < time.Minute && time.Since(start) < tc.idle/2 {
				t.Fatalf("idle timeout after %v, want about %v", time.Since(start), tc.idle)
			}
			select {
			case <-l.Done():
			default:
				t.Fatal("Done not closed")
			}
		})
	}
}

// TestParkedLinksHoldNoGoroutine: a thousand idle links hold no reader goroutine.
func TestParkedLinksHoldNoGoroutine(t *testing.T) {
	p, err := park.New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 200
	before := runtime.NumGoroutine()
	var links []*Link
	var clients []net.Conn
	for range n {
		pc, c := dialParkable(t, ln, p)
		clients = append(clients, c)
		l := New(pc, discardReceiver{}, Options{MTU: 1400})
		l.parkIdle = 10 * time.Millisecond
		l.Start(context.Background(), func(error) {})
		links = append(links, l)
	}
	defer func() {
		for i, l := range links {
			l.Close()
			clients[i].Close()
		}
	}()
	deadline := time.After(testTimeout)
	for p.Parked() < n {
		select {
		case <-deadline:
			t.Fatalf("%d of %d links parked", p.Parked(), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if g := runtime.NumGoroutine(); g > before+n/10 {
		t.Fatalf("%d goroutines for %d parked links (%d before)", g-before, n, before)
	}
}

type discardReceiver struct{}

func (discardReceiver) ReceivePackets([][]byte) {}
