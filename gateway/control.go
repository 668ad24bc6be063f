package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
	"github.com/dstmgw/dstm/tunnel/stream"
)

// serveStream runs one TSP session over TCP or TLS until the connection or the session ends.
// handshakeDone releases the connection's handshake slot once the session is established.
func (g *Gateway) serveStream(ctx context.Context, c net.Conn, tr tsp.Transport, ext auth.Identity, handshakeDone func()) {
	s := g.newSession(tr.String(), addrPortOf(c.RemoteAddr()), ext.Serial, func() { c.Close() })
	defer c.Close()
	if !g.sessions.add(s, g.cfg.TSP.MaxSessionsPerSource) {
		g.refuseSource(s, func(b []byte) { _, _ = c.Write(b) })
		return
	}
	m, b, err := g.newMachine(s, tr, ext)
	if err != nil {
		s.log.Error().Err(err).Msg("cannot start TSP session")
		g.endSession(s, lease.ReasonClosed)
		return
	}
	// b.s changes when this connection resumes an earlier session (see backend.adopt).
	defer func() { g.controlEnded(b) }()
	start := g.now()
	sp := tsp.NewSplitter(0)
	bp, _ := g.readBufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 4096)
		bp = &b
	}
	defer g.readBufs.Put(bp) // buf is only read into by this loop
	buf := *bp
	established := false
	for {
		n, rerr := c.Read(buf)
		_, _ = sp.Write(buf[:n])
		for {
			msg, ok, err := sp.Next()
			if err != nil {
				// The stream cannot be resynchronised: answer as the machine answers a
				// malformed message in this phase, then close.
				replies, serr := m.Fail(tsp.StatusInvalidRequest, err)
				_ = g.sendReplies(c, replies, established)
				g.sessionFailed(b.s, tr, start, serr, established)
				return
			}
			if !ok {
				break
			}
			replies, serr := m.Step(ctx, msg)
			werr := g.sendReplies(c, replies, established)
			if serr != nil {
				g.sessionFailed(b.s, tr, start, serr, established) // the refusal, written or not
				return
			}
			if werr != nil {
				g.streamEnded(b.s, tr, start, werr, "write", established)
				return
			}
			if m.State() == tsp.StateClosed {
				return
			}
			if _, data, ok := m.Established(); ok && !established {
				established = true
				handshakeDone()
				// The read deadline goes: the connection now idles for the life of the
				// tunnel. The write deadline stays and is renewed by sendReplies.
				_ = c.SetReadDeadline(time.Time{})
				g.metrics.ObserveHandshake("tsp-"+tr.String(), "ok", g.now().Sub(start))
				g.metrics.TSPStatus(tsp.StatusSuccess)
				if data == tsp.TypeV4TLSV6 {
					g.runStreamData(ctx, b.s, replayConn(c, sp.Rest()), m)
					return
				}
			}
		}
		if rerr != nil {
			switch {
			case established:
			case errors.Is(rerr, io.EOF):
				g.handshakeAbandoned(b.s, tr, start, m.State())
			default:
				g.streamEnded(b.s, tr, start, rerr, "read", established)
			}
			return
		}
	}
}

// sendReplies writes replies on the session's connection. Until the tunnel is established the
// handshake deadline set by handleTCP bounds every write. After it, the connection has no read
// deadline (it idles for the life of the tunnel) and each batch of replies gets a write
// deadline of tsp.handshake_timeout, so a client that sends requests without reading the
// answers ends its session instead of blocking it until its lease runs out. The deadline is
// set only when there is something to write: gogoc writes nothing after its accept, and its
// connection costs no deadline update.
func (g *Gateway) sendReplies(c net.Conn, replies []tsp.Reply, established bool) error {
	if established && len(replies) > 0 {
		if err := c.SetWriteDeadline(g.now().Add(g.cfg.TSP.HandshakeTimeout.D())); err != nil {
			return err
		}
	}
	return writeReplies(c, replies)
}

