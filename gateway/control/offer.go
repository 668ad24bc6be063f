package control

import (
	"net/netip"
	"slices"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
	"github.com/dstmgw/dstm/tunnel"
)

// Inner MTUs per transport (docs/decisions/0005-mtu.md). The TLS stream is segmented by TCP
// and uses the TEP MTU.
const (
	plainMTU = 1280
	dtlsMTU  = 1380
)

// DTLSRecordMTU is the largest DTLS record the data channel sends: the inner MTU plus room
// for the record header, connection ID and AEAD overhead.
const DTLSRecordMTU = dtlsMTU + 100

func (s *Server) dataMTU(t tsp.TunnelType) int {
	switch t {
	case tsp.TypeV4V6:
		return min(plainMTU, s.gw.TEP.MTU)
	case tsp.TypeV4DTLSV6, tsp.TypeV4AnyV6:
		return min(dtlsMTU, s.gw.TEP.MTU)
	}
	return s.gw.TEP.MTU
}

// newMachine builds the TSP server machine for a session on transport tr.
func (s *Server) newMachine(ss *session, tr tsp.Transport, ext auth.Identity) (*tsp.Server, *backend, error) {
	b := &backend{srv: s, ss: ss}
	mechs, passwordsAllowed := s.mechanisms(tr, ext)
	remote, _ := ss.source()
	cfg := tsp.ServerConfig{
		Transport:     tr,
		Tunnels:       s.tunnelTypes(tr),
		Mechanisms:    mechs,
		Realm:         s.gw.TSP.Realm,
		AnonymousName: remote.Addr().Unmap().String(),
		ExternalName:  ext.Name,
		Backend:       b,
	}
	cfg.Credentials = noCredentials{}
	if pw := s.cfg.Passwords(); pw != nil && passwordsAllowed {
		cfg.Credentials = pw
	}
	m, err := tsp.NewServer(cfg)
	return m, b, err
}

// noCredentials is the credential store when no password file is configured: PLAIN and
// DIGEST-MD5 then fail with 300 like any wrong password.
type noCredentials struct{}

func (noCredentials) VerifyPlain(string, string) bool { return false }

func (noCredentials) DigestHA1(string, string) ([16]byte, bool) { return [16]byte{}, false }

// tunnelTypes advertised on a control transport.
func (s *Server) tunnelTypes(tr tsp.Transport) []tsp.TunnelType {
	var out []tsp.TunnelType
	if s.cfg.Plain != nil {
		out = append(out, tsp.TypeV4V6)
	}
	if s.cfg.DTLS {
		out = append(out, tsp.TypeV4DTLSV6)
	}
	if tr == tsp.TransportTLS {
		out = append(out, tsp.TypeV4TLSV6)
	}
	if tr == tsp.TransportTLS || s.cfg.DTLS {
		out = append(out, tsp.TypeV4AnyV6)
	}
	return out
}

