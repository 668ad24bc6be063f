package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/internal/limit"
	"github.com/dstmgw/dstm/internal/park"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/stream"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
)

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// tcpWorkerIdle is how long a tcpWorker waits for another connection before it exits.
const tcpWorkerIdle = 10 * time.Second

// tcpFront is the TSP port's TCP side: it accepts and bounds connections and handshakes
// and demultiplexes each connection by its first byte.
type tcpFront struct {
	srv        *Server
	handshakes *limit.Semaphore
	perSource  *limit.PerSource  // handshakes in progress per source address and /64
	rate       *limit.SourceRate // new connections per source /64 (or IPv4 address) and second
	maxConns   int64             // open TCP connections of every kind (Config.MaxConns)
	conns      atomic.Int64
	wg         sync.WaitGroup // connection workers
	refusals   *sampledLog    // refusals at admission: rate-limited, counted
}

func newTCPFront(s *Server) *tcpFront {
	n := s.gw.TSP.MaxHandshakes
	return &tcpFront{
		srv:        s,
		handshakes: limit.NewSemaphore(n),
		perSource:  limit.NewPerSource(max(2, n/16), max(4, n/4)),
		rate:       connRate(s.gw.TSP.ConnectionRate, s.now),
		maxConns:   int64(s.cfg.MaxConns),
		refusals:   newSampledLog(s.log, s.now),
	}
}

// connRate limits new connections per source (/64 or IPv4 address) to tsp.connection_rate,
// in bursts of four times that: enough for a LAN reconnecting at once after a restart, while
// one source cannot make the gateway spend its CPU on TLS handshakes. Nil for rate 0.
func connRate(perSecond int, now func() time.Time) *limit.SourceRate {
	if perSecond == 0 {
		return nil
	}
	return limit.NewSourceRate(float64(perSecond), 4*perSecond, connRateBuckets, now)
}

const connRateBuckets = 4096 // shared by the sources (limit.SourceRate)

// ServeTCP accepts connections on ln until ctx ends; each is demultiplexed by its first byte.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error { return s.tcp.serve(ctx, ln) }

// Accept errors (out of file descriptors, say) are retried after a pause that doubles from
// acceptBackoffMin to acceptBackoffMax, as net/http does: the connections already open go on.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func (t *tcpFront) serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	idle := make(chan net.Conn) // unbuffered: only a worker waiting for one takes it
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			t.srv.countDrop("tcp_accept_error")
			t.refusals.warn("accept", func(e *zerolog.Event) {
				e.Err(err).Str("listen", ln.Addr().String()).Dur("retry_in", backoff).Msg("accept failed; retrying")
			})
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		if src := addrPortOf(c.RemoteAddr()).Addr(); t.rate != nil && !t.rate.Allow(src) {
			// Refused here, before any goroutine or read: the cheapest a flood can be.
			t.srv.countDrop("tcp_connection_rate")
			t.refusals.warn("rate", func(e *zerolog.Event) {
				e.Str("remote", src.String()).Str("reason", "too many new connections from this source").Msg("connection refused")
			})
			c.Close()
			continue
		}
		if t.maxConns > 0 && t.conns.Load() >= t.maxConns {
			t.srv.countDrop("tcp_connection_limit")
			t.refusals.warn("conns", func(e *zerolog.Event) {
				e.Str("remote", addrPortOf(c.RemoteAddr()).String()).Int64("max_connections", t.maxConns).
					Str("reason", "too many open connections").Msg("connection refused")
			})
			c.Close()
			continue
		}
		t.conns.Add(1)
		c = t.parkable(c, &countedConn{Conn: c, count: &t.conns})
		select {
		case idle <- c:
		default:
			t.wg.Add(1)
			go t.tcpWorker(ctx, c, idle)
		}
	}
}

// parkable returns c, whose socket is raw, with a reader that can park when the server has a
// poller (Config.Park): c otherwise.
func (t *tcpFront) parkable(raw, c net.Conn) net.Conn {
	sc, ok := raw.(syscall.Conn)
	if t.srv.cfg.Park == nil || !ok {
		return c
	}
	pc, err := park.NewConn(c, sc, t.srv.cfg.Park)
	if err != nil {
		return c
	}
	return pc
}

// countedConn is an accepted connection counted in tcpFront.conns until it is closed.
type countedConn struct {
	net.Conn
	count *atomic.Int64
	once  sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.count.Add(-1) })
	return err
}

