package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/tunnel/stream"
	"github.com/dstmgw/dstm/tsp"
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

// serveTCP accepts connections until ctx ends; each is demultiplexed by its first byte.
func (g *Gateway) serveTCP(ctx context.Context, ln net.Listener) error {
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
			go g.tcpWorker(ctx, c, idle)
		}
	}
}

// tcpWorker handles c, then the connections handed to it while it waits on idle, until it
// has waited tcpWorkerIdle or ctx ends. A new goroutine's stack grows through the TLS and
// TSP code on every connection (copying it was 7% of the gateway's CPU for a plain TSP
// session); a reused goroutine's stack has grown already.
func (g *Gateway) tcpWorker(ctx context.Context, c net.Conn, idle <-chan net.Conn) {
	defer g.wg.Done()
	t := time.NewTimer(tcpWorkerIdle)
	defer t.Stop()
	for {
		g.handleTCP(ctx, c)
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

// handleTCP runs one TCP connection: TLS (TSP-SSL or enrollment) or plain TSP.
func (g *Gateway) handleTCP(ctx context.Context, c net.Conn) {
	// The connection's logger is made only to log (most connections log nothing here).
	log := func() *zerolog.Logger {
		l := g.log.With().Str("remote", addrPortOf(c.RemoteAddr()).String()).Logger()
		return &l
	}
	if !g.handshakes.TryAcquire() {
		g.metrics.ObserveHandshake("tsp-tcp", "refused", 0)
		log().Warn().Str("reason", "too many concurrent handshakes").Msg("connection refused")
		_, _ = c.Write(tsp.NewStatus(tsp.StatusServerTooBusy).Marshal())
		c.Close()
		return
	}
	slot := g.handshakes.Once()
	defer slot()
	start := g.now()
	_ = c.SetDeadline(start.Add(g.cfg.TSP.HandshakeTimeout.D()))
	br, _ := g.peekReaders.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(c, 4096)
	} else {
		br.Reset(c)
	}
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	pc := stream.ReaderConn(c, br) // the peeked byte stays in br
	if first[0] != tlsRecordHandshake {
		// Only serveStream reads a plain connection, and only until it returns: br can
		// be reused then. (A TLS connection may outlive handleTCP: enrollment.)
		defer func() {
			br.Reset(nil)
			g.peekReaders.Put(br)
		}()
		if !g.cfg.Listen.PlainTSP {
			g.metrics.ObserveHandshake("tsp-tcp", "refused", 0)
			log().Info().Str("reason", "plain TSP is disabled (listen.plain_tsp)").Msg("connection refused")
			c.Close()
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
