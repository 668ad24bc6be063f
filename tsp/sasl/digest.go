package sasl

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// DIGEST-MD5 constants as gogoc uses them.
const (
	DigestQop       = "auth"     // the only quality of protection
	DigestAlgorithm = "md5-sess" // the only algorithm
	DigestCharset   = "utf-8"    // sent in every challenge; gogoc echoes it
	DigestNC        = "00000001" // the only nonce count gogoc sends
	DigestURIPrefix = "tsp/"     // followed by the server as the client names it
	maxDirectives   = 16         // key=value pairs in one message
)

// Challenge is the server's DIGEST-MD5 challenge.
type Challenge struct {
	Realm, Nonce, Qop, Algorithm, Charset string
}

// NewChallenge returns the challenge gogoc expects for realm and nonce.
func NewChallenge(realm, nonce string) Challenge {
	return Challenge{Realm: realm, Nonce: nonce, Qop: DigestQop, Algorithm: DigestAlgorithm, Charset: DigestCharset}
}

// Marshal encodes the challenge (before base64) in gogoc's layout:
// realm="R",nonce="N",qop="auth",algorithm=md5-sess,charset=utf-8
func (c Challenge) Marshal() []byte {
	s := "realm=" + quote(c.Realm) + ",nonce=" + quote(c.Nonce) + ",qop=" + quote(c.Qop) +
		",algorithm=" + c.Algorithm + ",charset=" + c.Charset
	return []byte(s)
}

// ParseChallenge decodes a challenge (after base64). realm is optional in
// RFC 2831 but required here, as are nonce and qop.
func ParseChallenge(b []byte) (Challenge, error) {
	d, err := parseDirectives(string(b))
	if err != nil {
		return Challenge{}, err
	}
	c := Challenge{Realm: d["realm"], Nonce: d["nonce"], Qop: d["qop"], Algorithm: d["algorithm"], Charset: d["charset"]}
	if c.Nonce == "" || c.Qop == "" {
		return Challenge{}, fmt.Errorf("%w: challenge lacks nonce or qop", ErrMalformed)
	}
	return c, nil
}

// Response is the client's DIGEST-MD5 response.
type Response struct {
	Charset, Username, Realm, Nonce, NC, CNonce, DigestURI, Response, Qop string
}

// Marshal encodes the response in gogoc's order and quoting:
// charset=utf-8,username="u",realm="r",nonce="n",nc=00000001,cnonce="c",
// digest-uri="tsp/…",response=<hex>,qop=auth
func (r Response) Marshal() []byte {
	s := "charset=" + r.Charset + ",username=" + quote(r.Username) + ",realm=" + quote(r.Realm) +
		",nonce=" + quote(r.Nonce) + ",nc=" + r.NC + ",cnonce=" + quote(r.CNonce) +
		",digest-uri=" + quote(r.DigestURI) + ",response=" + r.Response + ",qop=" + r.Qop
	return []byte(s)
}

// ParseResponse decodes a client response (after base64).
func ParseResponse(b []byte) (Response, error) {
	d, err := parseDirectives(string(b))
	if err != nil {
		return Response{}, err
	}
	r := Response{
		Charset: d["charset"], Username: d["username"], Realm: d["realm"], Nonce: d["nonce"],
		NC: d["nc"], CNonce: d["cnonce"], DigestURI: d["digest-uri"], Response: d["response"], Qop: d["qop"],
	}
	if r.Username == "" || r.Nonce == "" || r.CNonce == "" || r.DigestURI == "" || r.Response == "" {
		return Response{}, fmt.Errorf("%w: response lacks a required directive", ErrMalformed)
	}
	return r, nil
}

// HA1 returns MD5(user ":" realm ":" pass), the htdigest hash.
func HA1(user, realm, pass string) [16]byte {
	return md5.Sum([]byte(user + ":" + realm + ":" + pass))
}

