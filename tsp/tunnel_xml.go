package tsp

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Marshal encodes the tunnel element followed by CRLF in the exact layouts
// gogoc produces and accepts: a create request in gogoc's request layout
// (xml_req.c), every other action in the offer layout of tsp-wire-notes
// §3.9. No XML prolog is ever written.
func (t *Tunnel) Marshal() ([]byte, error) {
	if err := t.checkMarshal(); err != nil {
		return nil, err
	}
	w := &xmlWriter{}
	w.openTunnel(t)
	if !t.hasChildren() {
		w.raw("</tunnel>\r\n")
		return w.b.Bytes(), nil
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
	return w.b.Bytes(), nil
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
	return nil
}

// checkFamilies verifies that every address sits in a field of its family
// and that routes are masked IPv4 prefixes.
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

func checkBroker(b BrokerAddress) error {
	var ok bool
	switch b.Type {
	case "ipv4":
		a, err := netip.ParseAddr(b.Value)
		ok = err == nil && isV4(a)
	case "ipv6":
		a, err := netip.ParseAddr(b.Value)
		ok = err == nil && isV6(a)
	case "dn":
		ok = validDN(b.Value)
	}
	if !ok {
		return fmt.Errorf("%w: bad broker address", ErrMalformed)
	}
	return nil
}

type xmlWriter struct{ b bytes.Buffer }

func (w *xmlWriter) raw(s string) { w.b.WriteString(s) }

func (w *xmlWriter) attr(name, val string) { w.raw(" " + name + `="` + val + `"`) }

func (w *xmlWriter) addr(indent, typ, val string) {
	w.raw(indent + `<address type="` + typ + `">` + val + "</address>" + crlf)
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
		w.attr("lifetime", strconv.FormatUint(uint64(t.Lifetime), 10))
	}
	if t.MTU != 0 {
		w.attr("mtu", strconv.FormatUint(uint64(t.MTU), 10))
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
		w.addr(indent, "ipv4", v4.String())
	}
	if v6.IsValid() {
		w.addr(indent, "ipv6", v6.String())
	}
}

// requestClient writes <client> in gogoc's request layout (address,
// keepalive, router), followed by elements gogoc never sends.
func (w *xmlWriter) requestClient(c *ClientInfo) {
	w.raw(" <client>" + crlf)
	w.endpointAddrs("  ", c.IPv4, c.IPv6)
	w.dn(c.DN)
	if k := c.Keepalive; k != nil {
		w.raw(`  <keepalive interval="` + strconv.FormatUint(uint64(k.Interval), 10) + `">` + crlf)
		if k.Address.IsValid() {
			w.addr("    ", addrType(k.Address), k.Address.String())
		}
		w.raw("  </keepalive>" + crlf)
	}
	w.router(c.Router)
	w.dnsServers(c.DNSServers)
	w.routes(c.Routes)
	w.raw(" </client>" + crlf)
}

