package gateway

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
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/stream"
)

// ALPN protocol names on the TSP port (DESIGN §3).
const (
	alpnTSP  = "tsp/2"
	alpnHTTP = "http/1.1"
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

// serveTCP accepts connections until ctx ends; each is demultiplexed by its first byte.
func (g *Gateway) serveTCP(ctx context.Context, ln net.Listener) error {
	busyLog := g.log.Sample(&zerolog.BurstSampler{Burst: tcpBusyLogBurst, Period: tcpBusyLogPeriod})
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
			g.wg.Add(1)
			go g.tcpWorker(ctx, c, idle, &busyLog)
		}
	}
}

// tcpWorker handles c, then the connections handed to it while it waits on idle, until it
// has waited tcpWorkerIdle or ctx ends. A new goroutine's stack grows through the TLS and
// TSP code on every connection (copying it was 7% of the gateway's CPU for a plain TSP
// session); a reused goroutine's stack has grown already. busyLog logs refusals (refuseBusy).
func (g *Gateway) tcpWorker(ctx context.Context, c net.Conn, idle <-chan net.Conn, busyLog *zerolog.Logger) {
	defer g.wg.Done()
	t := time.NewTimer(tcpWorkerIdle)
	defer t.Stop()
	for {
		g.handleTCP(ctx, c, busyLog)
		t.Reset(tcpWorkerIdle)
		select {
		case c = <-idle:
		case <-t.C:
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
func (g *Gateway) handleTCP(ctx context.Context, c net.Conn, busyLog *zerolog.Logger) {
	// The connection's logger is made only to log (most connections log nothing here).
	log := func() *zerolog.Logger {
		l := g.log.With().Str("remote", addrPortOf(c.RemoteAddr()).String()).Logger()
		return &l
	}
	if !g.handshakes.TryAcquire() {
		g.refuseBusy(c, busyLog)
		return
	}
	slot := g.handshakes.Once()
	defer slot()
	start := g.now()
	_ = c.SetDeadline(start.Add(g.cfg.TSP.HandshakeTimeout.D()))
	br := g.peekReader(c)
	first, err := br.Peek(1)
	if err != nil {
		g.putPeekReader(br)
		logNoFirstByte(g.log, c, err)
		c.Close()
		return
	}
	pc := stream.ReaderConn(c, br) // the peeked byte stays in br
	if first[0] != tlsRecordHandshake {
		// Only serveStream reads a plain connection, and only until it returns: br can
		// be reused then. (A TLS connection may outlive handleTCP: enrollment.)
		defer g.putPeekReader(br)
		if !g.cfg.Listen.PlainTSP {
			g.refusePlain(c, log)
			return
		}
		g.serveStream(ctx, pc, tsp.TransportTCP, auth.Identity{}, slot)
		return
	}
	tc := tls.Server(pc, g.tlsConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		g.metrics.ObserveHandshake("tsp-tls", "refused", g.now().Sub(start))
		log().Info().Err(err).Str("reason", auth.Reason(err)).Msg("TLS handshake failed")
		c.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == alpnHTTP {
		slot()
		_ = c.SetDeadline(time.Time{})
		g.enroll.deliver(tc)
		return
	}
	var id auth.Identity
	if len(cs.PeerCertificates) > 0 {
		// VerifyConnection verified the whole chain during the handshake; read the identity.
		if id, err = auth.IdentityFromCertificate(cs.PeerCertificates[0]); err != nil {
			g.metrics.ObserveHandshake("tsp-tls", "refused", g.now().Sub(start))
			log().Info().Err(err).Str("reason", auth.Reason(err)).Msg("client certificate refused")
			tc.Close()
			return
		}
	}
	g.serveStream(ctx, tc, tsp.TransportTLS, id, slot)
}

// peekReader returns a pooled 4 KiB reader on c; putPeekReader gives it back.
func (g *Gateway) peekReader(c net.Conn) *bufio.Reader {
	br, _ := g.peekReaders.Get().(*bufio.Reader)
	if br == nil {
		return bufio.NewReaderSize(c, 4096)
	}
	br.Reset(c)
	return br
}

func (g *Gateway) putPeekReader(br *bufio.Reader) {
	br.Reset(nil)
	g.peekReaders.Put(br)
}

// refuseBusy answers a connection that found every handshake slot taken (tsp.max_handshakes).
// Its first byte decides how: a plain TSP client gets "530 Server too busy" (gogoc waits
// retry_delay and tries again), a TLS client is closed without a word (a status line would be
// garbage to it, and no TLS alert can be sent before a handshake). Peeking also reads what the
// client sent so far, so the close is normally a FIN, not a reset that some client stacks let
// overtake the status. log is rate-limited (tcpBusyLogBurst).
func (g *Gateway) refuseBusy(c net.Conn, log *zerolog.Logger) {
	defer c.Close()
	_ = c.SetDeadline(g.now().Add(min(busyPeekTimeout, g.cfg.TSP.HandshakeTimeout.D())))
	br := g.peekReader(c)
	defer g.putPeekReader(br)
	first, err := br.Peek(1)
	if err != nil {
		logNoFirstByte(g.log, c, err)
		return
	}
	e := log.Warn().Str("remote", addrPortOf(c.RemoteAddr()).String()).Str("reason", "too many concurrent handshakes")
	if first[0] == tlsRecordHandshake {
		g.metrics.ObserveHandshake("tsp-tls", "refused", 0)
		e.Msg("connection refused")
		return
	}
	g.metrics.ObserveHandshake("tsp-tcp", "refused", 0)
	g.metrics.TSPStatus(tsp.StatusServerTooBusy)
	e.Int("tsp_status", tsp.StatusServerTooBusy).Msg("connection refused")
	_, _ = c.Write(tsp.NewStatus(tsp.StatusServerTooBusy).Marshal())
}

// refusePlain answers a plain TSP client when listen.plain_tsp is off: "500 Invalid request"
// (the status gogoc stops on, where 530 would have it retry forever), then close.
func (g *Gateway) refusePlain(c net.Conn, log func() *zerolog.Logger) {
	g.metrics.ObserveHandshake("tsp-tcp", "refused", 0)
	g.metrics.TSPStatus(tsp.StatusInvalidRequest)
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

// newTLSConfig is the TLS side of the TSP port: TSP-SSL (ALPN tsp/2, client certificate
// required; no ALPN, certificate optional) and the enrollment API (ALPN http/1.1).
//
// Session tickets are off: no client of ours resumes (dstm-client and the enrollment client
// keep no session cache, and a resumed TSP-SSL connection would still need its certificate
// checked), so a ticket would only cost an encryption of the client's chain and one more
// record per handshake for clients that ask for one (docs/security.md).
func (g *Gateway) newTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS12,
		GetCertificate:         g.ca.GetCertificate,
		NextProtos:             []string{alpnTSP, alpnHTTP},
		ClientAuth:             tls.RequestClientCert,
		ClientCAs:              g.ca.RootPool(),
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			switch {
			case cs.NegotiatedProtocol == alpnHTTP:
				return nil // the enrollment API checks certificates per request
			case len(cs.PeerCertificates) == 0 && cs.NegotiatedProtocol == alpnTSP:
				return auth.ErrNoCertificate
			case len(cs.PeerCertificates) == 0:
				return nil // a TLS-wrapped legacy client: only SASL PLAIN can succeed
			}
			_, err := g.verifier.VerifyState(cs)
			return err
		},
	}
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
