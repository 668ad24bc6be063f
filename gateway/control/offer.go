package control

import (
	"net/netip"
	"slices"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
	"github.com/dstmgw/dstm/tunnel"
)

// offers decides what a session may ask for and builds the offers: tunnel types and SASL
// mechanisms per control transport, the policy's transports, MTUs, DNS and data channel.
type offers struct {
	gw          config.Config
	policy      *auth.PolicyHolder
	passwords   func() *auth.DigestStore
	plain, dtls bool   // the v4v6 and DTLS data transports are served
	port        uint16 // the DTLS data channel's UDP port
	remote      bool   // served by TEP nodes (Config.Remote), not here
}

// dataEnd is the TEP an offer names: this node's own, or a TEP node's.
type dataEnd struct {
	v6, v4 netip.Addr // outer address, inner address (keepalive target)
	port   uint16     // the data element's port (the DTLS port; the TSP port without DTLS)
	dtls   bool       // DTLS is served there
	mtu    int        // of its TUN device
}

// local is this node's own TEP.
func (o *offers) local() dataEnd {
	return dataEnd{v6: o.outerV6(), v4: o.gw.TEP.InnerV4, port: o.port, dtls: o.dtls, mtu: o.gw.TEP.MTU}
}

func remoteEnd(t split.TEP) dataEnd {
	return dataEnd{v6: t.IPv6, v4: t.InnerV4, port: t.DTLSPort, dtls: t.DTLSPort != 0, mtu: t.MTU}
}

// outerV6 is the gateway's outer IPv6 endpoint named in offers.
func (o *offers) outerV6() netip.Addr {
	if o.gw.TEP.IPv6.IsValid() {
		return o.gw.TEP.IPv6
	}
	for _, a := range o.gw.Listen.Addresses {
		if a.Addr().Is6() && !a.Addr().IsUnspecified() {
			return a.Addr()
		}
	}
	return netip.IPv6Loopback()
}

// keepalive is the keepalive interval offered to clients (30 s when none is configured).
func (o *offers) keepalive() time.Duration {
	if ka := o.gw.TEP.Keepalive.D(); ka > 0 {
		return ka
	}
	return 30 * time.Second
}

// Inner MTUs per transport (docs/decisions/0005-mtu.md). The TLS stream is segmented by TCP
// and uses the TEP MTU.
const (
	plainMTU = 1280
	dtlsMTU  = 1380
)

// DTLSRecordMTU is the largest DTLS record the data channel sends: the inner MTU, the record
// header, connection ID and AEAD overhead.
const DTLSRecordMTU = dtlsMTU + 100

func (o *offers) dataMTU(t tsp.TunnelType) int { return DataMTU(t, o.gw.TEP.MTU) }

// DataMTU is the inner MTU of a tunnel type on a TEP whose TUN device has tepMTU: what the
// offer announces and the TEP enforces.
func DataMTU(t tsp.TunnelType, tepMTU int) int {
	switch t {
	case tsp.TypeV4V6:
		return min(plainMTU, tepMTU)
	case tsp.TypeV4DTLSV6, tsp.TypeV4AnyV6:
		return min(dtlsMTU, tepMTU)
	}
	return tepMTU
}

func (s *Server) newMachine(ss *session, tr tsp.Transport, ext auth.Identity) (*tsp.Server, *backend, error) {
	b := &backend{srv: s, ss: ss}
	mechs, passwordsAllowed := s.offers.mechanisms(tr, ext)
	remote, _ := ss.source()
	cfg := tsp.ServerConfig{
		Transport:      tr,
		Tunnels:        s.offers.tunnelTypes(tr),
		Mechanisms:     mechs,
		Realm:          s.gw.TSP.Realm,
		AnonymousName:  remote.Addr().Unmap().String(),
		ExternalName:   ext.Name,
		ExternalGroups: ext.Groups,
		Backend:        b,
	}
	cfg.Credentials = noCredentials{}
	if pw := s.cfg.Passwords(); pw != nil && passwordsAllowed {
		cfg.Credentials = pw
	}
	m, err := tsp.NewServer(cfg)
	return m, b, err
}

// noCredentials fails PLAIN and DIGEST-MD5 with 300, like any wrong password.
type noCredentials struct{}

func (noCredentials) VerifyPlain(string, string) bool { return false }

func (noCredentials) DigestHA1(string, string) ([16]byte, bool) { return [16]byte{}, false }

func (o *offers) tunnelTypes(tr tsp.Transport) []tsp.TunnelType {
	var out []tsp.TunnelType
	if o.plain {
		out = append(out, tsp.TypeV4V6)
	}
	if o.dtls {
		out = append(out, tsp.TypeV4DTLSV6)
	}
	if tr == tsp.TransportTLS && !o.remote { // the stream is served where the connection lands
		out = append(out, tsp.TypeV4TLSV6)
	}
	if (tr == tsp.TransportTLS && !o.remote) || o.dtls {
		out = append(out, tsp.TypeV4AnyV6)
	}
	return out
}