func (w *xmlWriter) dn(dn string) {
	if dn != "" {
		w.addr("  ", "dn", dn)
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
			w.addr("     ", "dn", n)
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
		w.raw(`<address type="` + addrType(a) + `">` + a.String() + "</address>")
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

// offerClient writes <client> in the offer layout gogoc accepted (§3.9),
// then our extensions.
func (w *xmlWriter) offerClient(c *ClientInfo) {
	w.raw(" <client>" + crlf)
	w.endpointAddrs("  ", c.IPv4, c.IPv6)
	w.dn(c.DN)
	if k := c.Keepalive; k != nil {
		w.raw(`  <keepalive interval="` + strconv.FormatUint(uint64(k.Interval), 10) + `">`)
		if k.Address.IsValid() {
			w.raw(`<address type="` + addrType(k.Address) + `">` + k.Address.String() + "</address>")
		}
		w.raw("</keepalive>" + crlf)
	}
	w.dnsServers(c.DNSServers)
	w.router(c.Router)
	w.routes(c.Routes)
	w.raw(" </client>" + crlf)
}

func (w *xmlWriter) prefix(indent string, bits int, a netip.Addr) {
	l := strconv.Itoa(bits)
	if !a.IsValid() {
		w.raw(indent + `<prefix length="` + l + `"/>` + crlf)
		return
	}
	w.raw(indent + `<prefix length="` + l + `">` + a.String() + "</prefix>" + crlf)
}

func (w *xmlWriter) data(d *DataChannel) {
	ts := make([]string, len(d.Transports))
	for i, t := range d.Transports {
		ts[i] = string(t)
	}
	w.raw(` <data token="` + hex.EncodeToString(d.Token[:]) + `" port="` + strconv.Itoa(int(d.Port)) +
		`" transports="` + strings.Join(ts, ",") + `"/>` + crlf)
}

func (w *xmlWriter) brokers(bs []BrokerAddress) {
	w.raw(" <broker>" + crlf)
	for _, b := range bs {
		w.addr("  ", b.Type, b.Value)
	}
	w.raw(" </broker>" + crlf)
}

func addrType(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// XML decoding structures (tolerant of element order, unknown elements and
// white space; strict about values).
type (
	xTunnel struct {
		XMLName  xml.Name   `xml:"tunnel"`
		Action   string     `xml:"action,attr"`
		Type     string     `xml:"type,attr"`
		Proxy    string     `xml:"proxy,attr"`
		Lifetime string     `xml:"lifetime,attr"`
		MTU      string     `xml:"mtu,attr"`
		Server   *xAddrList `xml:"server"`
		Client   *xClient   `xml:"client"`
		Data     *xData     `xml:"data"`
		Broker   *xAddrList `xml:"broker"`
	}
	xAddress struct {
		Type  string `xml:"type,attr"`
		Value string `xml:",chardata"`
	}
	xAddrList struct {
		Addresses []xAddress `xml:"address"`
	}
	xClient struct {
		Addresses []xAddress `xml:"address"`
		Keepalive *struct {
			Interval  string     `xml:"interval,attr"`
			Addresses []xAddress `xml:"address"`
		} `xml:"keepalive"`
		DNSServer *xAddrList `xml:"dns_server"`
		Router    *struct {
			Prefix    *xPrefix   `xml:"prefix"`
			DNSServer *xAddrList `xml:"dns_server"`
		} `xml:"router"`
		Routes *struct {
			Prefixes []xPrefix `xml:"prefix"`
		} `xml:"routes"`
	}
	xPrefix struct {
		Length string `xml:"length,attr"`
		Value  string `xml:",chardata"`
	}
	xData struct {
		Token      string `xml:"token,attr"`
		Port       string `xml:"port,attr"`
		Transports string `xml:"transports,attr"`
	}
)

// ParseTunnel decodes one <tunnel> element (leading/trailing white space
// allowed, nothing else after it). Element order and unknown elements are
// tolerated; attribute values, addresses and numbers are checked strictly.
func ParseTunnel(b []byte) (*Tunnel, error) {
	if len(b) > maxContentLength {
		return nil, fmt.Errorf("%w: tunnel element too large", ErrMalformed)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var x xTunnel
	if err := d.Decode(&x); err != nil {
		return nil, fmt.Errorf("%w: xml: %w", ErrMalformed, err)
	}
	if err := expectEOF(d); err != nil {
		return nil, err
	}
	return x.convert()
}

func expectEOF(d *xml.Decoder) error {
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: xml: %w", ErrMalformed, err)
		}
		if cd, ok := tok.(xml.CharData); !ok || len(bytes.TrimSpace(cd)) != 0 {
			return fmt.Errorf("%w: data after </tunnel>", ErrMalformed)
		}
	}
}

func (x *xTunnel) convert() (*Tunnel, error) {
	a, err := parseAction(x.Action)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{Action: a}
	if x.Type != "" {
		if t.Type, err = ParseTunnelType(x.Type); err != nil {
			return nil, err
		}
	}
	if err := t.convertAttrs(x); err != nil {
		return nil, err
	}
	if x.Server != nil {
		if t.Server, err = convertEndpoint(x.Server); err != nil {
			return nil, err
		}
	}
	if x.Client != nil {
		if t.Client, err = convertClient(x.Client); err != nil {
			return nil, err
		}
	}
	if x.Data != nil {
		if t.Data, err = convertData(x.Data); err != nil {
			return nil, err
		}
	}
	if x.Broker != nil {
		if t.Brokers, err = convertBrokers(x.Broker); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Tunnel) convertAttrs(x *xTunnel) error {
	switch p := strings.ToLower(x.Proxy); p {
	case "", "yes", "no":
		t.Proxy = p
	default:
		return fmt.Errorf("%w: proxy must be yes or no", ErrMalformed)
	}
	if x.Lifetime != "" {
		v, err := parseUint(x.Lifetime, 32)
		if err != nil {
			return err
		}
		t.Lifetime = uint32(v)
	}
	if x.MTU != "" {
		v, err := parseUint(x.MTU, 16)
		if err != nil {
			return err
		}
		t.MTU = uint16(v)
	}
	return nil
}

func parseUint(s string, bits int) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 10 || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("%w: bad number %q", ErrMalformed, s)
	}
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%w: bad number %q", ErrMalformed, s)
	}
	return v, nil
}

