package control

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/stream"
)

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// tcpWorkerIdle is how long a connection goroutine waits for another connection before it
// exits (see tcpWorker).
const tcpWorkerIdle = 10 * time.Second

// Refusals of connections because every handshake slot is taken are logged at most
// tcpBusyLogBurst times per tcpBusyLogPeriod and listener: they come in floods, when the
// gateway is overloaded. Every refusal is counted (dstm_handshakes_total).
const (
	tcpBusyLogBurst  = 10
	tcpBusyLogPeriod = time.Minute
)

// tcpFront is the TSP port's TCP side: it accepts connections, bounds the handshakes in
// progress and demultiplexes each connection by its first byte.
type tcpFront struct {
	srv         *Server
	handshakes  *semaphore
	peekReaders sync.Pool      // of *bufio.Reader (4 KiB), reused across plain connections
	wg          sync.WaitGroup // connection workers
}

// ServeTCP accepts connections on ln until ctx ends; each is demultiplexed by its first byte.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error { return s.tcp.serve(ctx, ln) }

// serve accepts connections until ctx ends; each is demultiplexed by its first byte.
func (t *tcpFront) serve(ctx context.Context, ln net.Listener) error {
	busyLog := t.srv.log.Sample(&zerolog.BurstSampler{Burst: tcpBusyLogBurst, Period: tcpBusyLogPeriod})
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	idle := make(chan net.Conn) // unbuffered: only a worker waiting for one takes it
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		select {
		case idle <- c:
		default:
			t.wg.Add(1)
			go t.tcpWorker(ctx, c, idle, &busyLog)
		}
	}
}

// tcpWorker handles c, then the connections handed to it while it waits on idle, until it
// has waited tcpWorkerIdle or ctx ends: a reused goroutine's stack has already grown through
// the TLS and TSP code, a new one's grows again on every connection. busyLog logs refusals
// (refuseBusy).
func (t *tcpFront) tcpWorker(ctx context.Context, c net.Conn, idle <-chan net.Conn, busyLog *zerolog.Logger) {
	defer t.wg.Done()
	timer := time.NewTimer(tcpWorkerIdle)
	defer timer.Stop()
	for {
		t.handleTCP(ctx, c, busyLog)
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

// busyPeekTimeout bounds the wait for the first byte of a connection that found every
// handshake slot taken (see refuseBusy). TCP_DEFER_ACCEPT hands connections over with their
// first bytes in, so the wait is almost always zero; the bound keeps silent connections from
// parking workers while the gateway is overloaded.
const busyPeekTimeout = time.Second

// handleTCP runs one TCP connection: TLS (TSP-SSL or enrollment) or plain TSP.
func (t *tcpFront) handleTCP(ctx context.Context, c net.Conn, busyLog *zerolog.Logger) {
	// The connection's logger is made only to log (most connections log nothing here).
	log := func() *zerolog.Logger {
		l := t.srv.log.With().Str("remote", addrPortOf(c.RemoteAddr()).String()).Logger()
		return &l
	}
	if !t.handshakes.TryAcquire() {
		t.refuseBusy(c, busyLog)
		return
	}
	slot := t.handshakes.Once()
	defer slot()
	start := t.srv.now()
	_ = c.SetDeadline(start.Add(t.srv.gw.TSP.HandshakeTimeout.D()))
	br := t.peekReader(c)
	first, err := br.Peek(1)
	if err != nil {
		t.putPeekReader(br)
		logNoFirstByte(t.srv.log, c, err)
		c.Close()
		return
	}
	pc := stream.ReaderConn(c, br) // the peeked byte stays in br
	if first[0] != tlsRecordHandshake {
		// Only serveStream reads a plain connection, and only until it returns: br can
		// be reused then. (A TLS connection may outlive handleTCP: enrollment.)
		defer t.putPeekReader(br)
		if !t.srv.gw.Listen.PlainTSP {
			t.refusePlain(c, log)
			return
		}
		t.srv.serveStream(ctx, pc, tsp.TransportTCP, auth.Identity{}, slot)
		return
	}
	tc := tls.Server(pc, t.srv.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		t.srv.cfg.Metrics.ObserveHandshake("tsp-tls", "refused", t.srv.now().Sub(start))
		log().Info().Err(err).Str("reason", auth.Reason(err)).Msg("TLS handshake failed")
		c.Close()
		return
	}
	cs := tc.ConnectionState()
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
			log().Info().Err(err).Str("reason", auth.Reason(err)).Msg("client certificate refused")
			tc.Close()
			return
		}
	}
	t.srv.serveStream(ctx, tc, tsp.TransportTLS, id, slot)
}

