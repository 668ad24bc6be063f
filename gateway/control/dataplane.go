package control

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
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/stream"
)

// Timings of the TLS data stream: our client sends a keepalive frame every 15 s of silence;
// a peer silent for much longer is gone (its lease becomes held for it).
const (
	streamKeepalive = 15 * time.Second
	streamIdle      = 90 * time.Second
)

// teardownTimeout bounds the lease release of a session that ends.
const teardownTimeout = 10 * time.Second

// attachData attaches a plain link for v4v6. A DTLS link is attached when it binds, the TLS
// stream when the control loop hands its connection over (startStreamData).
func (s *Server) attachData(ss *session, data tsp.TunnelType) error {
	if data != tsp.TypeV4V6 {
		return nil
	}
	ts, err := s.dataEntry(ss, string(data), s.offers.dataMTU(data))
	if err != nil {
		return err
	}
	_, _, _, ep := ss.tspState()
	link, err := s.cfg.Plain.Register(ep, ts)
	if err != nil {
		return fmt.Errorf("register plain endpoint %s: %w", ep, err)
	}
	if err := attach(ss, ts, link); err != nil {
		return err
	}
	s.sessions.setPlain(ss, ep)
	return nil
}

// claimEndpoint makes room for a v4v6 create from ep, which carries one v4v6 tunnel at most
// (only the outer source tells them apart). An older session on ep ends if it has the same
// identity (the client started again) or is stale (a legacy client that stopped without
// delete). A live tunnel of another identity keeps ep and the create gets 301: the client
// reads the answer to its create, not to its accept.
func (s *Server) claimEndpoint(ss *session, id tsp.Identity, ep netip.Addr) error {
	other := s.sessions.plainAt(ep)
	if other == nil || other == ss {
		return nil
	}
	owner, _, _ := other.state()
	stale := s.now().Sub(other.lastReceive()) > staleAfter*s.offers.keepalive()
	if owner != id.Name && !stale {
		return statusErr(tsp.StatusNoMoreTunnels, fmt.Errorf("IPv6 endpoint %s carries the live v4v6 tunnel of session %s (%q)", ep, other.id, owner))
	}
	why := "the same identity started a new session"
	if owner != id.Name {
		why = "stale: no traffic through it"
	}
	if s.end(other, lease.ReasonReplaced) {
		other.log.Info().Str("reason", why).Str("client_v6", ep.String()).Str("by_session", ss.id).Msg("v4v6 session replaced on its endpoint")
	}
	return nil
}

// staleAfter keepalive intervals without traffic make a v4v6 tunnel stale (gogoc sends an
// ICMP echo through it every interval).
const staleAfter = 3

// dataEntry returns the TEP entry of ss, ending first a session that holds the lease's entry
// but lost the lease to ss (its end still on its way as a lease event).
func (s *Server) dataEntry(ss *session, transport string, mtu int) (*tep.Session, error) {
	ts, err := ss.dataEntry(s.cfg.TEP, transport, mtu)
	var busy *leaseBusyError
	if !errors.As(err, &busy) {
		return ts, err
	}
	other := s.sessions.get(busy.owner)
	if cur, ok := s.cfg.Leases.Get(busy.addr); other == nil || !ok || cur.Session == other.id {
		return nil, err
	}
	s.end(other, lease.ReasonReplaced)
	return ss.dataEntry(s.cfg.TEP, transport, mtu)
}

// attach makes l the session's link on ts, closing the one it replaces, or closes l if the
// session ended meanwhile.
func attach(ss *session, ts *tep.Session, l tunnel.Link) error {
	old, err := ss.attach(ts, l)
	if err != nil {
		l.Close()
		return err
	}
	if old != nil {
		old.Close()
	}
	return nil
}

// detachData removes the session from the data plane and releases its lease.
func (s *Server) detachData(ctx context.Context, ss *session, why lease.Reason) {
	addr, data, link, bound := ss.detachData()
	if link != nil {
		link.Close()
	}
	if data != nil {
		s.cfg.TEP.RemoveSession(addr, ss.id)
	}
	// A gateway that lost its ownership does not wait for the store: etcd deletes those
	// records (and bindings) with the ownership (the watch brings the cache in line), and
	// every session must go at once, not one store timeout after the other.
	if !addr.IsValid() || why == lease.ReasonOwnership {
		return
	}
	if bound.Session != "" {
		if err := s.cfg.Remote.Unbind(ctx, bound); err != nil {
			ss.log.Warn().Err(err).Str("tep", bound.TEP).Msg("TEP binding not removed; it goes with this node's ownership lease")
		}
	}
	if err := s.cfg.Leases.Release(ctx, addr, ss.id, why); err != nil &&
		!errors.Is(err, lease.ErrNotFound) && !errors.Is(err, lease.ErrSessionMismatch) {
		ss.log.Warn().Err(err).Str("lease_v4", addr.String()).Msg("lease release failed")
	}
}

// end ends a session everywhere: control channel, data plane, lease, table. It may be called
// from any goroutine, any number of times; it reports whether this call ended it.
func (s *Server) end(ss *session, why lease.Reason) bool {
	closeCtl, ok := ss.markClosed()
	if !ok {
		return false
	}
	s.endedEvent(ss, why)
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	s.detachData(ctx, ss, why)
	s.sessions.remove(ss)
	if closeCtl != nil {
		closeCtl()
	}
	ss.log.Debug().Str("reason", string(why)).Msg("session ended")
	return true
}

