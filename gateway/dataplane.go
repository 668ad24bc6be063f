package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/stream"
)

// Inner MTUs per transport. Plain IPv4-in-IPv6 uses gogoc's 1280; DTLS leaves room for
// IPv6 (40) + UDP (8) + DTLS record with connection ID (13+8) + AES-GCM nonce and tag (24)
// under a 1500-byte path; the TLS stream is segmented by TCP and uses the TEP MTU.
const (
	plainMTU = 1280
	dtlsMTU  = 1380
)

func (g *Gateway) dataMTU(t tsp.TunnelType) int {
	switch t {
	case tsp.TypeV4V6:
		return min(plainMTU, g.cfg.TEP.MTU)
	case tsp.TypeV4DTLSV6, tsp.TypeV4AnyV6:
		return min(dtlsMTU, g.cfg.TEP.MTU)
	}
	return g.cfg.TEP.MTU
}

// tepSession returns the session's TEP entry, creating it on first use.
func (g *Gateway) tepSession(s *session, transport string) (*tep.Session, error) {
	s.mu.Lock()
	addr, id, name, ep := s.lease.Addr, s.id, s.identity.Name, s.endpoint
	s.mu.Unlock()
	if ts := g.tep.Session(addr); ts != nil {
		if ts.Info().ID == id {
			return ts, nil
		}
		return nil, fmt.Errorf("lease %s already carries session %s", addr, ts.Info().ID)
	}
	return g.tep.AddSession(tep.SessionInfo{
		ID: id, Identity: name, Lease: addr, Transport: transport,
		MTU: g.dataMTU(tsp.TunnelType(transport)), Endpoint: netip.AddrPortFrom(ep, 0),
	})
}

// attachData connects the accepted session to the data plane for its chosen transport.
func (g *Gateway) attachData(s *session, data tsp.TunnelType) error {
	ts, err := g.tepSession(s, string(data))
	if err != nil {
		return err
	}
	switch data {
	case tsp.TypeV4V6:
		s.mu.Lock()
		ep := s.endpoint
		s.mu.Unlock()
		link, err := g.plain.Register(ep, ts)
		if err != nil {
			return fmt.Errorf("register plain endpoint %s: %w", ep, err)
		}
		g.setLink(s, ts, link)
	case tsp.TypeV4DTLSV6:
		s.mu.Lock()
		pending := s.pending
		s.pending = nil
		s.mu.Unlock()
		if pending != nil {
			g.setLink(s, ts, pending)
		}
	}
	return nil
}

// setLink makes l the session's data link, closing the one it replaces.
func (g *Gateway) setLink(s *session, ts *tep.Session, l tunnel.Link) {
	s.mu.Lock()
	old := s.link
	s.link = l
	s.mu.Unlock()
	ts.SetLink(l)
	if old != nil && old != l {
		old.Close()
	}
}

// detachData removes the session from the data plane and releases its lease.
func (g *Gateway) detachData(s *session, why lease.Reason) {
	s.mu.Lock()
	addr, link, pending := s.lease.Addr, s.link, s.pending
	s.link, s.pending = nil, nil
	s.lease = lease.Lease{}
	s.mu.Unlock()
	if link != nil {
		link.Close()
	}
	if pending != nil {
		pending.Close()
	}
	if !addr.IsValid() {
		return
	}
	g.tep.RemoveSession(addr, s.id)
	if err := g.leases.Release(context.Background(), addr, s.id, why); err != nil &&
		!errors.Is(err, lease.ErrNotFound) && !errors.Is(err, lease.ErrSessionMismatch) {
		s.log.Warn().Err(err).Str("lease_v4", addr.String()).Msg("lease release failed")
	}
}

// bindDTLS attaches an authenticated DTLS link to the TSP session that issued token.
func (g *Gateway) bindDTLS(ctx context.Context, token []byte, cert *x509.Certificate, remote netip.AddrPort, link tunnel.Link) (tunnel.Receiver, error) {
	r, err := g.bind(token, cert, remote, link)
	if err != nil {
		g.metrics.ObserveHandshake("dtls", "refused", 0)
		g.log.Info().Err(err).Str("client_v6", remote.String()).Str("reason", "DTLS data channel refused").Msg("DTLS bind refused")
		return nil, err
	}
	g.metrics.ObserveHandshake("dtls", "ok", 0)
	return r, nil
}

