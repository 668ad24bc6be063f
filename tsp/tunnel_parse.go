package tsp

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/dstmgw/dstm/internal/dnsname"
)

// The <tunnel> tree is read from the XML subset with the tree semantics of
// encoding/xml decoding into the structs of tunnel_xml_oracle_test.go
// (FuzzParseTunnelDifferential compares the two): unknown elements and
// attributes are skipped, text is concatenated around child elements, and a
// repeated single-valued element is merged into the first (lists grow, later
// attributes win). An empty <dns_server> or <broker> reads as nil, since
// Marshal writes nothing for both; an empty <routes> is a split tunnel
// without routes.

// ParseTunnel decodes one <tunnel> element of at most maxContentLength
// bytes, white space around it allowed. Values, addresses and numbers are
// checked strictly; every error wraps ErrMalformed.
func ParseTunnel(b []byte) (*Tunnel, error) {
	if len(b) > maxContentLength {
		return nil, fmt.Errorf("%w: tunnel element too large", ErrMalformed)
	}
	p := tunnelParser{xmlScanner: xmlScanner{s: string(b)}}
	if err := p.document("tunnel", p.tunnel); err != nil {
		return nil, err
	}
	return p.finish()
}

// tunnelParser builds a Tunnel from the tokens of its xmlScanner.
type tunnelParser struct {
	xmlScanner

	t *Tunnel
	// Single-valued children merged over repeated elements, converted
	// once the whole element is read.
	haveKA                         bool
	kaInterval                     string
	kaAddrs                        int
	kaType, kaValue                string
	havePrefix                     bool
	prefixLen, prefixValue         string
	haveData                       bool
	dataToken, dataPort, dataTrans string
}

// address reads <address type="…">value</address>.
func (p *tunnelParser) address() (typ, value string, err error) {
	typ, _ = p.attr("type")
	value, err = p.textContent("address")
	return typ, value, err
}

// addresses reads the children of the open element parent, handing the type
// and value of every <address> child to each and skipping the others.
func (p *tunnelParser) addresses(parent string, each func(typ, value string) error) error {
	return p.children(parent, func() error {
		if p.name != "address" {
			return p.skip()
		}
		typ, v, err := p.address()
		if err != nil {
			return err
		}
		return each(typ, v)
	})
}

func (p *tunnelParser) tunnel() error {
	t, err := p.rootAttrs()
	if err != nil {
		return err
	}
	p.t = t
	return p.children("tunnel", func() error {
		switch p.name {
		case "server":
			return p.server()
		case "client":
			return p.client()
		case "data":
			return p.data()
		case "broker":
			return p.broker()
		}
		return p.skip()
	})
}

func (p *tunnelParser) rootAttrs() (*Tunnel, error) {
	action, _ := p.attr("action")
	a, err := parseAction(action)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{Action: internAction(a)}
	if typ, _ := p.attr("type"); typ != "" {
		tt, err := ParseTunnelType(typ)
		if err != nil {
			return nil, err
		}
		t.Type = internType(tt)
	}
	proxy, _ := p.attr("proxy")
	switch strings.ToLower(proxy) {
	case "":
	case "yes":
		t.Proxy = "yes"
	case "no":
		t.Proxy = "no"
	default:
		return nil, fmt.Errorf("%w: proxy must be yes or no", ErrMalformed)
	}
	if s, _ := p.attr("lifetime"); s != "" {
		v, err := parseUint(s, 32)
		if err != nil {
			return nil, err
		}
		t.Lifetime = uint32(v)
	}
	if s, _ := p.attr("mtu"); s != "" {
		v, err := parseUint(s, 16)
		if err != nil {
			return nil, err
		}
		t.MTU = uint16(v)
	}
	return t, nil
}

func (p *tunnelParser) server() error {
	if p.t.Server == nil {
		p.t.Server = &Endpoint{}
	}
	e := p.t.Server
	return p.addresses("server", func(typ, v string) error {
		ip, err := parseAddr(typ, v)
		if err != nil {
			return err
		}
		return setOnce(&e.IPv4, &e.IPv6, ip)
	})
}

func (p *tunnelParser) client() error {
	if p.t.Client == nil {
		p.t.Client = &ClientInfo{}
	}
	c := p.t.Client
	return p.children("client", func() error {
		switch p.name {
		case "address":
			return p.clientAddress(c)
		case "keepalive":
			return p.keepalive()
		case "dns_server":
			return p.dnsServers(c)
		case "router":
			return p.router(c)
		case "routes":
			return p.routes(c)
		case "dns_domains":
			return p.dnsDomains(c)
		}
		return p.skip()
	})
}

func (p *tunnelParser) clientAddress(c *ClientInfo) error {
	typ, v, err := p.address()
	if err != nil {
		return err
	}
	if strings.EqualFold(typ, "dn") {
		c.DN = strings.TrimSpace(v)
		if !validDN(c.DN) {
			return fmt.Errorf("%w: bad client dn", ErrMalformed)
		}
		return nil
	}
	ip, err := parseAddr(typ, v)
	if err != nil {
		return err
	}
	return setOnce(&c.IPv4, &c.IPv6, ip)
}

// keepalive records <keepalive> for finish, merged over repeated ones.
func (p *tunnelParser) keepalive() error {
	p.haveKA = true
	if v, ok := p.attr("interval"); ok {
		p.kaInterval = v
	}
	return p.addresses("keepalive", func(typ, v string) error {
		if p.kaAddrs++; p.kaAddrs > 1 {
			return fmt.Errorf("%w: several keepalive addresses", ErrMalformed)
		}
		p.kaType, p.kaValue = typ, v
		return nil
	})
}