// parseAddr parses an <address type="ipv4|ipv6"> value and checks that the
// family matches the type (gogoc's validation: no v4-mapped forms, no
// zones).
func parseAddr(a xAddress) (netip.Addr, error) {
	v := strings.TrimSpace(a.Value)
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: bad address %q", ErrMalformed, v)
	}
	switch strings.ToLower(a.Type) {
	case "ipv4":
		if isV4(ip) {
			return ip, nil
		}
	case "ipv6":
		if isV6(ip) {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: address %q does not match type %q", ErrMalformed, v, a.Type)
}

func convertEndpoint(x *xAddrList) (*Endpoint, error) {
	e := &Endpoint{}
	for _, a := range x.Addresses {
		ip, err := parseAddr(a)
		if err != nil {
			return nil, err
		}
		if err := setOnce(&e.IPv4, &e.IPv6, ip); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// setOnce stores ip in v4 or v6 by family, refusing a second address of
// the same family.
func setOnce(v4, v6 *netip.Addr, ip netip.Addr) error {
	dst := v6
	if ip.Is4() {
		dst = v4
	}
	if dst.IsValid() {
		return fmt.Errorf("%w: duplicate address", ErrMalformed)
	}
	*dst = ip
	return nil
}

func convertClient(x *xClient) (*ClientInfo, error) {
	c := &ClientInfo{}
	for _, a := range x.Addresses {
		if strings.EqualFold(a.Type, "dn") {
			c.DN = strings.TrimSpace(a.Value)
			if !validDN(c.DN) {
				return nil, fmt.Errorf("%w: bad client dn", ErrMalformed)
			}
			continue
		}
		ip, err := parseAddr(a)
		if err != nil {
			return nil, err
		}
		if err := setOnce(&c.IPv4, &c.IPv6, ip); err != nil {
			return nil, err
		}
	}
	var err error
	if x.Keepalive != nil {
		if c.Keepalive, err = convertKeepalive(x.Keepalive.Interval, x.Keepalive.Addresses); err != nil {
			return nil, err
		}
	}
	if x.DNSServer != nil {
		if c.DNSServers, err = convertDNS(x.DNSServer); err != nil {
			return nil, err
		}
	}
	if x.Router != nil {
		if c.Router, err = convertRouter(x.Router.Prefix, x.Router.DNSServer); err != nil {
			return nil, err
		}
	}
	if x.Routes != nil {
		if c.Routes, err = convertRoutes(x.Routes.Prefixes); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func convertKeepalive(interval string, addrs []xAddress) (*Keepalive, error) {
	k := &Keepalive{}
	if interval != "" {
		v, err := parseUint(interval, 32)
		if err != nil {
			return nil, err
		}
		k.Interval = uint32(v)
	}
	if len(addrs) > 1 {
		return nil, fmt.Errorf("%w: several keepalive addresses", ErrMalformed)
	}
	if len(addrs) == 1 {
		ip, err := parseAddr(addrs[0])
		if err != nil {
			return nil, err
		}
		k.Address = ip
	}
	return k, nil
}

func convertDNS(x *xAddrList) ([]netip.Addr, error) {
	if len(x.Addresses) > MaxDNSServers {
		return nil, fmt.Errorf("%w: too many dns servers", ErrMalformed)
	}
	out := make([]netip.Addr, 0, len(x.Addresses))
	for _, a := range x.Addresses {
		ip, err := parseAddr(a)
		if err != nil {
			return nil, err
		}
		out = append(out, ip)
	}
	return out, nil
}

func convertRouter(p *xPrefix, dns *xAddrList) (*Router, error) {
	r := &Router{}
	if p != nil {
		n, addr, err := convertPrefix(*p)
		if err != nil {
			return nil, err
		}
		r.PrefixLen, r.Prefix = n, addr
	}
	if dns != nil {
		if len(dns.Addresses) > MaxDNSServers {
			return nil, fmt.Errorf("%w: too many router dns names", ErrMalformed)
		}
		for _, a := range dns.Addresses {
			v := strings.TrimSpace(a.Value)
			if !strings.EqualFold(a.Type, "dn") || !validDN(v) {
				return nil, fmt.Errorf("%w: bad router dns name", ErrMalformed)
			}
			r.DNSNames = append(r.DNSNames, v)
		}
	}
	return r, nil
}

// convertPrefix parses <prefix length="L">A</prefix>; A may be absent
// (requests). L must fit the address family (32 when A is absent).
func convertPrefix(p xPrefix) (int, netip.Addr, error) {
	n, err := parseUint(p.Length, 8)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	v := strings.TrimSpace(p.Value)
	if v == "" {
		if n > 32 {
			return 0, netip.Addr{}, fmt.Errorf("%w: bad prefix length", ErrMalformed)
		}
		return int(n), netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" || a.Is4In6() || int(n) > a.BitLen() {
		return 0, netip.Addr{}, fmt.Errorf("%w: bad prefix %q/%d", ErrMalformed, v, n)
	}
	return int(n), a, nil
}

func convertRoutes(ps []xPrefix) ([]netip.Prefix, error) {
	if len(ps) > MaxRoutes {
		return nil, fmt.Errorf("%w: too many routes", ErrMalformed)
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		n, a, err := convertPrefix(p)
		if err != nil {
			return nil, err
		}
		if !a.IsValid() || !a.Is4() {
			return nil, fmt.Errorf("%w: route must be an IPv4 prefix", ErrMalformed)
		}
		pfx := netip.PrefixFrom(a, n)
		if pfx.Masked() != pfx {
			return nil, fmt.Errorf("%w: route %s has host bits set", ErrMalformed, pfx)
		}
		out = append(out, pfx)
	}
	return out, nil
}

func convertData(x *xData) (*DataChannel, error) {
	d := &DataChannel{}
	tok, err := hex.DecodeString(x.Token)
	if err != nil || len(tok) != TokenLen {
		return nil, fmt.Errorf("%w: data token must be %d hex bytes", ErrMalformed, TokenLen)
	}
	copy(d.Token[:], tok)
	port, err := parseUint(x.Port, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("%w: bad data port", ErrMalformed)
	}
	d.Port = uint16(port)
	for _, s := range strings.Split(x.Transports, ",") {
		t, err := ParseTunnelType(strings.TrimSpace(s))
		if err != nil || (t != TypeV4DTLSV6 && t != TypeV4TLSV6) {
			return nil, fmt.Errorf("%w: bad data transport %q", ErrMalformed, s)
		}
		d.Transports = append(d.Transports, t)
	}
	if len(d.Transports) > 2 {
		return nil, fmt.Errorf("%w: too many data transports", ErrMalformed)
	}
	return d, nil
}

func convertBrokers(x *xAddrList) ([]BrokerAddress, error) {
	if len(x.Addresses) > MaxRoutes {
		return nil, fmt.Errorf("%w: too many brokers", ErrMalformed)
	}
	out := make([]BrokerAddress, 0, len(x.Addresses))
	for _, a := range x.Addresses {
		b := BrokerAddress{Type: strings.ToLower(a.Type), Value: strings.TrimSpace(a.Value)}
		if err := checkBroker(b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
