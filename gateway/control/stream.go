package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/stream"
)

// Read buffers of the TSP sessions on TCP: a full one while the handshake runs, a small one
// for the life of the tunnel (a renewal now and then), so that an idle session holds little.
const (
	readBufSize = 4096
	idleBufSize = 512
)

func (s *Server) getReadBuf() []byte {
	if bp, _ := s.readBufs.Get().(*[]byte); bp != nil {
		return *bp
	}
	return make([]byte, readBufSize)
}

func (s *Server) putReadBuf(b []byte) {
	b = b[:cap(b)]
	s.readBufs.Put(&b)
}

// serveStream runs one TSP session over TCP or TLS. buf, if not nil, holds the n bytes read
// from c so far and goes back to the pool; handshakeDone releases the handshake slot. An
// established tunnel, which idles for hours, goes on in a new goroutine, so that the
// caller's stack, grown by TLS and TSP, is not held for the life of the tunnel.
func (s *Server) serveStream(ctx context.Context, c net.Conn, buf []byte, n int, tr tsp.Transport, ext auth.Identity, handshakeDone func()) {
	if buf == nil {
		buf = s.getReadBuf()
	}
	st := &streamSession{srv: s, c: c, buf: buf, n: n, pooled: true, tr: tr, start: s.now()}
	ss := s.newSession(tr.String(), addrPortOf(c.RemoteAddr()), ext.Serial, func() { c.Close() })
	if !s.sessions.add(ss, s.gw.TSP.MaxSessionsPerSource) {
		s.refuseSource(ss, func(b []byte) { _, _ = c.Write(b) })
		st.release()
		return
	}
	var err error
	if st.m, st.b, err = s.newMachine(ss, tr, ext); err != nil {
		ss.log.Error().Err(err).Msg("cannot start TSP session")
		s.end(ss, lease.ReasonClosed)
		st.release()
		return
	}
	st.sp = tsp.NewSplitter(0)
	if st.run(ctx, handshakeDone) != runEstablished {
		st.finish()
		return
	}
	s.tcp.wg.Add(1) // done when the session ends
	if st.data == tsp.TypeV4TLSV6 {
		st.buf = nil // the stream link reads from here on
		s.startStreamData(ctx, st.b.ss, stream.PrefixConn(c, st.sp.Rest()), st.m, func() {
			st.finish()
			s.tcp.wg.Done()
		})
		return
	}
	go st.serveEstablished(ctx)
}

// serveEstablished reads the established session's control messages (renewals) until the
// session ends; between them the reader parks when the connection can (stream.Parker).
func (st *streamSession) serveEstablished(ctx context.Context) {
	if st.run(ctx, nil) == runParked {
		return // resumed here, in a new goroutine
	}
	st.finish()
	st.srv.tcp.wg.Done()
}

// streamSession is one TSP session on a TCP or TLS connection.
type streamSession struct {
	srv         *Server
	c           net.Conn
	buf         []byte // read buffer: pooled during the handshake, small afterwards
	n           int    // bytes in buf not yet given to sp
	pooled      bool
	tr          tsp.Transport
	m           *tsp.Server
	b           *backend // b.ss changes when this connection resumes an earlier session
	sp          *tsp.Splitter
	start       time.Time
	established bool
	resumed     bool // the reader parked and was resumed: it reads before it parks again
	data        tsp.TunnelType
	// closedByClient: the established connection ended by the client's orderly close (a
	// parked client, dstm-client up --park-control), not by an error.
	closedByClient bool
}

// runResult is how streamSession.run returned.
type runResult int

const (
	runEnded       runResult = iota // the session ended
	runEstablished                  // the tunnel is established (handshakeDone was set)
	runParked                       // the reader parked; serveEstablished resumes it
)