// streamEnded logs, once, a session whose connection failed in direction dir ("read" or
// "write") without a TSP status: a handshake or write deadline expired, or the connection
// broke. Nothing is sent to the client (docs/protocol.md, "Timeouts and refusals on the TCP
// port").
func (g *Gateway) streamEnded(s *session, tr tsp.Transport, start time.Time, err error, dir string, established bool) {
	result, reason := "error", dir+" failed"
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && !established:
		result, reason = "timeout", "handshake timeout"
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason = "write timeout: the client does not read"
	}
	if !established {
		g.metrics.ObserveHandshake("tsp-"+tr.String(), result, g.now().Sub(start))
	}
	s.log.Info().Err(err).Str("reason", reason).Msg("TSP session ended")
}

// handshakeAbandoned logs, once, a client that closed its connection before its tunnel was
// established and without a status from the gateway: gogoc does that when the CAPABILITY
// lacks its tunnel mode or mechanism ("Requested tunnel mode not available on server"), and
// after an offer it does not like. The machine's state tells the operator where it stopped.
func (g *Gateway) handshakeAbandoned(s *session, tr tsp.Transport, start time.Time, st tsp.ServerState) {
	g.metrics.ObserveHandshake("tsp-"+tr.String(), "error", g.now().Sub(start))
	s.log.Info().Str("reason", "closed by the client during the handshake").Stringer("state", st).Msg("TSP session ended")
}

// controlEnded is called when a TCP/TLS control connection ends. The session ends with it,
// unless another connection resumed it, or its DTLS data channel is alive: then the session
// carries on detached (data flows, leases stay) until the data channel ends or the client
// resumes it on a new connection.
func (g *Gateway) controlEnded(b *backend) {
	s := b.s
	s.mu.Lock()
	if s.ctlGen != b.gen {
		s.mu.Unlock()
		return
	}
	dtlsAlive := s.transport == string(tsp.TypeV4DTLSV6) && s.link != nil && !s.closed
	if dtlsAlive {
		s.detached, s.closeCtl = true, nil
	}
	s.mu.Unlock()
	if dtlsAlive {
		s.log.Info().Msg("control connection lost; the DTLS data channel carries on until resumed or idle")
		return
	}
	g.endSession(s, lease.ReasonClosed)
}

// newMachine builds the TSP server machine for a session on transport tr.
func (g *Gateway) newMachine(s *session, tr tsp.Transport, ext auth.Identity) (*tsp.Server, *backend, error) {
	b := &backend{g: g, s: s}
	mechs, passwordsAllowed := g.mechanisms(tr, ext)
	cfg := tsp.ServerConfig{
		Transport:     tr,
		Tunnels:       g.tunnelTypes(tr),
		Mechanisms:    mechs,
		Realm:         g.cfg.TSP.Realm,
		AnonymousName: s.remote.Addr().Unmap().String(),
		ExternalName:  ext.Name,
		Backend:       b,
	}
	cfg.Credentials = noCredentials{}
	if pw := g.passwords.Load(); pw != nil && passwordsAllowed {
		cfg.Credentials = pw
	}
	m, err := tsp.NewServer(cfg)
	return m, b, err
}

// tunnelTypes advertised on a control transport.
func (g *Gateway) tunnelTypes(tr tsp.Transport) []tsp.TunnelType {
	var out []tsp.TunnelType
	if g.plain != nil {
		out = append(out, tsp.TypeV4V6)
	}
	if g.dtls != nil {
		out = append(out, tsp.TypeV4DTLSV6)
	}
	if tr == tsp.TransportTLS {
		out = append(out, tsp.TypeV4TLSV6)
	}
	if tr == tsp.TransportTLS || g.dtls != nil {
		out = append(out, tsp.TypeV4AnyV6)
	}
	return out
}