// tcpWorker handles c, then those handed to it on idle, until tcpWorkerIdle passes or ctx
// ends: a reused goroutine's stack has already grown through the TLS and TSP code.
func (t *tcpFront) tcpWorker(ctx context.Context, c net.Conn, idle <-chan net.Conn) {
	defer t.wg.Done()
	timer := time.NewTimer(tcpWorkerIdle)
	defer timer.Stop()
	for {
		t.handleTCP(ctx, c)
		timer.Reset(tcpWorkerIdle)
		select {
		case c = <-idle:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// busyPeekTimeout bounds refuseBusy's wait for the first byte, which TCP_DEFER_ACCEPT has
// almost always delivered, so that silent connections do not park workers under overload.
const busyPeekTimeout = time.Second

// handleTCP runs one TCP connection: TLS (TSP-SSL or enrollment) or plain TSP.
func (t *tcpFront) handleTCP(ctx context.Context, c net.Conn) {
	slot, reason := t.admit(c)
	if slot == nil {
		t.refuseBusy(c, reason)
		return
	}
	defer slot()
	start := t.srv.now()
	_ = c.SetDeadline(start.Add(t.srv.gw.TSP.HandshakeTimeout.D()))
	// The first read (TCP_DEFER_ACCEPT hands the connection over with its first bytes in)
	// decides: TLS or plain TSP. Its buffer becomes a plain session's read buffer.
	buf := t.srv.getReadBuf()
	n, err := c.Read(buf)
	if n == 0 {
		t.srv.putReadBuf(buf)
		logNoFirstByte(t.srv.log, c, err)
		c.Close()
		return
	}
	if buf[0] != tlsRecordHandshake {
		if !t.srv.gw.Listen.PlainTSP {
			t.srv.putReadBuf(buf)
			t.refusePlain(c)
			return
		}
		t.srv.serveStream(ctx, c, buf, n, tsp.TransportTCP, auth.Identity{}, slot)
		return
	}
	// TLS reads its own records: it gets the bytes read so far, then the connection.
	pc := stream.PrefixConn(c, bytes.Clone(buf[:n]))
	t.srv.putReadBuf(buf)
	// crypto/tls reads record by record until it is known whether the records are taken
	// over (tlsrec): it must not buffer what follows the client's marker.
	bc := tlsrec.NewBoundaryConn(pc)
	tc := tls.Server(bc, t.srv.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		t.srv.cfg.Metrics.ObserveHandshake("tsp-tls", "refused", t.srv.now().Sub(start))
		t.refusals.info("tls", func(e *zerolog.Event) {
			e.Str("remote", addrPortOf(c.RemoteAddr()).String()).Err(err).Str("reason", auth.Reason(err)).Msg("TLS handshake failed")
		})
		t.srv.handshakeFailed(addrPortOf(c.RemoteAddr()), "", "", "TLS handshake failed: "+auth.Reason(err))
		c.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != tlsrec.ALPN {
		bc.PassThrough()
	}
	if cs.NegotiatedProtocol == alpnHTTP {
		slot()
		_ = c.SetDeadline(time.Time{})
		t.srv.cfg.Enroll(tc)
		return
	}
	var id auth.Identity
	if len(cs.PeerCertificates) > 0 {
		// VerifyConnection verified the whole chain during the handshake; read the identity.
		if id, err = auth.IdentityFromCertificate(cs.PeerCertificates[0]); err != nil {
			t.srv.cfg.Metrics.ObserveHandshake("tsp-tls", "refused", t.srv.now().Sub(start))
			t.srv.log.Info().Str("remote", addrPortOf(c.RemoteAddr()).String()).Err(err).Str("reason", auth.Reason(err)).Msg("client certificate refused")
			t.srv.handshakeFailed(addrPortOf(c.RemoteAddr()), "", "", "client certificate refused: "+auth.Reason(err))
			tc.Close()
			return
		}
	}
	var conn net.Conn = tc
	if cs.NegotiatedProtocol == tlsrec.ALPN {
		// From the client's marker on, the stream records carry the session, and crypto/tls's
		// connection (its buffers, the peer's parsed certificate) is dropped.
		rc, err := tlsrec.Switch(tc, bc, pc, true)
		if err != nil {
			t.srv.cfg.Metrics.ObserveHandshake("tsp-tls", "refused", t.srv.now().Sub(start))
			t.refusals.info("tls", func(e *zerolog.Event) {
				e.Str("remote", addrPortOf(c.RemoteAddr()).String()).Err(err).Str("reason", "record takeover failed").Msg("TLS handshake failed")
			})
			t.srv.handshakeFailed(addrPortOf(c.RemoteAddr()), "", "", "TLS record takeover failed: "+err.Error())
			c.Close()
			return
		}
		conn = rc
	}
	t.srv.serveStream(ctx, conn, nil, 0, tsp.TransportTLS, id, slot)
}

// admit takes one of the port's handshake slots and one of its source's share, and returns
// their release function (safe to call again), or nil and why.
func (t *tcpFront) admit(c net.Conn) (release func(), reason string) {
	src := addrPortOf(c.RemoteAddr()).Addr()
	if !t.perSource.Acquire(src) {
		return nil, "too many concurrent handshakes from this source"
	}
	rel, ok := t.handshakes.TryAcquire()
	if !ok {
		t.perSource.Release(src)
		return nil, "too many concurrent handshakes"
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			rel()
			t.perSource.Release(src)
		})
	}, ""
}

// refuseBusy answers a connection that found no handshake slot. A plain TSP client gets "530
// Server too busy" (gogoc waits retry_delay and tries again); a TLS client is closed without
// a word, as no TLS alert can be sent before a handshake.
func (t *tcpFront) refuseBusy(c net.Conn, reason string) {
	defer c.Close()
	_ = c.SetDeadline(t.srv.now().Add(min(busyPeekTimeout, t.srv.gw.TSP.HandshakeTimeout.D())))
	var first [512]byte // what the client sent so far: reading it avoids a reset on close
	n, err := c.Read(first[:])
	if n == 0 {
		logNoFirstByte(t.srv.log, c, err)
		return
	}
	remote := addrPortOf(c.RemoteAddr()).String()
	if first[0] == tlsRecordHandshake {
		t.srv.cfg.Metrics.ObserveHandshake("tsp-tls", "refused", 0)
		t.refusals.warn("busy", func(e *zerolog.Event) {
			e.Str("remote", remote).Str("reason", reason).Msg("connection refused")
		})
		return
	}
	t.srv.cfg.Metrics.ObserveHandshake("tsp-tcp", "refused", 0)
	t.srv.cfg.Metrics.TSPStatus(tsp.StatusServerTooBusy)
	t.refusals.warn("busy", func(e *zerolog.Event) {
		e.Str("remote", remote).Str("reason", reason).Int("tsp_status", tsp.StatusServerTooBusy).Msg("connection refused")
	})
	_, _ = c.Write(tsp.NewStatus(tsp.StatusServerTooBusy).Marshal())
}

// refusePlain answers "500 Invalid request" when listen.plain_tsp is off: the cause is the
// request, not the load that 530 would claim (gogoc retries on either).
func (t *tcpFront) refusePlain(c net.Conn) {
	t.srv.cfg.Metrics.ObserveHandshake("tsp-tcp", "refused", 0)
	t.srv.cfg.Metrics.TSPStatus(tsp.StatusInvalidRequest)
	t.refusals.info("plain", func(e *zerolog.Event) {
		e.Str("remote", addrPortOf(c.RemoteAddr()).String()).Str("reason", "plain TSP is disabled (listen.plain_tsp)").
			Int("tsp_status", tsp.StatusInvalidRequest).Msg("connection refused")
	})
	_, _ = c.Write(tsp.NewStatus(tsp.StatusInvalidRequest).Marshal())
	c.Close()
}

// logNoFirstByte logs at debug level a connection that ended or stayed silent before its
// first byte: port scanners and half-open probes are not worth an info line each.
func logNoFirstByte(log zerolog.Logger, c net.Conn, err error) {
	e := log.Debug()
	if !e.Enabled() {
		return
	}
	reason := "read failed"
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason = "no data before the deadline"
	case errors.Is(err, io.EOF):
		reason = "closed without sending"
	}
	e.Str("remote", addrPortOf(c.RemoteAddr()).String()).Err(err).Str("reason", reason).Msg("connection closed before its first byte")
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		return netip.AddrPortFrom(addrOf(v.IP), uint16(v.Port))
	case *net.UDPAddr:
		return netip.AddrPortFrom(addrOf(v.IP), uint16(v.Port))
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