func (g *Gateway) bind(token []byte, cert *x509.Certificate, remote netip.AddrPort, link tunnel.Link) (tunnel.Receiver, error) {
	if len(token) != tsp.TokenLen {
		return nil, errors.New("data token has the wrong length")
	}
	s := g.sessions.byTokenGet([tsp.TokenLen]byte(token))
	if s == nil {
		return nil, errors.New("unknown data token")
	}
	id, err := auth.IdentityFromCertificate(cert)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	owner, state := s.identity.Name, s.lease.State
	s.mu.Unlock()
	if id.Name != owner {
		return nil, fmt.Errorf("DTLS identity %q does not own session %s (%q)", id.Name, s.id, owner)
	}
	if state != lease.StateOffered && state != lease.StateActive {
		return nil, fmt.Errorf("session %s has no lease to carry", s.id)
	}
	ts, err := g.tepSession(s, string(tsp.TypeV4DTLSV6))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.transport = string(tsp.TypeV4DTLSV6)
	s.mu.Unlock()
	g.setLink(s, ts, link)
	s.log.Info().Str("transport", tunnel.DTLS).Str("client_v6", remote.String()).Msg("data channel bound")
	go g.unlinkWhenDone(s, ts, link, link.Done())
	return ts, nil
}

// unlinkWhenDone detaches a DTLS link from its session when the link ends (idle, peer gone),
// so the data plane stops writing to it; the session itself lives on until its control
// channel or lease ends, and the client may bind a new link.
func (g *Gateway) unlinkWhenDone(s *session, ts *tep.Session, l tunnel.Link, done <-chan struct{}) {
	<-done
	s.mu.Lock()
	mine := s.link == l
	if mine {
		s.link = nil
	}
	detached := s.detached
	s.mu.Unlock()
	if mine {
		ts.SetLink(nil)
		s.log.Info().Str("transport", tunnel.DTLS).Msg("data channel closed")
		if detached { // nothing left of the session: no control, no data
			g.endSession(s, lease.ReasonClosed)
		}
	}
}

// runStreamData carries IPv4 packets on the TSP-SSL connection after a v4tlsv6 accept, until
// the connection ends. Frames that are not IPv4 carry TSP control messages (lease renewal).
func (g *Gateway) runStreamData(ctx context.Context, s *session, c net.Conn, m *tsp.Server) {
	ts, err := g.tepSession(s, tunnel.TLS)
	if err != nil {
		s.log.Error().Err(err).Msg("cannot start the TLS data stream")
		return
	}
	ctl := &streamControl{g: g, s: s, m: m}
	l := stream.New(c, ts, stream.Options{
		MTU:    g.cfg.TEP.MTU,
		Logger: s.log,
		// Our client sends a keepalive frame every 15 s of silence; a peer silent for much
		// longer is gone (its lease becomes held for it).
		KeepaliveInterval: 15 * time.Second,
		IdleTimeout:       90 * time.Second,
		Control:           func(msg []byte) { ctl.handle(ctx, msg) },
	})
	ctl.link = l
	g.setLink(s, ts, l)
	s.log.Info().Str("transport", tunnel.TLS).Msg("data stream started")
	if err := l.Run(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Info().Err(err).Msg("data stream ended")
	}
}

// streamControl steps the TSP machine with control frames received in stream mode.
type streamControl struct {
	g    *Gateway
	s    *session
	m    *tsp.Server
	link *stream.Link
}

func (c *streamControl) handle(ctx context.Context, msg []byte) {
	replies, err := c.m.Step(ctx, msg)
	for _, r := range replies {
		if len(r.Payload) > 0 {
			_ = c.link.WriteControl(r.Payload)
		}
	}
	if err != nil {
		c.g.sessionFailed(c.s, tsp.TransportTLS, c.g.now(), err, true)
		c.link.Close()
	}
}
