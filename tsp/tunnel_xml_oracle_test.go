package tsp

// This file holds an encoding/xml implementation of ParseTunnel (see
// docs/decisions/0006), the reference of the differential tests and of
// BenchmarkParseTunnelEncodingXML. Do not "fix" it: its value is that it is
// encoding/xml's behaviour.

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

func oracleCheckBroker(b BrokerAddress) error {
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

// XML decoding structures (tolerant of element order, unknown elements and
// white space; strict about values).
type (
	oxTunnel struct {
		XMLName  xml.Name    `xml:"tunnel"`
		Action   string      `xml:"action,attr"`
		Type     string      `xml:"type,attr"`
		Proxy    string      `xml:"proxy,attr"`
		Lifetime string      `xml:"lifetime,attr"`
		MTU      string      `xml:"mtu,attr"`
		Server   *oxAddrList `xml:"server"`
		Client   *oxClient   `xml:"client"`
		Data     *oxData     `xml:"data"`
		Broker   *oxAddrList `xml:"broker"`
	}
	oxAddress struct {
		Type  string `xml:"type,attr"`
		Value string `xml:",chardata"`
	}
	oxAddrList struct {
		Addresses []oxAddress `xml:"address"`
	}
	oxClient struct {
		Addresses []oxAddress `xml:"address"`
		Keepalive *struct {
			Interval  string      `xml:"interval,attr"`
			Addresses []oxAddress `xml:"address"`
		} `xml:"keepalive"`
		DNSServer *oxAddrList `xml:"dns_server"`
		Router    *struct {
			Prefix    *oxPrefix   `xml:"prefix"`
			DNSServer *oxAddrList `xml:"dns_server"`
		} `xml:"router"`
		Routes *struct {
			Prefixes []oxPrefix `xml:"prefix"`
		} `xml:"routes"`
		DNSDomains *struct {
			Domains []string `xml:"domain"`
		} `xml:"dns_domains"`
	}
	oxPrefix struct {
		Length string `xml:"length,attr"`
		Value  string `xml:",chardata"`
	}
	oxData struct {
		Token      string `xml:"token,attr"`
		Port       string `xml:"port,attr"`
		Transports string `xml:"transports,attr"`
	}
)

// oracleParseTunnel decodes one <tunnel> element (leading/trailing white space
// allowed, nothing else after it). Element order and unknown elements are
// tolerated; attribute values, addresses and numbers are checked strictly.
func oracleParseTunnel(b []byte) (*Tunnel, error) {
	if len(b) > maxContentLength {
		return nil, fmt.Errorf("%w: tunnel element too large", ErrMalformed)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var x oxTunnel
	if err := d.Decode(&x); err != nil {
		return nil, fmt.Errorf("%w: xml: %w", ErrMalformed, err)
	}
	if err := oracleExpectEOF(d); err != nil {
		return nil, err
	}
	return x.oracleConvert()
}

func oracleExpectEOF(d *xml.Decoder) error {
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

func (x *oxTunnel) oracleConvert() (*Tunnel, error) {
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
	if err := t.oracleConvertAttrs(x); err != nil {
		return nil, err
	}
	if x.Server != nil {
		if t.Server, err = oracleConvertEndpoint(x.Server); err != nil {
			return nil, err
		}
	}
	if x.Client != nil {
		if t.Client, err = oracleConvertClient(x.Client); err != nil {
			return nil, err
		}
	}
	if x.Data != nil {
		if t.Data, err = oracleConvertData(x.Data); err != nil {
			return nil, err
		}
	}
	if x.Broker != nil {
		if t.Brokers, err = oracleConvertBrokers(x.Broker); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Tunnel) oracleConvertAttrs(x *oxTunnel) error {
	switch p := strings.ToLower(x.Proxy); p {
	case "", "yes", "no":
		t.Proxy = p
	default:
		return fmt.Errorf("%w: proxy must be yes or no", ErrMalformed)
	}
	if x.Lifetime != "" {
		v, err := oracleParseUint(x.Lifetime, 32)
		if err != nil {
			return err
		}
		t.Lifetime = uint32(v)
	}
	if x.MTU != "" {
		v, err := oracleParseUint(x.MTU, 16)
		if err != nil {
			return err
		}
		t.MTU = uint16(v)
	}
	return nil
}

func oracleParseUint(s string, bits int) (uint64, error) {
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

// oracleParseAddr parses an <address type="ipv4|ipv6"> value and checks that the
// family matches the type (gogoc's validation: no v4-mapped forms, no
// zones).
func oracleParseAddr(a oxAddress) (netip.Addr, error) {
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

func oracleConvertEndpoint(x *oxAddrList) (*Endpoint, error) {
	e := &Endpoint{}
	for _, a := range x.Addresses {
		ip, err := oracleParseAddr(a)
		if err != nil {
			return nil, err
		}
		if err := oracleSetOnce(&e.IPv4, &e.IPv6, ip); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// oracleSetOnce stores ip in v4 or v6 by family, refusing a second address of
// the same family.
func oracleSetOnce(v4, v6 *netip.Addr, ip netip.Addr) error {
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

func oracleConvertClient(x *oxClient) (*ClientInfo, error) {
	c := &ClientInfo{}
	for _, a := range x.Addresses {
		if strings.EqualFold(a.Type, "dn") {
			c.DN = strings.TrimSpace(a.Value)
			if !validDN(c.DN) {
				return nil, fmt.Errorf("%w: bad client dn", ErrMalformed)
			}
			continue
		}
		ip, err := oracleParseAddr(a)
		if err != nil {
			return nil, err
		}
		if err := oracleSetOnce(&c.IPv4, &c.IPv6, ip); err != nil {
			return nil, err
		}
	}
	var err error
	if x.Keepalive != nil {
		if c.Keepalive, err = oracleConvertKeepalive(x.Keepalive.Interval, x.Keepalive.Addresses); err != nil {
			return nil, err
		}
	}
	if x.DNSServer != nil {
		if c.DNSServers, err = oracleConvertDNS(x.DNSServer); err != nil {
			return nil, err
		}
	}
	if x.Router != nil {
		if c.Router, err = oracleConvertRouter(x.Router.Prefix, x.Router.DNSServer); err != nil {
			return nil, err
		}
	}
	if x.Routes != nil {
		if c.Routes, err = oracleConvertRoutes(x.Routes.Prefixes); err != nil {
			return nil, err
		}
	}
	if x.DNSDomains != nil {
		if c.DNSDomains, err = oracleConvertDomains(x.DNSDomains.Domains); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func oracleConvertKeepalive(interval string, addrs []oxAddress) (*Keepalive, error) {
	k := &Keepalive{}
	if interval != "" {
		v, err := oracleParseUint(interval, 32)
		if err != nil {
			return nil, err
		}
		k.Interval = uint32(v)
	}
	if len(addrs) > 1 {
		return nil, fmt.Errorf("%w: several keepalive addresses", ErrMalformed)
	}
	if len(addrs) == 1 {
		ip, err := oracleParseAddr(addrs[0])
		if err != nil {
			return nil, err
		}
		k.Address = ip
	}
	return k, nil
}

func oracleConvertDNS(x *oxAddrList) ([]netip.Addr, error) {
	if len(x.Addresses) > MaxDNSServers {
		return nil, fmt.Errorf("%w: too many dns servers", ErrMalformed)
	}
	out := make([]netip.Addr, 0, len(x.Addresses))
	for _, a := range x.Addresses {
		ip, err := oracleParseAddr(a)
		if err != nil {
			return nil, err
		}
		out = append(out, ip)
	}
	return out, nil
}

func oracleConvertRouter(p *oxPrefix, dns *oxAddrList) (*Router, error) {
	r := &Router{}
	if p != nil {
		n, addr, err := oracleConvertPrefix(*p)
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

// oracleConvertPrefix parses <prefix length="L">A</prefix>; A may be absent
// (requests). L must fit the address family (32 when A is absent).
func oracleConvertPrefix(p oxPrefix) (int, netip.Addr, error) {
	n, err := oracleParseUint(p.Length, 8)
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

func oracleConvertRoutes(ps []oxPrefix) ([]netip.Prefix, error) {
	if len(ps) > MaxRoutes {
		return nil, fmt.Errorf("%w: too many routes", ErrMalformed)
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		n, a, err := oracleConvertPrefix(p)
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

// oracleConvertDomains checks <dns_domains> entries by the rules written out here, not
// with dnsname.Check: an optional "~", then "." after it or LDH/underscore labels.
func oracleConvertDomains(ds []string) ([]string, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	if len(ds) > MaxDNSDomains {
		return nil, fmt.Errorf("%w: too many dns domains", ErrMalformed)
	}
	label := regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		d = strings.TrimSpace(d)
		name, routeOnly := strings.CutPrefix(d, "~")
		ok := name == "." && routeOnly || name != "" && len(name) <= 253
		if name != "." {
			for _, l := range strings.Split(name, ".") {
				ok = ok && label.MatchString(l)
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: bad dns domain", ErrMalformed)
		}
		out = append(out, d)
	}
	return out, nil
}

func oracleConvertData(x *oxData) (*DataChannel, error) {
	d := &DataChannel{}
	tok, err := hex.DecodeString(x.Token)
	if err != nil || len(tok) != TokenLen {
		return nil, fmt.Errorf("%w: data token must be %d hex bytes", ErrMalformed, TokenLen)
	}
	copy(d.Token[:], tok)
	port, err := oracleParseUint(x.Port, 16)
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

func oracleConvertBrokers(x *oxAddrList) ([]BrokerAddress, error) {
	if len(x.Addresses) > MaxRoutes {
		return nil, fmt.Errorf("%w: too many brokers", ErrMalformed)
	}
	out := make([]BrokerAddress, 0, len(x.Addresses))
	for _, a := range x.Addresses {
		b := BrokerAddress{Type: strings.ToLower(a.Type), Value: strings.TrimSpace(a.Value)}
		if err := oracleCheckBroker(b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