// run steps the machine until the session ends, or, with handshakeDone set, until the tunnel
// is established, when it releases the handshake slot and pooled buffer. Established (no
// handshakeDone), it parks the reader when nothing is left to read and the connection can.
func (st *streamSession) run(ctx context.Context, handshakeDone func()) runResult {
	s, c, m := st.srv, st.c, st.m
	var rerr error
	for {
		_, _ = st.sp.Write(st.buf[:st.n])
		st.n = 0
		for {
			msg, ok, err := st.sp.Next()
			if err != nil {
				// The stream cannot be resynchronised: answer as the machine answers a
				// malformed message in this phase, then close.
				replies, serr := m.Fail(tsp.StatusInvalidRequest, err)
				_ = s.sendReplies(c, replies, st.established)
				s.sessionFailed(st.b.ss, st.tr, st.start, serr, st.established, authenticated(m))
				return runEnded
			}
			if !ok {
				break
			}
			replies, serr := m.Step(ctx, msg)
			werr := s.sendReplies(c, replies, st.established)
			if serr != nil {
				s.sessionFailed(st.b.ss, st.tr, st.start, serr, st.established, authenticated(m)) // the refusal, written or not
				return runEnded
			}
			if werr != nil {
				s.streamEnded(st.b.ss, st.tr, st.start, werr, "write", st.established, authenticated(m))
				return runEnded
			}
			if m.State() == tsp.StateClosed {
				return runEnded
			}
			if _, data, ok := m.Established(); ok && !st.established {
				st.established, st.data = true, data
				handshakeDone()
				s.putReadBuf(st.buf)
				st.buf, st.pooled = make([]byte, idleBufSize), false
				// The connection now idles for the life of the tunnel: no read deadline.
				// The write deadline stays and is renewed by sendReplies.
				_ = c.SetReadDeadline(time.Time{})
				s.cfg.Metrics.ObserveHandshake("tsp-"+st.tr.String(), "ok", s.now().Sub(st.start))
				s.cfg.Metrics.TSPStatus(tsp.StatusSuccess)
				return runEstablished
			}
		}
		if rerr != nil {
			switch {
			case st.established:
				st.closedByClient = errors.Is(rerr, io.EOF)
			case errors.Is(rerr, io.EOF):
				s.handshakeAbandoned(st.b.ss, st.tr, st.start, m.State(), authenticated(m))
			default:
				s.streamEnded(st.b.ss, st.tr, st.start, rerr, "read", st.established, authenticated(m))
			}
			return runEnded
		}
		if handshakeDone == nil && !st.resumed && st.sp.Buffered() == 0 {
			if p, ok := c.(stream.Parker); ok {
				st.buf, st.resumed = nil, true // an idle session holds no read buffer
				if p.Park(time.Time{}, func() { st.serveEstablished(ctx) }) {
					return runParked
				}
			}
		}
		if st.buf == nil {
			st.buf = make([]byte, idleBufSize)
		}
		st.n, rerr = c.Read(st.buf)
		st.resumed = false
	}
}

// finish ends the session with its connection (unless it carries on, see controlEnded).
func (st *streamSession) finish() {
	st.c.Close()
	st.srv.controlEnded(st.b, st.closedByClient)
	st.release()
}

func (st *streamSession) release() {
	st.c.Close()
	if st.pooled {
		st.srv.putReadBuf(st.buf)
		st.pooled = false
	}
}

// sendReplies writes replies. Once established, each batch gets a write deadline of
// tsp.handshake_timeout (before, handleTCP's deadline holds), so that a client that does not
// read its answers ends its session instead of blocking it until its lease runs out.
func (s *Server) sendReplies(c net.Conn, replies []tsp.Reply, established bool) error {
	if established && len(replies) > 0 {
		if err := c.SetWriteDeadline(s.now().Add(s.gw.TSP.HandshakeTimeout.D())); err != nil {
			return err
		}
	}
	return writeReplies(c, replies)
}

// writeReplies writes each reply in its own write, pausing before one flagged Separate.
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

// controlEnded ends the session of a TCP/TLS control connection that ended, unless another
// connection resumed it or its DTLS data channel is alive: then it carries on detached until
// the data channel ends or the client resumes it.
// byClient: the client closed the connection in order, as a parked client does between lease
// renewals; that is logged at debug, a lost connection at info.
func (s *Server) controlEnded(b *backend, byClient bool) {
	carriesOn, stale := b.ss.controlLost(b.gen)
	switch {
	case stale:
	case carriesOn && byClient:
		b.ss.log.Debug().Msg("control connection closed by the client; the DTLS data channel carries the session until resumed or idle")
	case carriesOn:
		b.ss.log.Info().Msg("control connection lost; the DTLS data channel carries on until resumed or idle")
	default:
		s.end(b.ss, lease.ReasonClosed)
	}
}

