package tsp

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
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

// marshalSizeHint estimates the output size generously, so that Marshal
// allocates once for the usual elements.
func (t *Tunnel) marshalSizeHint() int {
	n := 128 // <tunnel …> with all attributes, </tunnel>
	if t.Server != nil {
		n += 160
	}
	if c := t.Client; c != nil {
		n += 256 + len(c.DN) + 64*len(c.DNSServers) + 64*len(c.Routes)
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

// addrLine writes indent, <address …>, CRLF.
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

// The XML subset. ParseTunnel reads exactly what TSP peers send, with a
// small hand-written parser (encoding/xml cost about 12% of a gateway
// session's CPU), that is:
//
//   - optional white space, an optional XML declaration
//     (<?xml version="1.0" [encoding="UTF-8"] [standalone="yes|no"]?>)
//     and white space, then one <tunnel> element, then optional white
//     space and nothing else;
//   - elements with or without content, self-closing tags, attributes in
//     single or double quotes separated by white space, character data
//     with the five predefined entities and numeric character references;
//     CR and CRLF in text become LF, as in encoding/xml.
//
// Rejected as malformed: XML that is not well-formed (bad names,
// unbalanced or mismatched tags, unquoted attributes, '<' or a bare '&' in
// text, "]]>" in character data, characters outside the XML Char
// production, invalid UTF-8), more than one root element, data after
// </tunnel>, and input over maxContentLength bytes. Rejected as
// unsupported (errXMLUnsupported, which also wraps ErrMalformed), the
// deliberate differences from encoding/xml, which accepted all of these:
// well-formed constructs no TSP peer sends (comments, CDATA sections,
// DOCTYPE and other <! declarations, processing instructions other than
// the leading XML declaration, an XML declaration without version="1.0"
// or with another encoding, namespace prefixes i.e. any ':' in a name,
// non-ASCII names, text other than XML white space before or after the
// root element such as a BOM or NBSP, more than maxXMLAttrs attributes on
// an element, nesting deeper than maxXMLDepth) and malformed XML it
// tolerated (duplicate attributes, attributes not separated by white
// space, character references to surrogates, which it turned into
// U+FFFD). docs/protocol.md lists the same.
//
// Tree semantics are those of the former encoding/xml decoding (kept in
// tunnel_xml_oracle_test.go and checked against this parser by
// FuzzParseTunnelDifferential): element order and unknown elements and
// attributes are tolerated, text directly inside an element is
// concatenated around child elements, and a repeated element that maps to
// a single value (<server>, <client>, <keepalive>, <router>, its <prefix>,
// <data>, ...) is merged into the first: lists grow and attributes present
// on the later element overwrite. One deliberate difference: an empty
// <dns_server> or <broker> list reads as absent (nil), not as an empty
// slice, because Marshal writes nothing for both and FuzzParseTunnel's
// round trip failed on it (<routes> keeps the distinction: empty = split
// tunnel without routes, and Marshal writes it).

// errXMLUnsupported marks well-formed XML outside the subset ParseTunnel
// reads. Errors carrying it also wrap ErrMalformed.
var errXMLUnsupported = errors.New("construct outside the TSP XML subset")

// Bounds of the XML subset (the <tunnel> tree is 5 deep, its elements
// carry at most 5 attributes).
const (
	maxXMLDepth = 32
	maxXMLAttrs = 16
)

// ParseTunnel decodes one <tunnel> element (leading/trailing white space
// allowed, nothing else after it). Element order and unknown elements are
// tolerated; attribute values, addresses and numbers are checked strictly.
// Every error wraps ErrMalformed.
func ParseTunnel(b []byte) (*Tunnel, error) {
	if len(b) > maxContentLength {
		return nil, fmt.Errorf("%w: tunnel element too large", ErrMalformed)
	}
	p := tunnelParser{s: string(b)}
	if err := p.document(); err != nil {
		return nil, err
	}
	return p.finish()
}

type xmlToken uint8

const (
	tokEOF xmlToken = iota
	tokText
	tokStart
	tokEnd
)

type xmlAttr struct {
	name string
	raw  string // value between the quotes, validated, not decoded
	esc  bool   // raw holds '&' or CR: decode with xmlText
}

// tunnelParser is a pull tokenizer over the input plus the state of the
// <tunnel> being built.
type tunnelParser struct {
	s     string
	pos   int
	depth int // open elements

	// The last token: tag name, self-closing flag and attributes of a
	// start tag; raw text of character data.
	name  string
	empty bool
	attrs [maxXMLAttrs]xmlAttr
	nattr int
	text  string
	esc   bool

	t *Tunnel
	// Single-valued children merged over repeated elements, converted
	// once the whole element is read (as encoding/xml filled one struct).
	haveKA                         bool
	kaInterval                     string
	kaAddrs                        int
	kaType, kaValue                string
	havePrefix                     bool
	prefixLen, prefixValue         string
	haveData                       bool
	dataToken, dataPort, dataTrans string
}

func (p *tunnelParser) malformed(what string, off int) error {
	return fmt.Errorf("%w: xml: %s at offset %d", ErrMalformed, what, off)
}

func (p *tunnelParser) unsupported(what string, off int) error {
	return fmt.Errorf("%w: xml: %w: %s at offset %d", ErrMalformed, errXMLUnsupported, what, off)
}

// document reads [S] [XMLDecl [S]] <tunnel …> [S] EOF.
func (p *tunnelParser) document() error {
	p.space()
	if strings.HasPrefix(p.s[p.pos:], "<?xml") {
		if err := p.xmlDecl(); err != nil {
			return err
		}
		p.space()
	}
	at := p.pos
	tok, err := p.next()
	if err != nil {
		return err
	}
	switch tok {
	case tokEOF:
		return p.malformed("no element", at)
	case tokText:
		return p.unsupported("text before the root element", at)
	case tokEnd:
		return p.malformed("unexpected end tag", at)
	}
	if p.name != "tunnel" {
		return fmt.Errorf("%w: xml: root element <%s>, want <tunnel>", ErrMalformed, p.name)
	}
	if err := p.tunnel(); err != nil {
		return err
	}
	p.space()
	if p.pos < len(p.s) {
		if strings.TrimSpace(p.s[p.pos:]) == "" {
			return p.unsupported("non-XML white space after </tunnel>", p.pos)
		}
		return fmt.Errorf("%w: data after </tunnel>", ErrMalformed)
	}
	return nil
}

// space skips XML white space and reports whether there was any.
func (p *tunnelParser) space() bool {
	start := p.pos
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\r', '\n':
			p.pos++
			continue
		}
		break
	}
	return p.pos > start
}

