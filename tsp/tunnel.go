package tsp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/dstmgw/dstm/internal/dnsname"
)

// TunnelType is the type attribute of <tunnel>, lower case on the wire in
// XML and upper case in CAPABILITY tokens.
type TunnelType string

// Tunnel types. The v4 family is served; the v6 family (IPv6 tunnel
// broker modes) is recognised only to answer 303.
const (
	TypeV4V6     TunnelType = "v4v6"     // IPv4 in IPv6 (IP protocol 4), classic DSTM (gogoc)
	TypeV4DTLSV6 TunnelType = "v4dtlsv6" // IPv4 in DTLS over UDP over IPv6 (ours)
	TypeV4TLSV6  TunnelType = "v4tlsv6"  // IPv4 in the TSP-SSL TLS stream (ours)
	TypeV4AnyV6  TunnelType = "v4anyv6"  // DTLS with TLS fallback, as the server offers (ours)
	TypeV6V4     TunnelType = "v6v4"
	TypeV6UDPV4  TunnelType = "v6udpv4"
	TypeV6AnyV4  TunnelType = "v6anyv4"
)

// ParseTunnelType maps a type name in any case to a known TunnelType.
func ParseTunnelType(s string) (TunnelType, error) {
	t := TunnelType(strings.ToLower(s))
	switch t {
	case TypeV4V6, TypeV4DTLSV6, TypeV4TLSV6, TypeV4AnyV6, TypeV6V4, TypeV6UDPV4, TypeV6AnyV4:
		return t, nil
	}
	return "", fmt.Errorf("%w: unknown tunnel type %q", ErrMalformed, s)
}

// Servable reports whether t is an IPv4-in-IPv6 type this project serves.
func (t TunnelType) Servable() bool {
	return t == TypeV4V6 || t.Extended()
}

// Extended reports whether t is one of our authenticated types, whose
// offers carry the extensions (mtu, data, routes, IPv4 DNS).
func (t TunnelType) Extended() bool {
	return t == TypeV4DTLSV6 || t == TypeV4TLSV6 || t == TypeV4AnyV6
}

// Action is the action attribute of <tunnel>.
type Action string

// Tunnel actions.
const (
	ActionCreate Action = "create"
	ActionInfo   Action = "info"
	ActionAccept Action = "accept"
	ActionDelete Action = "delete"
	ActionReject Action = "reject"
)

func parseAction(s string) (Action, error) {
	a := Action(strings.ToLower(s))
	switch a {
	case ActionCreate, ActionInfo, ActionAccept, ActionDelete, ActionReject:
		return a, nil
	}
	return "", fmt.Errorf("%w: unknown tunnel action %q", ErrMalformed, s)
}

// Limits on repeated elements.
const (
	MaxRoutes     = 64                 // <routes> entries
	MaxDNSServers = 4                  // <dns_server> addresses
	MaxDNSDomains = dnsname.MaxDomains // <dns_domains> entries
	TokenLen      = 32                 // bytes of the data-channel session token
)

// Tunnel is the <tunnel> element of every action; zero values are absent.
type Tunnel struct {
	Action   Action
	Type     TunnelType
	Proxy    string // "yes" or "no" in requests; "" = absent
	Lifetime uint32 // lease seconds in offers; 0 = absent
	MTU      uint16 // our extension for authenticated types; 0 = absent
	Server   *Endpoint
	Client   *ClientInfo
	Data     *DataChannel
	Brokers  []BrokerAddress // redirect list (<broker>)
}

// Endpoint is the <server> element.
type Endpoint struct {
	IPv4 netip.Addr // the TEP's inner IPv4 (tunnel peer)
	IPv6 netip.Addr // the TEP's outer IPv6 endpoint
}

// ClientInfo is the <client> element.
type ClientInfo struct {
	IPv4       netip.Addr   // the leased address (offer)
	IPv6       netip.Addr   // the client's outer IPv6 endpoint
	DN         string       // optional DNS name
	Keepalive  *Keepalive   // the client's wish in a request, the rule in an offer
	DNSServers []netip.Addr // IPv4 ones only in offers of extended types
	Router     *Router
	Routes     []netip.Prefix // split-tunnel routes (extended types); nil: full tunnel
	// DNSDomains are search domains, or routing-only ones prefixed "~" (internal/dnsname),
	// in offers of extended types only.
	DNSDomains []string
}

// Keepalive is <keepalive interval="N"><address …/></keepalive>.
type Keepalive struct {
	Interval uint32     // seconds
	Address  netip.Addr // ICMP echo target (offer) or placeholder (request)
}

// Router is <router>: in a request a wanted prefix length (and reverse-DNS
// server names), in an offer the routed prefix.
type Router struct {
	PrefixLen int
	Prefix    netip.Addr // invalid in requests
	DNSNames  []string   // request only: <dns_server><address type="dn">
}