// mechanisms allowed on a control transport (DESIGN §4). passwords says whether a password
// mechanism is: when none is, PLAIN is still advertised (TSP needs one mechanism) and the
// session gets no password store, so that it fails.
func (o *offers) mechanisms(tr tsp.Transport, ext auth.Identity) (mechs []sasl.Mechanism, passwords bool) {
	var out []sasl.Mechanism
	if tr == tsp.TransportTLS && ext.Name != "" {
		out = append(out, sasl.External)
	}
	if o.passwords() != nil {
		if o.gw.TSP.DigestMD5 {
			out = append(out, sasl.DigestMD5)
		}
		switch o.gw.TSP.Plain {
		case "always":
			out = append(out, sasl.Plain)
		case "tls_only":
			if tr == tsp.TransportTLS {
				out = append(out, sasl.Plain)
			}
		}
	}
	passwords = slices.Contains(out, sasl.Plain) || slices.Contains(out, sasl.DigestMD5)
	if o.gw.TSP.Anonymous {
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

func (o *offers) typeAllowed(rule auth.Rule, t tsp.TunnelType) bool {
	if t == tsp.TypeV4V6 && !o.plain {
		return false
	}
	p := o.policy.Load()
	switch t {
	case tsp.TypeV4AnyV6:
		return p.AllowsTransport(rule, tunnel.DTLS) || p.AllowsTransport(rule, tunnel.TLS)
	default:
		return p.AllowsTransport(rule, string(t))
	}
}

func (o *offers) offer(typ tsp.TunnelType, rule auth.Rule, l lease.Lease, ep netip.Addr, tok [tsp.TokenLen]byte, overTLS bool, end dataEnd) *tsp.Tunnel {
	life := uint32(time.Until(l.Expires).Round(time.Second) / time.Second)
	if l.State != lease.StateActive || life == 0 {
		life = uint32(o.gw.Leases.Lifetime.D() / time.Second)
	}
	t := &tsp.Tunnel{
		Action:   tsp.ActionInfo,
		Type:     typ,
		Lifetime: life,
		Server:   &tsp.Endpoint{IPv4: end.v4, IPv6: end.v6},
		Client:   &tsp.ClientInfo{IPv4: l.Addr, IPv6: ep},
	}
	if ka := o.gw.TEP.Keepalive.D(); ka > 0 {
		t.Client.Keepalive = &tsp.Keepalive{Interval: uint32(ka / time.Second), Address: end.v4}
	}
	if typ == tsp.TypeV4V6 {
		t.Client.DNSServers = o.classicDNS(end)
		return t
	}
	t.MTU = uint16(DataMTU(typ, end.mtu))
	t.Client.Routes = append([]netip.Prefix(nil), rule.Routes...)
	t.Client.DNSServers = o.extendedDNS(rule)
	t.Client.DNSDomains = append([]string(nil), rule.DNSDomains...)
	t.Data = &tsp.DataChannel{Token: tok, Port: end.port, Transports: o.dataTransports(typ, rule, overTLS && !o.remote, end.dtls)}
	return t
}

// classicDNS is the IPv6 DNS list for gogoc, which crashes without one: the configured
// servers, or the TEP's outer address as a harmless placeholder.
func (o *offers) classicDNS(end dataEnd) []netip.Addr {
	if len(o.gw.TEP.DNSv6) > 0 {
		return o.gw.TEP.DNSv6[:min(len(o.gw.TEP.DNSv6), tsp.MaxDNSServers)]
	}
	return []netip.Addr{end.v6}
}

func (o *offers) extendedDNS(rule auth.Rule) []netip.Addr {
	dns := rule.DNS
	if len(dns) == 0 {
		dns = append(append([]netip.Addr(nil), o.gw.TEP.DNSv4...), o.gw.TEP.DNSv6...)
	}
	return dns[:min(len(dns), tsp.MaxDNSServers)]
}

// dataTransports lists the data transports an offer names, in preference order.
func (o *offers) dataTransports(typ tsp.TunnelType, rule auth.Rule, overTLS, dtls bool) []tsp.TunnelType {
	p := o.policy.Load()
	var out []tsp.TunnelType
	if (typ == tsp.TypeV4DTLSV6 || typ == tsp.TypeV4AnyV6) && p.AllowsTransport(rule, tunnel.DTLS) && dtls {
		out = append(out, tsp.TypeV4DTLSV6)
	}
	if (typ == tsp.TypeV4TLSV6 || typ == tsp.TypeV4AnyV6) && p.AllowsTransport(rule, tunnel.TLS) && overTLS {
		out = append(out, tsp.TypeV4TLSV6)
	}
	return out
}