// xmlDecl reads <?xml version="1.0" [encoding="UTF-8"] [standalone="…"]?>.
func (p *tunnelParser) xmlDecl() error {
	at := p.pos
	end := strings.Index(p.s[at:], "?>")
	if end < 0 {
		return p.malformed("unterminated XML declaration", at)
	}
	bad := func() error { return p.unsupported("XML declaration other than version 1.0 in UTF-8", at) }
	names := [...]string{"version", "encoding", "standalone"}
	body, seen := p.s[at+len("<?xml"):at+end], 0
	for {
		rest := trimXMLSpace(body)
		if rest == "" {
			break
		}
		if len(rest) == len(body) {
			return bad() // pseudo-attributes need white space before them
		}
		k := seen
		for k < len(names) && !strings.HasPrefix(rest, names[k]) {
			k++
		}
		if k == len(names) || seen == 0 && k != 0 {
			return bad()
		}
		rest = trimXMLSpace(rest[len(names[k]):])
		if rest == "" || rest[0] != '=' {
			return bad()
		}
		rest = trimXMLSpace(rest[1:])
		if rest == "" || rest[0] != '"' && rest[0] != '\'' {
			return bad()
		}
		q := strings.IndexByte(rest[1:], rest[0])
		if q < 0 {
			return bad()
		}
		switch v := rest[1 : 1+q]; k {
		case 0:
			if v != "1.0" {
				return bad()
			}
		case 1:
			if !strings.EqualFold(v, "utf-8") {
				return bad()
			}
		case 2:
			if v != "yes" && v != "no" {
				return bad()
			}
		}
		body, seen = rest[2+q:], k+1
	}
	if seen == 0 {
		return bad()
	}
	p.pos = at + end + len("?>")
	return nil
}

