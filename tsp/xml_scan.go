package tsp

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The XML subset: xmlScanner reads what TSP peers send and nothing more, as
// docs/protocol.md lists it. XML that is not well-formed is malformed; what
// encoding/xml accepts and no peer sends (comments, CDATA, namespaces, …),
// and the malformed XML it tolerates (duplicate attributes, references to
// surrogates, …), are refused as errXMLUnsupported.

// errXMLUnsupported marks the refusals of input that encoding/xml
// accepts. Errors carrying it also wrap ErrMalformed.
var errXMLUnsupported = errors.New("construct outside the TSP XML subset")

// Bounds of the XML subset (the <tunnel> tree is 5 deep, its elements
// carry at most 5 attributes).
const (
	maxXMLDepth = 32
	maxXMLAttrs = 16
)

// xmlToken is the kind of token next reads.
type xmlToken uint8

const (
	tokEOF xmlToken = iota
	tokText
	tokStart
	tokEnd
)

// xmlAttr is one attribute of the last start tag.
type xmlAttr struct {
	name string
	raw  string // value between the quotes, validated, not decoded
	esc  bool   // raw holds '&' or CR: decode with xmlText
}

// xmlScanner is a pull tokenizer over one document.
type xmlScanner struct {
	s     string
	pos   int
	depth int // open elements

	// Tag name, self-closing flag and attributes of a start tag; name of an
	// end tag; raw text of character data.
	name  string
	empty bool
	attrs [maxXMLAttrs]xmlAttr
	nattr int
	text  string
	esc   bool
}

func (p *xmlScanner) malformed(what string, off int) error {
	return fmt.Errorf("%w: xml: %s at offset %d", ErrMalformed, what, off)
}

func (p *xmlScanner) unsupported(what string, off int) error {
	return fmt.Errorf("%w: xml: %w: %s at offset %d", ErrMalformed, errXMLUnsupported, what, off)
}

// document reads [S] [XMLDecl [S]] <root …> [S] EOF. It calls element
// once the start tag of root is read; element reads the rest of it.
func (p *xmlScanner) document(root string, element func() error) error {
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
	if p.name != root {
		return fmt.Errorf("%w: xml: root element <%s>, want <%s>", ErrMalformed, p.name, root)
	}
	if err := element(); err != nil {
		return err
	}
	p.space()
	if p.pos < len(p.s) {
		if strings.TrimSpace(p.s[p.pos:]) == "" {
			return p.unsupported("non-XML white space after </"+root+">", p.pos)
		}
		return fmt.Errorf("%w: data after </%s>", ErrMalformed, root)
	}
	return nil
}

// space skips XML white space and reports whether there was any.
func (p *xmlScanner) space() bool {
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
func (p *xmlScanner) xmlDecl() error {
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
func (p *xmlScanner) next() (xmlToken, error) {
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
func (p *xmlScanner) readName() error {
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
func (p *xmlScanner) startTag() error {
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
func (p *xmlScanner) attribute() error {
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
func (p *xmlScanner) charData() error {
	start := p.pos
	esc, err := p.chars('<')
	p.text, p.esc = p.s[start:p.pos], esc
	return err
}

// attr returns the decoded value of an attribute of the last start tag.
func (p *xmlScanner) attr(name string) (string, bool) {
	for _, a := range p.attrs[:p.nattr] {
		if a.name == name {
			return xmlText(a.raw, a.esc), true
		}
	}
	return "", false
}

// endTag checks the end tag just read against the element it closes.
func (p *xmlScanner) endTag(open string) error {
	if p.name != open {
		return fmt.Errorf("%w: xml: element <%s> closed by </%s>", ErrMalformed, open, p.name)
	}
	return nil
}

// children reads the content of the element open through its end tag,
// calling child, which must read the whole element, for every child
// element. Character data is validated and ignored.
func (p *xmlScanner) children(open string, child func() error) error {
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
func (p *xmlScanner) skip() error {
	return p.children(p.name, p.skip)
}

// textContent reads an element of no known children and returns its
// character data (direct text concatenated around skipped children).
func (p *xmlScanner) textContent(open string) (string, error) {
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
