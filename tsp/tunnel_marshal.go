package tsp

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/dstmgw/dstm/internal/dnsname"
)

// Marshal encodes the tunnel element followed by CRLF in the exact layouts
// gogoc produces and accepts: a create request in gogoc's request layout
// (xml_req.c), every other action in the offer layout of tsp-wire-notes
// §3.9. No XML prolog is ever written.
func (t *Tunnel) Marshal() ([]byte, error) {
	return t.AppendMarshal(make([]byte, 0, t.marshalSizeHint()))
}

// AppendMarshal appends what Marshal returns to dst. On error dst is returned unchanged.
func (t *Tunnel) AppendMarshal(dst []byte) ([]byte, error) {
	if err := t.checkMarshal(); err != nil {
		return dst, err
	}
	w := &xmlWriter{b: dst}
	w.openTunnel(t)
	if !t.hasChildren() {
		w.raw("</tunnel>\r\n")
		return w.b, nil
	}
	w.raw(crlf)
	if t.Server != nil {
		w.server(t.Server)
	}
	if t.Client != nil {
		if t.Action == ActionCreate {
			w.requestClient(t.Client)
		} else {
			w.offerClient(t.Client)
		}
	}
	if t.Data != nil {
		w.data(t.Data)
	}
	if len(t.Brokers) > 0 {
		w.brokers(t.Brokers)
	}
	w.raw("</tunnel>\r\n")
	return w.b, nil
}

// marshalSizeHint is generous, so that Marshal allocates once.
func (t *Tunnel) marshalSizeHint() int {
	n := 128 // <tunnel …> with all attributes, </tunnel>
	if t.Server != nil {
		n += 160
	}
	if c := t.Client; c != nil {
		n += 256 + len(c.DN) + 64*len(c.DNSServers) + 64*len(c.Routes) + 32
		for _, d := range c.DNSDomains {
			n += 17 + len(d)
		}
		if c.Router != nil {
			n += 128 + 64*len(c.Router.DNSNames)
		}
	}
	if t.Data != nil {
		n += 160
	}
	for _, b := range t.Brokers {
		n += 48 + len(b.Value)
	}
	return n
}

func (t *Tunnel) hasChildren() bool {
	return t.Server != nil || t.Client != nil || t.Data != nil || len(t.Brokers) > 0
}

// checkMarshal rejects values that cannot be written safely.
func (t *Tunnel) checkMarshal() error {
	if _, err := parseAction(string(t.Action)); err != nil {
		return err
	}
	if t.Type != "" {
		if _, err := ParseTunnelType(string(t.Type)); err != nil {
			return err
		}
	}
	if t.Proxy != "" && t.Proxy != "yes" && t.Proxy != "no" {
		return fmt.Errorf("%w: proxy must be yes or no", ErrMalformed)
	}
	if err := t.checkFamilies(); err != nil {
		return err
	}
	if c := t.Client; c != nil && c.DN != "" && !validDN(c.DN) {
		return fmt.Errorf("%w: bad client dn", ErrMalformed)
	}
	if c := t.Client; c != nil {
		if len(c.DNSDomains) > MaxDNSDomains {
			return fmt.Errorf("%w: too many dns domains", ErrMalformed)
		}
		for _, d := range c.DNSDomains {
			if dnsname.Check(d) != nil {
				return fmt.Errorf("%w: bad dns domain", ErrMalformed)
			}
		}
	}
	if c := t.Client; c != nil && c.Router != nil {
		for _, n := range c.Router.DNSNames {
			if !validDN(n) {
				return fmt.Errorf("%w: bad router dns name", ErrMalformed)
			}
		}
	}
	for _, b := range t.Brokers {
		if err := checkBroker(b); err != nil {
			return err
		}
	}
	if d := t.Data; d != nil {
		// As the parser reads <data>: a port and at least one data transport.
		if d.Port == 0 || len(d.Transports) == 0 {
			return fmt.Errorf("%w: data without port or transports", ErrMalformed)
		}
		for _, tr := range d.Transports {
			if tr != TypeV4DTLSV6 && tr != TypeV4TLSV6 {
				return fmt.Errorf("%w: bad data transport %q", ErrMalformed, tr)
			}
		}
	}
	return nil
}