// BindDTLS attaches an authenticated DTLS link to the TSP session that issued token; it is
// the DTLS server's bind function.
func (s *Server) BindDTLS(ctx context.Context, token []byte, cert *x509.Certificate, remote netip.AddrPort, link tunnel.Link) (tunnel.Receiver, error) {
	r, err := s.bindDTLS(token, cert, link)
	if err != nil {
		s.cfg.Metrics.ObserveHandshake(metrics.TransportDTLS, metrics.ResultRefused, 0)
		s.log.Info().Err(err).Str("client_v6", remote.String()).Str("reason", "DTLS data channel refused").Msg("DTLS bind refused")
		return nil, err
	}
	s.cfg.Metrics.ObserveHandshake(metrics.TransportDTLS, metrics.ResultOK, 0)
	return r, nil
}

func (s *Server) bindDTLS(token []byte, cert *x509.Certificate, link tunnel.Link) (tunnel.Receiver, error) {
	if len(token) != tsp.TokenLen {
		return nil, errors.New("data token has the wrong length")
	}
	ss := s.sessions.byTokenGet([tsp.TokenLen]byte(token))
	if ss == nil {
		return nil, errors.New("unknown data token")
	}
	id, err := auth.IdentityFromCertificate(cert)
	if err != nil {
		return nil, err
	}
	if owner, _, _ := ss.state(); id.Name != owner {
		return nil, fmt.Errorf("DTLS identity %q does not own session %s (%q)", id.Name, ss.id, owner)
	}
	ts, err := s.dataEntry(ss, tunnel.DTLS, s.offers.dataMTU(tsp.TypeV4DTLSV6))
	if err != nil {
		return nil, fmt.Errorf("session %s: %w", ss.id, err)
	}
	old, err := ss.attach(ts, link)
	if err != nil {
		return nil, fmt.Errorf("session %s: %w", ss.id, err)
	}
	if old != nil {
		old.Close()
	}
	ss.log.Info().Str("transport", tunnel.DTLS).Str("client_v6", link.Endpoint().String()).Msg("data channel bound")
	if a, ok := link.(afterDoner); ok { // no goroutine per session waiting for the end
		a.AfterDone(func() { s.unlinked(ss, link) })
	} else {
		go s.unlinkWhenDone(ss, link)
	}
	return ts, nil
}

// afterDoner is a link that runs a function when it has ended (dtls links do).
type afterDoner interface{ AfterDone(f func()) }

// unlinkWhenDone detaches a DTLS link from its session when the link ends; the session lives
// on until its control channel or lease ends, and the client may bind a new link.
func (s *Server) unlinkWhenDone(ss *session, l tunnel.Link) {
	<-l.Done()
	s.unlinked(ss, l)
}

// unlinked detaches the ended link l from its session.
func (s *Server) unlinked(ss *session, l tunnel.Link) {
	mine, orphan := ss.unlink(l)
	if !mine {
		return
	}
	ss.log.Info().Str("transport", l.Transport()).Msg("data channel closed")
	if orphan { // nothing left of the session: no control, no data
		s.end(ss, lease.ReasonClosed)
	}
}

// startStreamData carries IPv4 packets on the TSP-SSL connection after a v4tlsv6 accept, until
// the connection ends, and then calls done. Frames that are not IPv4 carry TSP control
// messages (lease renewal). An idle stream's reader parks (stream.Link.Start).
func (s *Server) startStreamData(ctx context.Context, ss *session, c net.Conn, m *tsp.Server, done func()) {
	if s.cfg.TEP == nil { // never offered without a TEP here
		ss.log.Error().Msg("TLS data stream refused: this node has no TEP")
		done()
		return
	}
	ts, err := s.dataEntry(ss, tunnel.TLS, s.offers.dataMTU(tsp.TypeV4TLSV6))
	if err != nil {
		ss.log.Error().Err(err).Msg("cannot start the TLS data stream")
		done()
		return
	}
	ctl := &streamControl{srv: s, ss: ss, m: m}
	l := stream.New(c, ts, stream.Options{
		MTU:               s.gw.TEP.MTU,
		Logger:            ss.log,
		KeepaliveInterval: streamKeepalive,
		IdleTimeout:       streamIdle,
		Control:           func(msg []byte) { ctl.handle(ctx, msg) },
	})
	ctl.link = l
	if err := attach(ss, ts, l); err != nil {
		ss.log.Info().Err(err).Msg("TLS data stream not started")
		done()
		return
	}
	ss.log.Info().Str("transport", tunnel.TLS).Msg("data stream started")
	l.Start(ctx, func(err error) {
		if err != nil && !errors.Is(err, net.ErrClosed) {
			ss.log.Info().Err(err).Msg("data stream ended")
		}
		done()
	})
}

// streamControl steps the TSP machine with control frames received in stream mode.
type streamControl struct {
	srv  *Server
	ss   *session
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
		c.srv.sessionFailed(c.ss, tsp.TransportTLS, c.srv.now(), err, true, true)
		c.link.Close()
	}
}