// dnsServers reads <client><dns_server>; an empty one is nil.
func (p *tunnelParser) dnsServers(c *ClientInfo) error {
	return p.addresses("dns_server", func(typ, v string) error {
		if len(c.DNSServers) == MaxDNSServers {
			return fmt.Errorf("%w: too many dns servers", ErrMalformed)
		}
		ip, err := parseAddr(typ, v)
		if err != nil {
			return err
		}
		if c.DNSServers == nil {
			c.DNSServers = make([]netip.Addr, 0, MaxDNSServers)
		}
		c.DNSServers = append(c.DNSServers, ip)
		return nil
	})
}

// router reads <router>: its <prefix> is recorded for finish, its
// <dns_server> names are appended.
func (p *tunnelParser) router(c *ClientInfo) error {
	if c.Router == nil {
		c.Router = &Router{}
	}
	r := c.Router
	return p.children("router", func() error {
		switch p.name {
		case "prefix":
			p.havePrefix = true
			if v, ok := p.attr("length"); ok {
				p.prefixLen = v
			}
			v, err := p.textContent("prefix")
			p.prefixValue = v
			return err
		case "dns_server":
			return p.addresses("dns_server", func(typ, v string) error {
				if len(r.DNSNames) == MaxDNSServers {
					return fmt.Errorf("%w: too many router dns names", ErrMalformed)
				}
				v = strings.TrimSpace(v)
				if !strings.EqualFold(typ, "dn") || !validDN(v) {
					return fmt.Errorf("%w: bad router dns name", ErrMalformed)
				}
				r.DNSNames = append(r.DNSNames, strings.Clone(v))
				return nil
			})
		}
		return p.skip()
	})
}

func (p *tunnelParser) routes(c *ClientInfo) error {
	if c.Routes == nil {
		c.Routes = make([]netip.Prefix, 0, 4)
	}
	return p.children("routes", func() error {
		if p.name != "prefix" {
			return p.skip()
		}
		length, _ := p.attr("length")
		v, err := p.textContent("prefix")
		if err != nil {
			return err
		}
		if len(c.Routes) == MaxRoutes {
			return fmt.Errorf("%w: too many routes", ErrMalformed)
		}
		pfx, err := convertRoute(length, v)
		if err != nil {
			return err
		}
		c.Routes = append(c.Routes, pfx)
		return nil
	})
}

// dnsDomains reads <client><dns_domains>, one <domain> per entry; an empty one is nil.
func (p *tunnelParser) dnsDomains(c *ClientInfo) error {
	return p.children("dns_domains", func() error {
		if p.name != "domain" {
			return p.skip()
		}
		v, err := p.textContent("domain")
		if err != nil {
			return err
		}
		if len(c.DNSDomains) == MaxDNSDomains {
			return fmt.Errorf("%w: too many dns domains", ErrMalformed)
		}
		v = strings.TrimSpace(v)
		if err := dnsname.Check(v); err != nil {
			return fmt.Errorf("%w: bad dns domain: %w", ErrMalformed, err)
		}
		c.DNSDomains = append(c.DNSDomains, strings.Clone(v))
		return nil
	})
}

// data records the attributes of <data> for finish.
func (p *tunnelParser) data() error {
	p.haveData = true
	if v, ok := p.attr("token"); ok {
		p.dataToken = v
	}
	if v, ok := p.attr("port"); ok {
		p.dataPort = v
	}
	if v, ok := p.attr("transports"); ok {
		p.dataTrans = v
	}
	return p.children("data", p.skip)
}

// broker reads <broker>; an empty one is nil.
func (p *tunnelParser) broker() error {
	return p.addresses("broker", func(typ, v string) error {
		if len(p.t.Brokers) == MaxRoutes {
			return fmt.Errorf("%w: too many brokers", ErrMalformed)
		}
		b := BrokerAddress{Type: strings.ToLower(typ), Value: strings.TrimSpace(v)}
		if err := checkBroker(b); err != nil {
			return err
		}
		switch b.Type { // the constant, not a slice of the input
		case "ipv4":
			b.Type = "ipv4"
		case "ipv6":
			b.Type = "ipv6"
		default:
			b.Type = "dn"
		}
		b.Value = strings.Clone(b.Value)
		if p.t.Brokers == nil {
			p.t.Brokers = make([]BrokerAddress, 0, 2)
		}
		p.t.Brokers = append(p.t.Brokers, b)
		return nil
	})
}

// finish converts the merged single-valued elements.
func (p *tunnelParser) finish() (*Tunnel, error) {
	t := p.t
	if c := t.Client; c != nil {
		if c.DN != "" {
			c.DN = strings.Clone(c.DN)
		}
		if p.haveKA {
			k := &Keepalive{}
			if p.kaInterval != "" {
				v, err := parseUint(p.kaInterval, 32)
				if err != nil {
					return nil, err
				}
				k.Interval = uint32(v)
			}
			if p.kaAddrs == 1 {
				ip, err := parseAddr(p.kaType, p.kaValue)
				if err != nil {
					return nil, err
				}
				k.Address = ip
			}
			c.Keepalive = k
		}
		if p.havePrefix {
			n, a, err := convertPrefix(p.prefixLen, p.prefixValue)
			if err != nil {
				return nil, err
			}
			c.Router.PrefixLen, c.Router.Prefix = n, a
		}
	}
	if p.haveData {
		d, err := convertData(p.dataToken, p.dataPort, p.dataTrans)
		if err != nil {
			return nil, err
		}
		t.Data = d
	}
	return t, nil
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