func trimXMLSpace(s string) string { return strings.TrimLeft(s, " \t\r\n") }

// next reads one token. Start tags of elements with content and end tags
// move the depth.
func (p *tunnelParser) next() (xmlToken, error) {
	s := p.s
	if p.pos >= len(s) {
		return tokEOF, nil
	}
	if s[p.pos] != '<' {
		return tokText, p.charData()
	}
	at := p.pos
	if at+1 >= len(s) {
		return 0, p.malformed("unexpected EOF", at)
	}
	switch s[at+1] {
	case '/':
		p.pos += 2
		if err := p.readName(); err != nil {
			return 0, err
		}
		p.space()
		if p.pos >= len(s) || s[p.pos] != '>' {
			return 0, p.malformed("bad end tag", at)
		}
		p.pos++
		p.depth--
		return tokEnd, nil
	case '!':
		return 0, p.unsupported("comment, CDATA section or declaration", at)
	case '?':
		return 0, p.unsupported("processing instruction", at)
	}
	p.pos++
	if err := p.startTag(); err != nil {
		return 0, err
	}
	if !p.empty {
		if p.depth++; p.depth > maxXMLDepth {
			return 0, p.unsupported("elements nested too deep", at)
		}
	}
	return tokStart, nil
}

func isNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

func isNameByte(c byte) bool {
	return isNameStart(c) || '0' <= c && c <= '9' || c == '.' || c == '-'
}

// readName reads an ASCII XML name without ':' into p.name.
func (p *tunnelParser) readName() error {
	s, i := p.s, p.pos
	if i >= len(s) {
		return p.malformed("unexpected EOF", i)
	}
	if !isNameStart(s[i]) {
		if s[i] == ':' || s[i] >= utf8.RuneSelf {
			return p.unsupported("namespace prefix or non-ASCII name", i)
		}
		return p.malformed("expected a name", i)
	}
	j := i + 1
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	if j < len(s) && (s[j] == ':' || s[j] >= utf8.RuneSelf) {
		return p.unsupported("namespace prefix or non-ASCII name", i)
	}
	p.name, p.pos = s[i:j], j
	return nil
}

// startTag reads the rest of a start tag after '<'.
func (p *tunnelParser) startTag() error {
	if err := p.readName(); err != nil {
		return err
	}
	name, s := p.name, p.s
	p.nattr = 0
	for {
		sp := p.space()
		if p.pos >= len(s) {
			return p.malformed("unexpected EOF in a tag", p.pos)
		}
		switch s[p.pos] {
		case '>':
			p.pos++
			p.name, p.empty = name, false
			return nil
		case '/':
			if p.pos+1 >= len(s) || s[p.pos+1] != '>' {
				return p.malformed("expected />", p.pos)
			}
			p.pos += 2
			p.name, p.empty = name, true
			return nil
		}
		if !sp {
			// Any name start encoding/xml would take (':' and non-ASCII names are
			// outside the subset too).
			if c := s[p.pos]; isNameStart(c) || c == ':' || c >= 0x80 {
				return p.unsupported("attributes not separated by white space", p.pos)
			}
			return p.malformed("bad character in a tag", p.pos)
		}
		if err := p.attribute(); err != nil {
			return err
		}
	}
}