// checkFamilies checks address families and that routes are masked IPv4.
func (t *Tunnel) checkFamilies() error {
	bad := func(what string) error { return fmt.Errorf("%w: %s has the wrong address family", ErrMalformed, what) }
	if e := t.Server; e != nil && (e.IPv4.IsValid() && !isV4(e.IPv4) || e.IPv6.IsValid() && !isV6(e.IPv6)) {
		return bad("server address")
	}
	c := t.Client
	if c == nil {
		return nil
	}
	if c.IPv4.IsValid() && !isV4(c.IPv4) || c.IPv6.IsValid() && !isV6(c.IPv6) {
		return bad("client address")
	}
	if c.Keepalive != nil && c.Keepalive.Address.IsValid() && !isV4(c.Keepalive.Address) && !isV6(c.Keepalive.Address) {
		return bad("keepalive address")
	}
	for _, a := range c.DNSServers {
		if !isV4(a) && !isV6(a) {
			return bad("dns server")
		}
	}
	for _, p := range c.Routes {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
			return fmt.Errorf("%w: route %s is not a masked IPv4 prefix", ErrMalformed, p)
		}
	}
	return nil
}

// xmlWriter appends the layouts piece by piece (no temporary strings).
type xmlWriter struct{ b []byte }

func (w *xmlWriter) raw(s string) { w.b = append(w.b, s...) }

func (w *xmlWriter) uint(v uint64) { w.b = strconv.AppendUint(w.b, v, 10) }

func (w *xmlWriter) ip(a netip.Addr) { w.b = a.AppendTo(w.b) }

func (w *xmlWriter) attr(name, val string) {
	w.raw(" ")
	w.raw(name)
	w.raw(`="`)
	w.raw(val)
	w.raw(`"`)
}

func (w *xmlWriter) attrUint(name string, v uint64) {
	w.raw(" ")
	w.raw(name)
	w.raw(`="`)
	w.uint(v)
	w.raw(`"`)
}

// addr writes <address type="typ">val</address> (no indent, no line end).
func (w *xmlWriter) addr(typ, val string) {
	w.raw(`<address type="`)
	w.raw(typ)
	w.raw(`">`)
	w.raw(val)
	w.raw("</address>")
}

func (w *xmlWriter) addrIP(a netip.Addr) {
	w.raw(`<address type="`)
	w.raw(addrType(a))
	w.raw(`">`)
	w.ip(a)
	w.raw("</address>")
}

func (w *xmlWriter) addrLine(indent, typ, val string) {
	w.raw(indent)
	w.addr(typ, val)
	w.raw(crlf)
}

func (w *xmlWriter) addrIPLine(indent string, a netip.Addr) {
	w.raw(indent)
	w.addrIP(a)
	w.raw(crlf)
}

func (w *xmlWriter) openTunnel(t *Tunnel) {
	w.raw("<tunnel")
	w.attr("action", string(t.Action))
	if t.Type != "" {
		w.attr("type", string(t.Type))
	}
	if t.Proxy != "" {
		w.attr("proxy", t.Proxy)
	}
	if t.Lifetime != 0 {
		w.attrUint("lifetime", uint64(t.Lifetime))
	}
	if t.MTU != 0 {
		w.attrUint("mtu", uint64(t.MTU))
	}
	w.raw(">")
}

func (w *xmlWriter) server(e *Endpoint) {
	w.raw(" <server>" + crlf)
	w.endpointAddrs("  ", e.IPv4, e.IPv6)
	w.raw(" </server>" + crlf)
}

func (w *xmlWriter) endpointAddrs(indent string, v4, v6 netip.Addr) {
	if v4.IsValid() {
		w.addrIPLine(indent, v4)
	}
	if v6.IsValid() {
		w.addrIPLine(indent, v6)
	}
}

