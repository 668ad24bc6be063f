package tsp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// minMTU is the smallest MTU an extended offer may announce.
const minMTU = 576

// onTunnel handles the XML phase: create, accept, reject, delete, info.
func (s *Server) onTunnel(ctx context.Context, in []byte) ([]Reply, error) {
	body, err := ParseContent(in)
	if err != nil {
		return failFramed(StatusInvalidRequest, err)
	}
	t, err := ParseTunnel(body)
	if err != nil {
		return failFramed(StatusInvalidRequest, err)
	}
	switch {
	case t.Action == ActionCreate && s.state != StateOffered:
		return s.create(ctx, t)
	case t.Action == ActionAccept && s.state == StateOffered:
		return s.accept(ctx, t)
	case t.Action == ActionReject && s.state == StateOffered:
		return s.reject(ctx)
	case t.Action == ActionDelete && s.state != StateAuthenticated:
		return s.delete(ctx)
	case t.Action == ActionInfo && s.state == StateEstablished:
		return s.offerReply(s.accepted)
	}
	return failFramed(StatusInvalidRequest, fmt.Errorf("action %q in state %s", t.Action, s.state))
}

func (s *Server) typeAdvertised(t TunnelType) bool {
	for _, x := range s.cfg.Tunnels {
		if x == t {
			return true
		}
	}
	return false
}

func (s *Server) create(ctx context.Context, req *Tunnel) ([]Reply, error) {
	if req.Type == "" {
		return failFramed(StatusInvalidRequest, errors.New("create without a tunnel type"))
	}
	if !req.Type.Servable() || !s.typeAdvertised(req.Type) {
		return failFramed(StatusUnsupportedTunnelType, fmt.Errorf("tunnel type %s", req.Type))
	}
	if req.Client == nil || !req.Client.IPv6.IsValid() {
		return failFramed(StatusInvalidIPv6, errors.New("create without the client IPv6 endpoint"))
	}
	offer, err := s.cfg.Backend.Create(ctx, s.id, req)
	if err != nil {
		return backendFailed("create", err)
	}
	if offer == nil {
		return failFramed(StatusServerError, errors.New("backend create returned no offer"))
	}
	offer.Action = ActionInfo
	if err := s.validateOffer(req, offer); err != nil {
		return failFramed(StatusServerError, fmt.Errorf("backend offer: %w", err))
	}
	out, err := s.offerReply(offer)
	if err != nil {
		return out, err
	}
	s.offer = offer
	s.state = StateOffered
	return out, nil
}

// offerReply frames "200 Success\r\n" + the tunnel XML.
func (s *Server) offerReply(offer *Tunnel) ([]Reply, error) {
	// One buffer: the body (status line and XML) is written after room for the longest
	// Content-length line an offer that fits a datagram can have, and the line is then put
	// right in front of it.
	const room = len(contentLengthKey) + len(" 4096\r\n")
	buf := make([]byte, room, room+len("200 Success\r\n")+offer.marshalSizeHint())
	buf = NewStatus(StatusSuccess).Append(buf)
	buf, err := offer.AppendMarshal(buf)
	if err != nil {
		return failFramed(StatusServerError, fmt.Errorf("marshal offer: %w", err))
	}
	n := len(buf) - room
	var hb [room]byte
	hdr := append(hb[:0], contentLengthKey+" "...)
	hdr = strconv.AppendInt(hdr, int64(n), 10)
	hdr = append(hdr, crlf...)
	if len(hdr)+n > MaxDatagramPayload {
		return failFramed(StatusServerError, fmt.Errorf("offer of %d bytes exceeds %d", len(hdr)+n, MaxDatagramPayload))
	}
	msg := buf[room-len(hdr):] // len(hdr) <= room: n <= MaxDatagramPayload has 4 digits at most
	copy(msg, hdr)
	return []Reply{{Payload: msg}}, nil
}

func (s *Server) accept(ctx context.Context, t *Tunnel) ([]Reply, error) {
	data, err := s.chooseData(t.Type)
	if err != nil {
		return failFramed(StatusInvalidRequest, err)
	}
	if err := s.cfg.Backend.Accept(ctx, s.id, s.offer, data); err != nil {
		return backendFailed("accept", err)
	}
	s.accepted, s.data = s.offer, data
	s.state = StateEstablished
	return nil, nil
}

// chooseData resolves the data transport named by the accept's optional
// type attribute (our extension) against the offer. Without it: the offer
// type for v4v6, else the first transport the offer lists.
func (s *Server) chooseData(want TunnelType) (TunnelType, error) {
	if s.offer.Type == TypeV4V6 {
		if want != "" && want != TypeV4V6 {
			return "", fmt.Errorf("accept type %s for a v4v6 offer", want)
		}
		return TypeV4V6, nil
	}
	if want == "" {
		return s.offer.Data.Transports[0], nil
	}
	for _, t := range s.offer.Data.Transports {
		if t == want {
			return t, nil
		}
	}
	return "", fmt.Errorf("accept type %s not offered", want)
}