// attribute reads name S? = S? quoted-value into p.attrs.
func (p *tunnelParser) attribute() error {
	at := p.pos
	if err := p.readName(); err != nil {
		return err
	}
	name, s := p.name, p.s
	p.space()
	if p.pos >= len(s) || s[p.pos] != '=' {
		return p.malformed("attribute without =", p.pos)
	}
	p.pos++
	p.space()
	if p.pos >= len(s) || s[p.pos] != '"' && s[p.pos] != '\'' {
		return p.malformed("unquoted attribute value", p.pos)
	}
	q := s[p.pos]
	p.pos++
	start := p.pos
	esc, err := p.chars(q)
	if err != nil {
		return err
	}
	raw := s[start:p.pos]
	p.pos++ // closing quote
	for _, a := range p.attrs[:p.nattr] {
		if a.name == name {
			return p.unsupported("duplicate attribute", at)
		}
	}
	if p.nattr == len(p.attrs) {
		return p.unsupported("too many attributes", at)
	}
	p.attrs[p.nattr] = xmlAttr{name: name, raw: raw, esc: esc}
	p.nattr++
	return nil
}

// charData reads character data up to the next '<' or EOF into p.text.
func (p *tunnelParser) charData() error {
	start := p.pos
	esc, err := p.chars('<')
	p.text, p.esc = p.s[start:p.pos], esc
	return err
}

// chars validates text from p.pos up to the byte stop ('<' for character
// data, which may also end at EOF; a quote for attribute values, where
// '<' is an error) and leaves p.pos on stop. It reports whether the text
// needs decoding by xmlText.
func (p *tunnelParser) chars(stop byte) (esc bool, err error) {
	s := p.s
	i := p.pos
	for i < len(s) {
		c := s[i]
		switch {
		case c == stop:
			p.pos = i
			return esc, nil
		case c == '<':
			return false, p.malformed("'<' in an attribute value", i)
		case c == '&':
			_, n, err := p.ref(i)
			if err != nil {
				return false, err
			}
			i += n
			esc = true
		case c == '\r':
			i++
			esc = true
		case c == '>' && stop == '<' && i >= 2 && s[i-1] == ']' && s[i-2] == ']':
			return false, p.malformed("]]> in character data", i-2)
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 || !isXMLChar(r) {
				return false, p.malformed("invalid UTF-8 or character", i)
			}
			i += n
		case c < 0x20 && c != '\t' && c != '\n':
			return false, p.malformed("control character", i)
		default:
			i++
		}
	}
	if stop != '<' {
		return false, p.malformed("unexpected EOF in an attribute value", i)
	}
	p.pos = i
	return esc, nil
}

// isXMLChar is the XML 1.0 Char production.
func isXMLChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' || 0x20 <= r && r <= 0xD7FF ||
		0xE000 <= r && r <= 0xFFFD || 0x10000 <= r && r <= utf8.MaxRune
}

// ref parses the entity or character reference at s[i] == '&' and returns
// the character and the reference's length.
func (p *tunnelParser) ref(i int) (rune, int, error) {
	r, n := xmlRef(p.s[i:])
	switch {
	case n == 0:
		return 0, 0, p.malformed("bad entity or character reference", i)
	case r >= 0xD800 && r <= 0xDFFF:
		return 0, 0, p.unsupported("character reference to a surrogate", i)
	case !isXMLChar(r):
		return 0, 0, p.malformed("character reference outside the XML character range", i)
	}
	return r, n, nil
}