// requestClient writes <client> in gogoc's request layout (address,
// keepalive, router), followed by elements gogoc never sends.
func (w *xmlWriter) requestClient(c *ClientInfo) {
	w.raw(" <client>" + crlf)
	w.endpointAddrs("  ", c.IPv4, c.IPv6)
	w.dn(c.DN)
	if k := c.Keepalive; k != nil {
		w.raw(`  <keepalive interval="`)
		w.uint(uint64(k.Interval))
		w.raw(`">` + crlf)
		if k.Address.IsValid() {
			w.addrIPLine("    ", k.Address)
		}
		w.raw("  </keepalive>" + crlf)
	}
	w.router(c.Router)
	w.dnsServers(c.DNSServers)
	w.routes(c.Routes)
	w.dnsDomains(c.DNSDomains)
	w.raw(" </client>" + crlf)
}

func (w *xmlWriter) dn(dn string) {
	if dn != "" {
		w.addrLine("  ", "dn", dn)
	}
}

// router writes <router> with its prefix and reverse-DNS names, as in
// gogoc's request layout (§3.8).
func (w *xmlWriter) router(r *Router) {
	if r == nil {
		return
	}
	w.raw("  <router>" + crlf)
	w.prefix("   ", r.PrefixLen, r.Prefix)
	if len(r.DNSNames) > 0 {
		w.raw("   <dns_server>" + crlf)
		for _, n := range r.DNSNames {
			w.addrLine("     ", "dn", n)
		}
		w.raw("   </dns_server>" + crlf)
	}
	w.raw("  </router>" + crlf)
}

func (w *xmlWriter) dnsServers(as []netip.Addr) {
	if len(as) == 0 {
		return
	}
	w.raw("  <dns_server>")
	for _, a := range as {
		w.addrIP(a)
	}
	w.raw("</dns_server>" + crlf)
}

func (w *xmlWriter) routes(ps []netip.Prefix) {
	if ps == nil {
		return
	}
	w.raw("  <routes>" + crlf)
	for _, p := range ps {
		w.prefix("   ", p.Bits(), p.Addr())
	}
	w.raw("  </routes>" + crlf)
}

// dnsDomains writes our <dns_domains> extension on one line, as <dns_server>; the entries
// passed dnsname.Check, so they need no escaping.
func (w *xmlWriter) dnsDomains(ds []string) {
	if len(ds) == 0 {
		return
	}
	w.raw("  <dns_domains>")
	for _, d := range ds {
		w.raw("<domain>")
		w.raw(d)
		w.raw("</domain>")
	}
	w.raw("</dns_domains>" + crlf)
}

// offerClient writes <client> in the offer layout gogoc accepted (§3.9),
// then our extensions.
func (w *xmlWriter) offerClient(c *ClientInfo) {
	w.raw(" <client>" + crlf)
	w.endpointAddrs("  ", c.IPv4, c.IPv6)
	w.dn(c.DN)
	if k := c.Keepalive; k != nil {
		w.raw(`  <keepalive interval="`)
		w.uint(uint64(k.Interval))
		w.raw(`">`)
		if k.Address.IsValid() {
			w.addrIP(k.Address)
		}
		w.raw("</keepalive>" + crlf)
	}
	w.dnsServers(c.DNSServers)
	w.router(c.Router)
	w.routes(c.Routes)
	w.dnsDomains(c.DNSDomains)
	w.raw(" </client>" + crlf)
}

func (w *xmlWriter) prefix(indent string, bits int, a netip.Addr) {
	w.raw(indent)
	w.raw(`<prefix length="`)
	w.b = strconv.AppendInt(w.b, int64(bits), 10)
	if !a.IsValid() {
		w.raw(`"/>` + crlf)
		return
	}
	w.raw(`">`)
	w.ip(a)
	w.raw("</prefix>" + crlf)
}

func (w *xmlWriter) data(d *DataChannel) {
	w.raw(` <data token="`)
	w.b = hex.AppendEncode(w.b, d.Token[:])
	w.raw(`" port="`)
	w.uint(uint64(d.Port))
	w.raw(`" transports="`)
	for i, t := range d.Transports {
		if i > 0 {
			w.raw(",")
		}
		w.raw(string(t))
	}
	w.raw(`"/>` + crlf)
}

func (w *xmlWriter) brokers(bs []BrokerAddress) {
	w.raw(" <broker>" + crlf)
	for _, b := range bs {
		w.addrLine("  ", b.Type, b.Value)
	}
	w.raw(" </broker>" + crlf)
}

func addrType(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}