// mechanisms allowed on a control transport (DESIGN §4): EXTERNAL over TLS with a certificate;
// PLAIN over TLS, or everywhere when the config says "always"; DIGEST-MD5 and ANONYMOUS only
// when enabled. passwords says whether a password mechanism is allowed: when nothing is, PLAIN
// is still advertised (TSP needs one mechanism) but must fail for every password, so the
// session gets no password store.
func (g *Gateway) mechanisms(tr tsp.Transport, ext auth.Identity) (mechs []sasl.Mechanism, passwords bool) {
	var out []sasl.Mechanism
	if tr == tsp.TransportTLS && ext.Name != "" {
		out = append(out, sasl.External)
	}
	if g.passwords.Load() != nil {
		if g.cfg.TSP.DigestMD5 {
			out = append(out, sasl.DigestMD5)
		}
		switch g.cfg.TSP.Plain {
		case "always":
			out = append(out, sasl.Plain)
		case "tls_only":
			if tr == tsp.TransportTLS {
				out = append(out, sasl.Plain)
			}
		}
	}
	passwords = slices.Contains(out, sasl.Plain) || slices.Contains(out, sasl.DigestMD5)
	if g.cfg.TSP.Anonymous {
		out = append(out, sasl.Anonymous)
	}
	if len(out) == 0 && tr == tsp.TransportTLS {
		out = append(out, sasl.External) // fails with 300 without a certificate
	}
	if len(out) == 0 {
		out = append(out, sasl.Plain) // fails with 300: no password store (see newMachine)
	}
	return out, passwords
}

// sessionFailed counts and logs, once, why a TSP session ended with an error status.
func (g *Gateway) sessionFailed(s *session, tr tsp.Transport, start time.Time, err error, established bool) {
	code := g.countFailure(tr, start, err, established)
	ev := s.log.Info()
	if code == tsp.StatusServerError {
		ev = s.log.Error()
	}
	ev.Int("tsp_status", code).Err(err).Msg("TSP request refused")
}

// countFailure counts a TSP session that ended with an error status and returns the code.
func (g *Gateway) countFailure(tr tsp.Transport, start time.Time, err error, established bool) int {
	code := tsp.StatusServerError
	var se *tsp.StatusError
	if errors.As(err, &se) {
		code = se.Code
	}
	g.metrics.TSPStatus(code)
	if !established {
		g.metrics.ObserveHandshake("tsp-"+tr.String(), "refused", g.now().Sub(start))
	}
	return code
}

// refuseSource answers a client whose address already has too many sessions.
func (g *Gateway) refuseSource(s *session, write func([]byte)) {
	g.metrics.TSPStatus(tsp.StatusServerTooBusy)
	s.log.Warn().Str("reason", "too many sessions from this source address").Int("tsp_status", tsp.StatusServerTooBusy).Msg("TSP session refused")
	write(tsp.NewStatus(tsp.StatusServerTooBusy).Marshal())
}

// writeReplies writes each reply in its own write; a reply flagged Separate is written after a
// pause so that it never shares a TCP segment with the previous one (gogoc's DIGEST-MD5).
func writeReplies(c net.Conn, replies []tsp.Reply) error {
	for i, r := range replies {
		if r.Separate && i > 0 {
			time.Sleep(tsp.DigestStatusPause)
		}
		if len(r.Payload) == 0 {
			continue
		}
		if _, err := c.Write(r.Payload); err != nil {
			return err
		}
	}
	return nil
}

// newSession creates a session with its logger.
func (g *Gateway) newSession(control string, remote netip.AddrPort, serial string, closeCtl func()) *session {
	id := newSessionID()
	return &session{
		id: id, control: control, remote: remote, serial: serial, started: g.now(),
		closeCtl: closeCtl,
		log:      g.log.With().Str("session", id).Str("remote", remote.String()).Str("control", control).Logger(),
	}
}

// noCredentials is the credential store when no password file is configured: PLAIN and
// DIGEST-MD5 then fail with 300 like any wrong password.
type noCredentials struct{}

func (noCredentials) VerifyPlain(string, string) bool { return false }

func (noCredentials) DigestHA1(string, string) ([16]byte, bool) { return [16]byte{}, false }

// replayConn returns c with the bytes already read from it (rest) served first.
func replayConn(c net.Conn, rest []byte) net.Conn {
	return stream.ReaderConn(c, io.MultiReader(bytes.NewReader(rest), c))
}
