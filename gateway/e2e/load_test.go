package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/dtls"
	"github.com/dstmgw/dstm/tunnel/stream"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
)

// Load generators: many sessions from the test process, dialled inside the client namespace.
// Each kind leaves its sessions idle, as real clients between packets, until closed.

// sessionKind is one way of holding a session open.
type sessionKind string

const (
	kindPlainTCP sessionKind = "plain v4v6, TSP over TCP" // gogoc: ANONYMOUS, v4v6, idle TCP control
	kindPlainUDP sessionKind = "plain v4v6, TSP over UDP" // gogoc: ANONYMOUS, v4v6, no control after accept
	kindDTLS     sessionKind = "DTLS (TSP-SSL control)"   // dstm-client default: TSP-SSL + DTLS link
	kindTLS      sessionKind = "TLS stream"               // dstm-client fallback: v4tlsv6 on the TSP-SSL connection
	// kindDTLSParked is kindDTLS whose client closes the TSP-SSL connection once the DTLS link
	// carries the session (the gateway keeps such a session detached, as after a lost control
	// connection, until the link ends or the client resumes it).
	kindDTLSParked sessionKind = "DTLS, control connection closed"
)

// loadClient opens sessions of every kind against one gateway.
type loadClient struct {
	e      *env
	st     *enroll.State // for TSP-SSL kinds (e.enroll first)
	mu     sync.Mutex
	next   int          // next source address index
	closer []func()     // closes every open session
	srcs   []netip.Addr // spare source addresses added to the client link
}

func newLoadClient(e *env) *loadClient {
	return &loadClient{e: e}
}

// addSources adds n addresses of loadSources to the client's link: a v4v6 tunnel is keyed by
// its client endpoint, so each plain session needs its own, and every session gets one so that
// per-address bounds stay out of the way.
func (l *loadClient) addSources(n int) error { return l.addSourcesIn(loadSources, n) }

// addSourcesIn is addSources with addresses of prefix.
func (l *loadClient) addSourcesIn(prefix netip.Prefix, n int) error {
	base := prefix.Addr().As16()
	for i := len(l.srcs); i < n; i++ {
		a := base
		a[12], a[13], a[14], a[15] = 0x10, byte(i>>16), byte(i>>8), byte(i)
		addr := netip.AddrFrom16(a)
		if err := l.e.tp.Client.AddAddr(l.e.tp.ClientLink, netip.PrefixFrom(addr, 128)); err != nil {
			return err
		}
		l.srcs = append(l.srcs, addr)
	}
	return nil
}

func (l *loadClient) source() (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next >= len(l.srcs) {
		return netip.Addr{}, errors.New("no spare source address left (addSources)")
	}
	l.next++
	return l.srcs[l.next-1], nil
}

func (l *loadClient) keep(close func()) {
	l.mu.Lock()
	l.closer = append(l.closer, close)
	l.mu.Unlock()
}

// closeAll closes every session opened so far.
func (l *loadClient) closeAll() {
	l.mu.Lock()
	cs := l.closer
	l.closer = nil
	l.mu.Unlock()
	for _, c := range cs {
		c()
	}
}

// open opens one session of kind from a fresh source and keeps it open until closeAll.
func (l *loadClient) open(ctx context.Context, kind sessionKind) error {
	src, err := l.source()
	if err != nil {
		return err
	}
	return l.openFrom(ctx, kind, src)
}

// openFrom opens one session of kind from src and keeps it open until closeAll.
func (l *loadClient) openFrom(ctx context.Context, kind sessionKind, src netip.Addr) error {
	switch kind {
	case kindPlainTCP:
		return l.plainTCP(ctx, src)
	case kindPlainUDP:
		return l.plainUDP(ctx, src)
	case kindDTLS, kindDTLSParked, kindTLS:
		return l.tspSSL(ctx, kind, src)
	}
	return fmt.Errorf("unknown session kind %q", kind)
}