func (s *Server) reject(ctx context.Context) ([]Reply, error) {
	if err := s.cfg.Backend.Delete(ctx, s.id); err != nil {
		return backendFailed("delete on reject", err)
	}
	s.offer, s.accepted, s.data = nil, nil, ""
	s.state = StateAuthenticated
	return nil, nil
}

func (s *Server) delete(ctx context.Context) ([]Reply, error) {
	if err := s.cfg.Backend.Delete(ctx, s.id); err != nil {
		return backendFailed("delete", err)
	}
	s.offer, s.accepted, s.data = nil, nil, ""
	s.state = StateClosed
	return []Reply{{Payload: MarshalContent(NewStatus(StatusSuccess).Marshal())}}, nil
}

// validateOffer checks the backend's offer against the request and the
// wire rules: all four addresses, a lifetime, gogoc's DNS requirement for
// v4v6 and no extensions there, and a complete data element for our types.
func (s *Server) validateOffer(req, o *Tunnel) error {
	if err := checkOfferType(req.Type, o.Type); err != nil {
		return err
	}
	if o.Lifetime == 0 {
		return errors.New("offer without lifetime")
	}
	if o.Server == nil || o.Client == nil || !isV4(o.Server.IPv4) || !isV6(o.Server.IPv6) ||
		!isV4(o.Client.IPv4) || !isV6(o.Client.IPv6) {
		return errors.New("offer lacks one of the four tunnel addresses")
	}
	if k := o.Client.Keepalive; k != nil && (k.Interval == 0 || !isV4(k.Address)) {
		return errors.New("offer keepalive needs an interval and an IPv4 address")
	}
	if len(o.Client.DNSServers) > MaxDNSServers || len(o.Client.Routes) > MaxRoutes || len(o.Client.DNSDomains) > MaxDNSDomains {
		return errors.New("offer has too many dns servers, routes or dns domains")
	}
	if o.Type == TypeV4V6 {
		return checkClassicOffer(o)
	}
	return s.checkExtendedOffer(o)
}

func checkOfferType(req, offer TunnelType) error {
	if offer == req {
		return nil
	}
	if req == TypeV4AnyV6 && (offer == TypeV4DTLSV6 || offer == TypeV4TLSV6) {
		return nil
	}
	return fmt.Errorf("offer type %q does not answer a %q request", offer, req)
}

// checkClassicOffer enforces gogoc compatibility: an IPv6 client DNS
// server (gogoc crashes without one) and none of our extensions.
func checkClassicOffer(o *Tunnel) error {
	if o.MTU != 0 || o.Data != nil || o.Client.Routes != nil || o.Client.DNSDomains != nil || len(o.Brokers) != 0 {
		return errors.New("v4v6 offer carries extensions gogoc does not know")
	}
	if len(o.Client.DNSServers) == 0 {
		return errors.New("v4v6 offer without an IPv6 DNS server (gogoc crashes)")
	}
	for _, a := range o.Client.DNSServers {
		if !isV6(a) {
			return errors.New("v4v6 offer with a non-IPv6 DNS server")
		}
	}
	return nil
}

func (s *Server) checkExtendedOffer(o *Tunnel) error {
	if o.MTU < minMTU {
		return fmt.Errorf("offer mtu %d below %d", o.MTU, minMTU)
	}
	d := o.Data
	if d == nil || d.Port == 0 || len(d.Transports) == 0 || len(d.Transports) > 2 {
		return errors.New("offer without a complete data element")
	}
	if d.Token == ([TokenLen]byte{}) {
		return errors.New("offer with an all-zero data token")
	}
	for _, t := range d.Transports {
		if t != TypeV4DTLSV6 && t != TypeV4TLSV6 {
			return fmt.Errorf("data transport %q", t)
		}
		if t == TypeV4TLSV6 && s.cfg.Transport != TransportTLS {
			return errors.New("v4tlsv6 data transport offered outside TLS")
		}
		if o.Type != TypeV4AnyV6 && t != o.Type {
			return fmt.Errorf("data transport %s in a %s offer", t, o.Type)
		}
	}
	return nil
}

// backendFailed answers a failed backend operation with the status the backend chose (310
// when it chose none). A *StatusError's cause is wrapped once, under the operation's name.
func backendFailed(op string, err error) ([]Reply, error) {
	code := wireStatus(err)
	var se *StatusError
	if errors.As(err, &se) && se.Err != nil {
		err = se.Err
	}
	return failFramed(code, fmt.Errorf("backend %s: %w", op, err))
}
