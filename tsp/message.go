package tsp

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// Size limits.
const (
	MaxDatagramPayload = 4096 // UDP payload; gogoc reads replies into 4096 bytes
	MaxStreamMessage   = 8192 // one stream message, Content-length body included
	MaxLine            = 2048 // any text line
)

const crlf = "\r\n"

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("tsp: malformed message")

// trimNULs strips leading NUL bytes (gogoc sends the C string terminator
// after AUTHENTICATE; on TCP it precedes the next message).
func trimNULs(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// firstLine returns the first line without its CRLF or LF, and the rest. A
// datagram without a terminator is one line.
func firstLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		line = b
	} else {
		line, rest = b[:i], b[i+1:]
		line = bytes.TrimSuffix(line, []byte{'\r'})
	}
	if len(line) > MaxLine {
		return nil, nil, fmt.Errorf("%w: line too long", ErrMalformed)
	}
	if bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, fmt.Errorf("%w: control character in line", ErrMalformed)
	}
	return line, rest, nil
}

// onlyLine parses b as exactly one line: nothing may follow the terminator.
func onlyLine(b []byte) ([]byte, error) {
	line, rest, err := firstLine(trimNULs(b))
	if err != nil {
		return nil, err
	}
	if len(trimNULs(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes after line", ErrMalformed)
	}
	return line, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}

// Version is the client's first message, "VERSION=2.0.2\r\n".
type Version struct {
	Version string
}

// Marshal encodes "VERSION=<v>\r\n".
func (v Version) Marshal() []byte { return []byte("VERSION=" + v.Version + crlf) }

// ParseVersion parses a VERSION line. The keyword is case-insensitive; the
// value must be three dot-separated numbers of 1–3 digits.
func ParseVersion(b []byte) (Version, error) {
	line, err := onlyLine(b)
	if err != nil {
		return Version{}, err
	}
	if !hasPrefixFold(line, "VERSION=") {
		return Version{}, fmt.Errorf("%w: not a VERSION line", ErrMalformed)
	}
	v := string(line[len("VERSION="):])
	if !validVersion(v) {
		return Version{}, fmt.Errorf("%w: bad version %q", ErrMalformed, v)
	}
	return Version{Version: v}, nil
}

func validVersion(v string) bool {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if !isDigit(p[i]) {
				return false
			}
		}
	}
	return true
}

// Capability is the server's answer to VERSION:
// "CAPABILITY TUNNEL=V4V6 … AUTH=ANONYMOUS …\r\n".
type Capability struct {
	Tunnels    []TunnelType
	Mechanisms []sasl.Mechanism
}

// Marshal encodes the capability line; tunnel tokens are upper case.
func (c Capability) Marshal() []byte {
	var b strings.Builder
	b.WriteString("CAPABILITY")
	for _, t := range c.Tunnels {
		b.WriteString(" TUNNEL=" + strings.ToUpper(string(t)))
	}
	for _, m := range c.Mechanisms {
		b.WriteString(" AUTH=" + string(m))
	}
	b.WriteString(crlf)
	return []byte(b.String())
}

// ParseCapability parses a CAPABILITY line. Unknown TUNNEL and AUTH values
// and other TOKEN=VALUE pairs are skipped; a token without '=' is an error.
func ParseCapability(b []byte) (Capability, error) {
	line, err := onlyLine(b)
	if err != nil {
		return Capability{}, err
	}
	if !hasPrefixFold(line, "CAPABILITY ") && !strings.EqualFold(string(line), "CAPABILITY") {
		return Capability{}, fmt.Errorf("%w: not a CAPABILITY line", ErrMalformed)
	}
	var c Capability
	for _, f := range strings.Fields(string(line[len("CAPABILITY"):])) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" {
			return Capability{}, fmt.Errorf("%w: bad capability token %q", ErrMalformed, f)
		}
		switch strings.ToUpper(k) {
		case "TUNNEL":
			if t, err := ParseTunnelType(v); err == nil {
				c.Tunnels = append(c.Tunnels, t)
			}
		case "AUTH":
			if m, err := sasl.ParseMechanism(v); err == nil {
				c.Mechanisms = append(c.Mechanisms, m)
			}
		}
	}
	return c, nil
}

// HasTunnel reports whether t is advertised.
func (c Capability) HasTunnel(t TunnelType) bool {
	for _, x := range c.Tunnels {
		if x == t {
			return true
		}
	}
	return false
}

// HasMechanism reports whether m is advertised.
func (c Capability) HasMechanism(m sasl.Mechanism) bool {
	for _, x := range c.Mechanisms {
		if x == m {
			return true
		}
	}
	return false
}

// Authenticate is "AUTHENTICATE <MECH>\r\n".
type Authenticate struct {
	Mechanism sasl.Mechanism
}

// Marshal encodes the line followed by a NUL byte, exactly as gogoc sends
// it (sizeof of a C string literal). Servers must tolerate the NUL.
func (a Authenticate) Marshal() []byte {
	return []byte("AUTHENTICATE " + string(a.Mechanism) + crlf + "\x00")
}

// ParseAuthenticate parses an AUTHENTICATE line (keyword and mechanism in
// any case; one trailing NUL after the line terminator is tolerated).
func ParseAuthenticate(b []byte) (Authenticate, error) {
	line, err := onlyLine(b)
	if err != nil {
		return Authenticate{}, err
	}
	if !hasPrefixFold(line, "AUTHENTICATE ") {
		return Authenticate{}, fmt.Errorf("%w: not an AUTHENTICATE line", ErrMalformed)
	}
	m, err := sasl.ParseMechanism(string(line[len("AUTHENTICATE "):]))
	if err != nil {
		return Authenticate{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return Authenticate{Mechanism: m}, nil
}
