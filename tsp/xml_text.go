package tsp

import (
	"strings"
	"unicode/utf8"
)

// chars validates text from p.pos up to stop ('<' or EOF for character data,
// a quote for attribute values) and leaves p.pos on stop. It reports whether
// the text needs decoding by xmlText.
func (p *xmlScanner) chars(stop byte) (esc bool, err error) {
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
func (p *xmlScanner) ref(i int) (rune, int, error) {
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