// peekReader returns a pooled 4 KiB reader on c; putPeekReader gives it back.
func (t *tcpFront) peekReader(c net.Conn) *bufio.Reader {
	br, _ := t.peekReaders.Get().(*bufio.Reader)
	if br == nil {
		return bufio.NewReaderSize(c, 4096)
	}
	br.Reset(c)
	return br
}

func (t *tcpFront) putPeekReader(br *bufio.Reader) {
	br.Reset(nil)
	t.peekReaders.Put(br)
}

// refuseBusy answers a connection that found every handshake slot taken (tsp.max_handshakes).
// Its first byte decides how: a plain TSP client gets "530 Server too busy" (gogoc waits
// retry_delay and tries again), a TLS client is closed without a word (a status line would be
// garbage to it, and no TLS alert can be sent before a handshake). Peeking also reads what the
// client sent so far, so the close is normally a FIN, not a reset that some client stacks let
// overtake the status. log is rate-limited (tcpBusyLogBurst).
func (t *tcpFront) refuseBusy(c net.Conn, log *zerolog.Logger) {
	defer c.Close()
	_ = c.SetDeadline(t.srv.now().Add(min(busyPeekTimeout, t.srv.gw.TSP.HandshakeTimeout.D())))
	br := t.peekReader(c)
	defer t.putPeekReader(br)
	first, err := br.Peek(1)
	if err != nil {
		logNoFirstByte(t.srv.log, c, err)
		return
	}
	e := log.Warn().Str("remote", addrPortOf(c.RemoteAddr()).String()).Str("reason", "too many concurrent handshakes")
	if first[0] == tlsRecordHandshake {
		t.srv.cfg.Metrics.ObserveHandshake("tsp-tls", "refused", 0)
		e.Msg("connection refused")
		return
	}
	t.srv.cfg.Metrics.ObserveHandshake("tsp-tcp", "refused", 0)
	t.srv.cfg.Metrics.TSPStatus(tsp.StatusServerTooBusy)
	e.Int("tsp_status", tsp.StatusServerTooBusy).Msg("connection refused")
	_, _ = c.Write(tsp.NewStatus(tsp.StatusServerTooBusy).Marshal())
}

// refusePlain answers a plain TSP client when listen.plain_tsp is off: "500 Invalid request"
// (the cause is the request, not the load that 530 would claim; gogoc retries on either, with
// backoff after 500, and exits only in boot mode, -b), then close.
func (t *tcpFront) refusePlain(c net.Conn, log func() *zerolog.Logger) {
	t.srv.cfg.Metrics.ObserveHandshake("tsp-tcp", "refused", 0)
	t.srv.cfg.Metrics.TSPStatus(tsp.StatusInvalidRequest)
	log().Info().Str("reason", "plain TSP is disabled (listen.plain_tsp)").Int("tsp_status", tsp.StatusInvalidRequest).Msg("connection refused")
	_, _ = c.Write(tsp.NewStatus(tsp.StatusInvalidRequest).Marshal())
	c.Close()
}

// logNoFirstByte logs, at debug level only, a connection that ended or stayed silent before
// its first byte. Those are port scanners and half-open probes; TCP_DEFER_ACCEPT keeps most of
// them from the gateway, and the rest are not worth an info line each.
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