// dialFrom dials the gateway's TSP port from src inside the client namespace.
func (l *loadClient) dialFrom(ctx context.Context, network string, src netip.Addr) (net.Conn, error) {
	var c net.Conn
	err := l.e.tp.Client.Do(func() error {
		d := net.Dialer{}
		switch network {
		case "tcp":
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		case "udp":
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		var err error
		c, err = d.DialContext(ctx, network, l.e.gwAddr)
		return err
	})
	return c, err
}

func anonymousV4V6(tr tsp.Transport, src netip.Addr) (*tsp.Client, error) {
	return tsp.NewClient(tsp.ClientConfig{
		Transport: tr, Mechanism: sasl.Anonymous,
		Request: &tsp.Tunnel{Type: tsp.TypeV4V6, Client: &tsp.ClientInfo{IPv6: src}},
	})
}

// plainTCP runs gogoc's v4v6 exchange over TCP from a fresh source and leaves the control
// connection idle.
func (l *loadClient) plainTCP(ctx context.Context, src netip.Addr) error {
	c, err := l.dialFrom(ctx, "tcp", src)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	m, err := anonymousV4V6(tsp.TransportTCP, src)
	if err == nil {
		err = runStream(c, m)
	}
	if err != nil {
		c.Close()
		return fmt.Errorf("plain TSP over TCP from %s: %w", src, err)
	}
	_ = c.SetDeadline(time.Time{})
	l.keep(func() { c.Close() })
	return nil
}

// plainUDP runs gogoc's v4v6 exchange over UDP ("reliable UDP") from a fresh source. gogoc
// does not speak again after its accept; the session lives with its lease.
func (l *loadClient) plainUDP(ctx context.Context, src netip.Addr) error {
	c, err := l.dialFrom(ctx, "udp", src)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = gogocUDP(ctx, c, src)
	return err
}

// gogocUDP runs gogoc's v4v6 exchange over UDP from src on c and returns the offer accepted.
func gogocUDP(ctx context.Context, c net.Conn, src netip.Addr) (*tsp.Tunnel, error) {
	m, err := anonymousV4V6(tsp.TransportUDP, src)
	if err != nil {
		return nil, err
	}
	replies, err := m.Start()
	seq := uint32(0xf0)
	buf := make([]byte, 2048)
	var offer *tsp.Tunnel
	for err == nil && m.State() != tsp.ClientEstablished {
		if len(replies) == 0 || len(replies[0].Payload) == 0 {
			break // the accept needs no answer
		}
		seq++
		d := tsp.AppendDatagram(nil, tsp.Header{Seq: seq, Timestamp: uint32(time.Now().Unix())}, replies[0].Payload)
		var msg []byte
		msg, err = udpRoundTrip(ctx, c, d, buf)
		if err == nil {
			replies, err = m.Step(msg)
		}
		if o := m.Offer(); o != nil {
			offer = o
		}
	}
	if err == nil && len(replies) > 0 && len(replies[0].Payload) > 0 {
		seq++
		_, err = c.Write(tsp.AppendDatagram(nil, tsp.Header{Seq: seq, Timestamp: uint32(time.Now().Unix())}, replies[0].Payload))
	}
	if err == nil && offer == nil {
		err = errors.New("no offer")
	}
	if err != nil {
		return nil, fmt.Errorf("plain TSP over UDP from %s: %w", src, err)
	}
	return offer, nil
}

// udpRoundTrip sends d and returns the payload of the answer, retransmitting every second.
// Answers to earlier sequence numbers (a retransmission's second answer) are skipped.
func udpRoundTrip(ctx context.Context, c net.Conn, d, buf []byte) ([]byte, error) {
	want, _, err := tsp.ParseDatagram(d)
	if err != nil {
		return nil, err
	}
	for try := 0; try < 5; try++ {
		if _, err := c.Write(d); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			h, payload, perr := tsp.ParseDatagram(buf[:n])
			if perr != nil || h.Seq == want.Seq {
				return payload, perr
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, errors.New("no answer after 5 tries")
}

// runStream runs a TSP client machine on a stream connection until it is established (or
// offered, with DeferAccept).
func runStream(c net.Conn, m *tsp.Client) error {
	_, err := runStreamSplitter(c, m)
	return err
}

func runStreamSplitter(c net.Conn, m *tsp.Client) (*tsp.Splitter, error) {
	sp := tsp.NewSplitter(0)
	replies, err := m.Start()
	buf := make([]byte, 4096)
	for err == nil {
		for _, r := range replies {
			if len(r.Payload) > 0 {
				if _, err := c.Write(r.Payload); err != nil {
					return sp, err
				}
			}
		}
		if s := m.State(); s == tsp.ClientEstablished || s == tsp.ClientOffered {
			return sp, nil
		}
		var msg []byte
		for {
			var ok bool
			msg, ok, err = sp.Next()
			if err != nil || ok {
				break
			}
			n, rerr := c.Read(buf)
			_, _ = sp.Write(buf[:n])
			if rerr != nil && n == 0 {
				return sp, rerr
			}
		}
		if err == nil {
			replies, err = m.Step(msg)
		}
	}
	return sp, err
}

// tspSSL opens TSP-SSL with the enrolled certificate and brings up a DTLS link or the TLS
// stream, then leaves it idle.
func (l *loadClient) tspSSL(ctx context.Context, kind sessionKind, src netip.Addr) error {
	if l.st == nil {
		return errors.New("no enrolled state (loadClient.st)")
	}
	raw, err := l.dialFrom(ctx, "tcp", src)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	// As dstm-client does: the records are taken over after the handshake (tunnel/tlsrec).
	tc, _, err := tlsrec.Client(ctx, raw, l.st.ClientTLSConfig("gw.e2e.test", tlsrec.ALPN, "tsp/2"))
	if err != nil {
		return err
	}
	local := raw.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	m, err := tsp.NewClient(tsp.ClientConfig{
		Transport: tsp.TransportTLS, Mechanism: sasl.External, DeferAccept: true,
		Request: &tsp.Tunnel{Type: tsp.TypeV4AnyV6, Client: &tsp.ClientInfo{IPv6: local}},
	})
	if err != nil {
		tc.Close()
		return err
	}
	sp, err := runStreamSplitter(tc, m)
	if err != nil {
		tc.Close()
		return fmt.Errorf("TSP-SSL: %w", err)
	}
	offer := m.Offer()
	var link tunnel.Link
	accept := tsp.TypeV4TLSV6
	if kind == kindDTLS || kind == kindDTLSParked {
		if link, err = l.dialDTLS(ctx, offer, src); err != nil {
			tc.Close()
			return err
		}
		accept = tsp.TypeV4DTLSV6
	}
	replies, err := m.Accept(accept)
	for _, r := range replies {
		if err == nil && len(r.Payload) > 0 {
			_, err = tc.Write(r.Payload)
		}
	}
	if err != nil {
		tc.Close()
		if link != nil {
			link.Close()
		}
		return err
	}
	_ = tc.SetDeadline(time.Time{})
	if kind == kindDTLSParked {
		tc.Close()
	}
	if kind == kindTLS {
		sl := stream.New(stream.PrefixConn(tc, bytes.Clone(sp.Rest())), discard{}, stream.Options{MTU: int(offer.MTU)})
		go func() { _ = sl.Run(context.Background()) }()
		link = sl
	}
	l.keep(func() {
		link.Close()
		tc.Close()
	})
	return nil
}

func (l *loadClient) dialDTLS(ctx context.Context, offer *tsp.Tunnel, src netip.Addr) (tunnel.Link, error) {
	var pc net.PacketConn
	err := l.e.tp.Client.Do(func() error {
		var err error
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: src.AsSlice()})
		return err
	})
	if err != nil {
		return nil, err
	}
	return dtls.Dial(ctx, pc, netip.AddrPortFrom(offer.Server.IPv6, offer.Data.Port), dtls.ClientConfig{
		Certificates: []tls.Certificate{l.st.Certificate}, RootCAs: l.st.Roots, ServerName: "gw.e2e.test",
		Token: offer.Data.Token[:],
	}, discard{})
}

// discard is a receiver that drops what it gets.
type discard struct{}

func (discard) ReceivePackets([][]byte) {}

// procStats is what the gateway process holds: resident memory, open descriptors and (from
// its metrics) goroutines.
type procStats struct {
	rss        int64 // bytes
	heap       int64 // bytes of live heap objects (go_memstats_heap_alloc_bytes)
	stacks     int64 // bytes of goroutine stacks (go_memstats_stack_inuse_bytes)
	fds        int
	goroutines int
	memstats   map[string]float64 // every go_memstats_*_bytes gauge, for the verbose breakdown
}

func (p procStats) String() string {
	return fmt.Sprintf("RSS %.1f MB, %d fds, %d goroutines", float64(p.rss)/1e6, p.fds, p.goroutines)
}

// gatewayStats reads the running gateway's procStats.
func (e *env) gatewayStats() (procStats, error) {
	pid := e.gw.cmd.Process.Pid
	var s procStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			s.rss = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(ents)
	text, err := e.scrape()
	if err != nil {
		return s, err
	}
	g, _ := metric(text, "go_goroutines")
	s.goroutines = int(g)
	h, _ := metric(text, "go_memstats_heap_alloc_bytes")
	st, _ := metric(text, "go_memstats_stack_inuse_bytes")
	s.heap, s.stacks = int64(h), int64(st)
	s.memstats = map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "go_memstats_") || !strings.HasSuffix(name, "_bytes") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			s.memstats[strings.TrimSuffix(strings.TrimPrefix(name, "go_memstats_"), "_bytes")] = v
		}
	}
	return s, nil
}