// mechanisms allowed on a control transport (DESIGN §4): EXTERNAL over TLS with a certificate;
// PLAIN over TLS, or everywhere when the config says "always"; DIGEST-MD5 and ANONYMOUS only
// when enabled. passwords says whether a password mechanism is allowed: when nothing is, PLAIN
// is still advertised (TSP needs one mechanism) but must fail for every password, so the
// session gets no password store.
func (s *Server) mechanisms(tr tsp.Transport, ext auth.Identity) (mechs []sasl.Mechanism, passwords bool) {
	var out []sasl.Mechanism
	if tr == tsp.TransportTLS && ext.Name != "" {
		out = append(out, sasl.External)
	}
	if s.cfg.Passwords() != nil {
		if s.gw.TSP.DigestMD5 {
			out = append(out, sasl.DigestMD5)
		}
		switch s.gw.TSP.Plain {
		case "always":
			out = append(out, sasl.Plain)
		case "tls_only":
			if tr == tsp.TransportTLS {
				out = append(out, sasl.Plain)
			}
		}
	}
	passwords = slices.Contains(out, sasl.Plain) || slices.Contains(out, sasl.DigestMD5)
	if s.gw.TSP.Anonymous {
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

// typeAllowed applies policy and configuration to a requested tunnel type.
func (s *Server) typeAllowed(rule auth.Rule, t tsp.TunnelType) bool {
	if t == tsp.TypeV4V6 && s.cfg.Plain == nil {
		return false
	}
	p := s.cfg.Policy.Load()
	switch t {
	case tsp.TypeV4AnyV6:
		return p.AllowsTransport(rule, tunnel.DTLS) || p.AllowsTransport(rule, tunnel.TLS)
	default:
		return p.AllowsTransport(rule, string(t))
	}
}

// offer builds the tunnel offer for a lease.
func (s *Server) offer(typ tsp.TunnelType, rule auth.Rule, l lease.Lease, ep netip.Addr, tok [tsp.TokenLen]byte, overTLS bool) *tsp.Tunnel {
	life := uint32(time.Until(l.Expires).Round(time.Second) / time.Second)
	if l.State != lease.StateActive || life == 0 {
		life = uint32(s.gw.Leases.Lifetime.D() / time.Second)
	}
	o := &tsp.Tunnel{
		Action:   tsp.ActionInfo,
		Type:     typ,
		Lifetime: life,
		Server:   &tsp.Endpoint{IPv4: s.gw.TEP.InnerV4, IPv6: s.outerV6()},
		Client:   &tsp.ClientInfo{IPv4: l.Addr, IPv6: ep},
	}
	if ka := s.gw.TEP.Keepalive.D(); ka > 0 {
		o.Client.Keepalive = &tsp.Keepalive{Interval: uint32(ka / time.Second), Address: s.gw.TEP.InnerV4}
	}
	if typ == tsp.TypeV4V6 {
		o.Client.DNSServers = s.classicDNS()
		return o
	}
	o.MTU = uint16(s.dataMTU(typ))
	o.Client.Routes = append([]netip.Prefix(nil), rule.Routes...)
	o.Client.DNSServers = s.extendedDNS(rule)
	o.Data = &tsp.DataChannel{Token: tok, Port: s.cfg.DataPort, Transports: s.dataTransports(typ, rule, overTLS)}
	return o
}

// classicDNS is the IPv6 DNS list for gogoc, which crashes without one: the configured
// servers, or the gateway's own outer address as a harmless placeholder.
func (s *Server) classicDNS() []netip.Addr {
	if len(s.gw.TEP.DNSv6) > 0 {
		return s.gw.TEP.DNSv6[:min(len(s.gw.TEP.DNSv6), tsp.MaxDNSServers)]
	}
	return []netip.Addr{s.outerV6()}
}

func (s *Server) extendedDNS(rule auth.Rule) []netip.Addr {
	dns := rule.DNS
	if len(dns) == 0 {
		dns = append(append([]netip.Addr(nil), s.gw.TEP.DNSv4...), s.gw.TEP.DNSv6...)
	}
	return dns[:min(len(dns), tsp.MaxDNSServers)]
}

// dataTransports lists the data transports an offer names, in preference order.
func (s *Server) dataTransports(typ tsp.TunnelType, rule auth.Rule, overTLS bool) []tsp.TunnelType {
	p := s.cfg.Policy.Load()
	var out []tsp.TunnelType
	if (typ == tsp.TypeV4DTLSV6 || typ == tsp.TypeV4AnyV6) && p.AllowsTransport(rule, tunnel.DTLS) && s.cfg.DTLS {
		out = append(out, tsp.TypeV4DTLSV6)
	}
	if (typ == tsp.TypeV4TLSV6 || typ == tsp.TypeV4AnyV6) && p.AllowsTransport(rule, tunnel.TLS) && overTLS {
		out = append(out, tsp.TypeV4TLSV6)
	}
	return out
}