// streamEnded logs a session whose connection failed in direction dir ("read" or "write"):
// a deadline expired or the connection broke. The client gets no status (docs/protocol.md,
// "Timeouts and refusals on the TCP port").
func (s *Server) streamEnded(ss *session, tr tsp.Transport, start time.Time, err error, dir string, established, authenticated bool) {
	result, reason := "error", dir+" failed"
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && !established:
		result, reason = "timeout", "handshake timeout"
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason = "write timeout: the client does not read"
	}
	if !established {
		s.cfg.Metrics.ObserveHandshake("tsp-"+tr.String(), result, s.now().Sub(start))
		s.sessionHandshakeFailed(ss, reason)
	}
	s.sessionLog(ss, authenticated, zerolog.InfoLevel, func(e *zerolog.Event) {
		e.Err(err).Str("reason", reason).Msg("TSP session ended")
	})
}

// handshakeAbandoned logs a client that closed its connection during the handshake, with
// the state it stopped in: gogoc does that when the CAPABILITY lacks its tunnel mode or
// mechanism, and after an offer it does not like.
func (s *Server) handshakeAbandoned(ss *session, tr tsp.Transport, start time.Time, st tsp.ServerState, authenticated bool) {
	s.cfg.Metrics.ObserveHandshake("tsp-"+tr.String(), "error", s.now().Sub(start))
	s.sessionHandshakeFailed(ss, "closed by the client during the handshake")
	s.sessionLog(ss, authenticated, zerolog.InfoLevel, func(e *zerolog.Event) {
		e.Str("reason", "closed by the client during the handshake").Stringer("state", st).Msg("TSP session ended")
	})
}

// sessionFailed counts and logs, once, why a TSP session ended with an error status.
func (s *Server) sessionFailed(ss *session, tr tsp.Transport, start time.Time, err error, established, authenticated bool) {
	code := s.countFailure(tr, start, err, established)
	if !established {
		s.sessionHandshakeFailed(ss, fmt.Sprintf("TSP status %d", code))
	}
	level := zerolog.InfoLevel
	if code == tsp.StatusServerError {
		level = zerolog.ErrorLevel
	}
	s.sessionLog(ss, authenticated, level, func(e *zerolog.Event) {
		e.Int("tsp_status", code).Err(err).Msg("TSP request refused")
	})
}

// sessionLog writes a line about a session: with the session's logger once it authenticated,
// else rate-limited (anyone can open and fail unauthenticated sessions, in floods).
func (s *Server) sessionLog(ss *session, authenticated bool, level zerolog.Level, write func(*zerolog.Event)) {
	if authenticated {
		if e := ss.log.WithLevel(level); e != nil {
			write(e)
		}
		return
	}
	remote, control := ss.source()
	s.quiet.emit("unauthenticated", level, func(e *zerolog.Event) {
		write(e.Str("session", ss.id).Str("remote", remote.String()).Str("control", control))
	})
}

func authenticated(m *tsp.Server) bool {
	_, ok := m.Identity()
	return ok
}

// countFailure counts a TSP session that ended with an error status and returns the code.
func (s *Server) countFailure(tr tsp.Transport, start time.Time, err error, established bool) int {
	code := tsp.StatusServerError
	var se *tsp.StatusError
	if errors.As(err, &se) {
		code = se.Code
	}
	s.cfg.Metrics.TSPStatus(code)
	if !established {
		s.cfg.Metrics.ObserveHandshake("tsp-"+tr.String(), "refused", s.now().Sub(start))
	}
	return code
}

// refuseSource answers a client whose address already has too many sessions.
func (s *Server) refuseSource(ss *session, write func([]byte)) {
	s.cfg.Metrics.TSPStatus(tsp.StatusServerTooBusy)
	ss.log.Warn().Str("reason", "too many sessions from this source address").Int("tsp_status", tsp.StatusServerTooBusy).Msg("TSP session refused")
	write(tsp.NewStatus(tsp.StatusServerTooBusy).Marshal())
}