// sessionKey computes hex(MD5(inner ":" nonce ":" cnonce)) for md5-sess.
// With truncateAtNUL the binary inner hash is cut at its first zero byte,
// replicating gogoc's "Bug1455" behaviour for TSP versions <= 2.0.0.
func sessionKey(inner [16]byte, nonce, cnonce string, truncateAtNUL bool) string {
	in := inner[:]
	if truncateAtNUL {
		for i, c := range in {
			if c == 0 {
				in = in[:i]
				break
			}
		}
	}
	buf := make([]byte, 0, len(in)+len(nonce)+len(cnonce)+2)
	buf = append(buf, in...)
	buf = append(buf, ':')
	buf = append(buf, nonce...)
	buf = append(buf, ':')
	buf = append(buf, cnonce...)
	return md5hex(buf)
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// digestValue computes MD5(hex(HA1) ":" nonce ":" nc ":" cnonce ":" qop ":" hex(MD5(a2))).
func digestValue(inner [16]byte, nonce, cnonce, qop, a2 string, truncateAtNUL bool) string {
	ha1 := sessionKey(inner, nonce, cnonce, truncateAtNUL)
	ha2 := md5hex([]byte(a2))
	return md5hex([]byte(ha1 + ":" + nonce + ":" + DigestNC + ":" + cnonce + ":" + qop + ":" + ha2))
}

// ResponseValue is the client's response= value (qop is the challenge's).
func ResponseValue(inner [16]byte, nonce, cnonce, qop, digestURI string, truncateAtNUL bool) string {
	return digestValue(inner, nonce, cnonce, qop, "AUTHENTICATE:"+digestURI, truncateAtNUL)
}

// RspAuthValue is the server's rspauth= value for the given inputs.
func RspAuthValue(inner [16]byte, nonce, cnonce, qop, digestURI string, truncateAtNUL bool) string {
	return digestValue(inner, nonce, cnonce, qop, ":"+digestURI, truncateAtNUL)
}

// ClientResponse builds the response gogoc sends to challenge c.
func ClientResponse(c Challenge, user string, inner [16]byte, uri, cnonce string, truncateAtNUL bool) Response {
	return Response{
		Charset: c.Charset, Username: user, Realm: c.Realm, Nonce: c.Nonce, NC: DigestNC,
		CNonce: cnonce, DigestURI: uri, Qop: c.Qop,
		Response: ResponseValue(inner, c.Nonce, cnonce, c.Qop, uri, truncateAtNUL),
	}
}

// CheckResponse checks that r agrees with challenge c in everything but the
// credentials.
func CheckResponse(c Challenge, r Response) error {
	switch {
	case r.Realm != c.Realm:
		return fmt.Errorf("%w: realm mismatch", ErrMalformed)
	case r.Nonce != c.Nonce:
		return fmt.Errorf("%w: nonce mismatch", ErrMalformed)
	case r.NC != DigestNC:
		return fmt.Errorf("%w: nc must be %s", ErrMalformed, DigestNC)
	case r.Qop != c.Qop:
		return fmt.Errorf("%w: qop mismatch", ErrMalformed)
	case !strings.HasPrefix(r.DigestURI, DigestURIPrefix):
		return fmt.Errorf("%w: digest-uri must start with %q", ErrMalformed, DigestURIPrefix)
	case len(r.Response) != 32 || !isHex(r.Response):
		return fmt.Errorf("%w: response is not 32 hex digits", ErrMalformed)
	}
	return nil
}

// VerifyResponse checks r against challenge c and the stored HA1 (inner)
// in constant time. It returns the rspauth value to send on success.
func VerifyResponse(c Challenge, r Response, inner [16]byte, truncateAtNUL bool) (string, bool) {
	if CheckResponse(c, r) != nil {
		return "", false
	}
	want := ResponseValue(inner, c.Nonce, r.CNonce, c.Qop, r.DigestURI, truncateAtNUL)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(r.Response))) != 1 {
		return "", false
	}
	return RspAuthValue(inner, c.Nonce, r.CNonce, c.Qop, r.DigestURI, truncateAtNUL), true
}