// xmlRef decodes the reference at the start of s ('&'); n = 0 if it is not
// one of the five predefined entities or a numeric reference.
func xmlRef(s string) (r rune, n int) {
	if len(s) < 2 || s[1] != '#' {
		for _, e := range [...]struct {
			name string
			r    rune
		}{{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&apos;", '\''}, {"&quot;", '"'}} {
			if strings.HasPrefix(s, e.name) {
				return e.r, len(e.name)
			}
		}
		return 0, 0
	}
	i, base := 2, rune(10)
	if i < len(s) && s[i] == 'x' {
		i, base = 3, 16
	}
	start := i
	for ; i < len(s); i++ {
		var d rune
		switch c := rune(s[i]); {
		case '0' <= c && c <= '9':
			d = c - '0'
		case base == 16 && 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			d = -1
		}
		if d < 0 {
			break
		}
		if r <= utf8.MaxRune {
			r = r*base + d
		}
	}
	if i == start || i >= len(s) || s[i] != ';' || r > utf8.MaxRune {
		return 0, 0
	}
	return r, i + 1
}

// xmlText decodes validated raw text: references replaced, CR and CRLF
// turned into LF.
func xmlText(raw string, esc bool) string {
	if !esc {
		return raw
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); {
		switch c := raw[i]; c {
		case '&':
			r, n := xmlRef(raw[i:])
			if n == 0 { // cannot happen: chars validated raw
				r, n = '&', 1
			}
			b.WriteRune(r)
			i += n
		case '\r':
			b.WriteByte('\n')
			if i++; i < len(raw) && raw[i] == '\n' {
				i++
			}
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// attr returns the decoded value of the named attribute of the last start
// tag.
func (p *tunnelParser) attr(name string) (string, bool) {
	for _, a := range p.attrs[:p.nattr] {
		if a.name == name {
			return xmlText(a.raw, a.esc), true
		}
	}
	return "", false
}

// endTag checks the end tag just read against the element it closes.
func (p *tunnelParser) endTag(open string) error {
	if p.name != open {
		return fmt.Errorf("%w: xml: element <%s> closed by </%s>", ErrMalformed, open, p.name)
	}
	return nil
}

// children reads the content of the element open (its start tag just
// read) through its end tag, calling child for every child element, which
// must read that element entirely. Character data is validated and
// ignored.
func (p *tunnelParser) children(open string, child func() error) error {
	if p.empty {
		return nil
	}
	for {
		at := p.pos
		tok, err := p.next()
		if err != nil {
			return err
		}
		switch tok {
		case tokEOF:
			return p.malformed("unexpected EOF in <"+open+">", at)
		case tokEnd:
			return p.endTag(open)
		case tokStart:
			if err := child(); err != nil {
				return err
			}
		}
	}
}

// skip reads an element of no interest.
func (p *tunnelParser) skip() error {
	return p.children(p.name, p.skip)
}

// textContent reads an element of no known children and returns its
// character data (direct text concatenated around skipped children).
func (p *tunnelParser) textContent(open string) (string, error) {
	if p.empty {
		return "", nil
	}
	var text string
	var more []byte // text split by child elements (rare)
	for {
		at := p.pos
		tok, err := p.next()
		if err != nil {
			return "", err
		}
		switch tok {
		case tokEOF:
			return "", p.malformed("unexpected EOF in <"+open+">", at)
		case tokEnd:
			if more != nil {
				text = string(more)
			}
			return text, p.endTag(open)
		case tokText:
			switch t := xmlText(p.text, p.esc); {
			case text == "" && more == nil:
				text = t
			case more == nil:
				more = append(append(make([]byte, 0, 2*(len(text)+len(t))), text...), t...)
			default:
				more = append(more, t...)
			}
		case tokStart:
			if err := p.skip(); err != nil {
				return "", err
			}
		}
	}
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

// tunnel reads the root element.
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

// rootAttrs converts the attributes of <tunnel>.
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

// dnsServers reads <client><dns_server>. Unlike <routes>, an empty one is
// the same as none (nil), as Marshal writes it.
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

// broker reads <broker>; an empty one is the same as none (nil), as
// Marshal writes it.
func (p *tunnelParser) broker() error {
	return p.addresses("broker", func(typ, v string) error {
		if len(p.t.Brokers) == MaxRoutes {
			return fmt.Errorf("%w: too many brokers", ErrMalformed)
		}
		b := BrokerAddress{Type: strings.ToLower(typ), Value: strings.TrimSpace(v)}
		if err := checkBroker(b); err != nil {
			return err
		}
		switch b.Type {
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

// parseUint parses a decimal attribute (surrounding white space allowed,
// at most 10 digits).
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

// parseAddr parses an <address type="ipv4|ipv6"> value and checks that the
// family matches the type (gogoc's validation: no v4-mapped forms, no
// zones).
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