// DataChannel is our <data> extension binding the data channel to the session.
type DataChannel struct {
	Token      [TokenLen]byte
	Port       uint16
	Transports []TunnelType // v4dtlsv6 and/or v4tlsv6, in preference order
}

// BrokerAddress is one <broker><address type="…"> entry of a redirect.
type BrokerAddress struct {
	Type  string // "ipv4", "ipv6" or "dn"
	Value string
}

// validDN reports whether s is a plausible DNS name: letters, digits, '-'
// and '.', 1–253 bytes. Keeps XML output free of markup characters.
func validDN(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func isV4(a netip.Addr) bool { return a.Is4() }
func isV6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() && a.Zone() == "" }

// checkBroker validates one redirect entry, for Marshal and ParseTunnel.
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

// Conversions of attribute values and element text for ParseTunnel.

// internAction and internType return the package's constants, so that a
// parsed Tunnel does not keep the input string alive.
func internAction(a Action) Action {
	for _, c := range [...]Action{ActionCreate, ActionInfo, ActionAccept, ActionDelete, ActionReject} {
		if a == c {
			return c
		}
	}
	return a
}

func internType(t TunnelType) TunnelType {
	for _, c := range [...]TunnelType{TypeV4V6, TypeV4DTLSV6, TypeV4TLSV6, TypeV4AnyV6, TypeV6V4, TypeV6UDPV4, TypeV6AnyV4} {
		if t == c {
			return c
		}
	}
	return t
}

// parseUint parses a decimal of at most 10 digits (white space around it allowed).
func parseUint(s string, bits int) (uint64, error) {
	s = strings.TrimSpace(s)
	ok := s != "" && len(s) <= 10
	for i := 0; ok && i < len(s); i++ {
		ok = '0' <= s[i] && s[i] <= '9'
	}
	if !ok {
		return 0, fmt.Errorf("%w: bad number %q", ErrMalformed, s)
	}
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%w: bad number %q", ErrMalformed, s)
	}
	return v, nil
}

// parseAddr parses an <address type="ipv4|ipv6"> value of that family
// (gogoc's validation: no v4-mapped forms, no zones).
func parseAddr(typ, value string) (netip.Addr, error) {
	v := strings.TrimSpace(value)
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: bad address %q", ErrMalformed, v)
	}
	switch strings.ToLower(typ) {
	case "ipv4":
		if isV4(ip) {
			return ip, nil
		}
	case "ipv6":
		if isV6(ip) {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: address %q does not match type %q", ErrMalformed, v, typ)
}

// convertPrefix parses <prefix length="L">A</prefix>; A may be absent
// (requests). L must fit the address family (32 when A is absent).
func convertPrefix(length, value string) (int, netip.Addr, error) {
	n, err := parseUint(length, 8)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	v := strings.TrimSpace(value)
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

// convertRoute parses one <routes><prefix>: a masked IPv4 prefix.
func convertRoute(length, value string) (netip.Prefix, error) {
	n, a, err := convertPrefix(length, value)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !a.IsValid() || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: route must be an IPv4 prefix", ErrMalformed)
	}
	pfx := netip.PrefixFrom(a, n)
	if pfx.Masked() != pfx {
		return netip.Prefix{}, fmt.Errorf("%w: route %s has host bits set", ErrMalformed, pfx)
	}
	return pfx, nil
}

// convertData parses the attributes of <data>: a hex token of TokenLen
// bytes, a port and one or two data transports.
func convertData(token, port, transports string) (*DataChannel, error) {
	d := &DataChannel{}
	if len(token) != 2*TokenLen {
		return nil, fmt.Errorf("%w: data token must be %d hex bytes", ErrMalformed, TokenLen)
	}
	for i := range d.Token {
		hi, ok1 := unhex(token[2*i])
		lo, ok2 := unhex(token[2*i+1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: data token must be %d hex bytes", ErrMalformed, TokenLen)
		}
		d.Token[i] = hi<<4 | lo
	}
	v, err := parseUint(port, 16)
	if err != nil || v == 0 {
		return nil, fmt.Errorf("%w: bad data port", ErrMalformed)
	}
	d.Port = uint16(v)
	for rest, more := transports, true; more; {
		var s string
		s, rest, more = strings.Cut(rest, ",")
		t, err := ParseTunnelType(strings.TrimSpace(s))
		if err != nil || (t != TypeV4DTLSV6 && t != TypeV4TLSV6) {
			return nil, fmt.Errorf("%w: bad data transport %q", ErrMalformed, s)
		}
		if len(d.Transports) == 2 {
			return nil, fmt.Errorf("%w: too many data transports", ErrMalformed)
		}
		if d.Transports == nil {
			d.Transports = make([]TunnelType, 0, 2)
		}
		d.Transports = append(d.Transports, internType(t))
	}
	return d, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