// MarshalRspAuth encodes "rspauth=<hex>" (before base64).
func MarshalRspAuth(v string) []byte { return []byte("rspauth=" + v) }

// ParseRspAuth decodes "rspauth=<hex>" (after base64).
func ParseRspAuth(b []byte) (string, error) {
	d, err := parseDirectives(string(b))
	if err != nil {
		return "", err
	}
	v, ok := d["rspauth"]
	if !ok || len(d) != 1 || len(v) != 32 || !isHex(v) {
		return "", fmt.Errorf("%w: bad rspauth", ErrMalformed)
	}
	return v, nil
}

// CheckRspAuth compares a received rspauth value with the expected one in
// constant time (gogoc compares the first 32 characters).
func CheckRspAuth(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func quote(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// parseDirectives parses RFC 2831 comma-separated key=value or
// key="quoted value" pairs; keys are case-insensitive and unique.
func parseDirectives(s string) (map[string]string, error) {
	d := make(map[string]string)
	for i := 0; ; {
		i = skipLWS(s, i)
		if i >= len(s) {
			return d, nil
		}
		key, val, next, err := parseDirective(s, i)
		if err != nil {
			return nil, err
		}
		if _, dup := d[key]; dup {
			return nil, fmt.Errorf("%w: duplicate directive %q", ErrMalformed, key)
		}
		if len(d) == maxDirectives {
			return nil, fmt.Errorf("%w: too many directives", ErrMalformed)
		}
		d[key] = val
		i = skipLWS(s, next)
		if i < len(s) {
			if s[i] != ',' {
				return nil, fmt.Errorf("%w: expected ',' at offset %d", ErrMalformed, i)
			}
			i++
		}
	}
}

func skipLWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// parseDirective parses one key=value at s[i:] and returns the index past it.
func parseDirective(s string, i int) (key, val string, next int, err error) {
	eq := strings.IndexByte(s[i:], '=')
	if eq <= 0 {
		return "", "", 0, fmt.Errorf("%w: directive without key", ErrMalformed)
	}
	key = strings.ToLower(strings.TrimSpace(s[i : i+eq]))
	if !isToken(key) {
		return "", "", 0, fmt.Errorf("%w: bad directive name", ErrMalformed)
	}
	j := skipLWS(s, i+eq+1)
	if j < len(s) && s[j] == '"' {
		val, next, err = parseQuoted(s, j)
	} else {
		end := j
		for end < len(s) && s[end] != ',' && s[end] != ' ' && s[end] != '\t' {
			end++
		}
		val, next = s[j:end], end
		if !isToken(val) {
			err = fmt.Errorf("%w: directive %q has a bad unquoted value", ErrMalformed, key)
		}
	}
	if err == nil && len(val) > MaxFieldLen {
		err = fmt.Errorf("%w: directive %q too long", ErrMalformed, key)
	}
	return key, val, next, err
}

func parseQuoted(s string, j int) (string, int, error) {
	var b strings.Builder
	for k := j + 1; k < len(s); k++ {
		switch c := s[k]; c {
		case '"':
			return b.String(), k + 1, nil
		case '\\':
			if k+1 >= len(s) {
				return "", 0, fmt.Errorf("%w: dangling escape", ErrMalformed)
			}
			k++
			b.WriteByte(s[k])
		default:
			if c < 0x20 && c != '\t' {
				return "", 0, fmt.Errorf("%w: control character in quoted string", ErrMalformed)
			}
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("%w: unterminated quoted string", ErrMalformed)
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// FormatCNonce renders a Unix time as gogoc's decimal cnonce.
func FormatCNonce(unix int64) string { return strconv.FormatInt(unix, 10) }
