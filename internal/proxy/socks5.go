package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// SOCKS5 constants (RFC 1928).
const (
	socksVersion  = 5
	methodNone    = 0x00
	methodNoMatch = 0xff
	cmdConnect    = 1
	atypIPv4      = 1
	atypDomain    = 3
	atypIPv6      = 4

	repSuccess             = 0
	repGeneralFailure      = 1
	repNetworkUnreachable  = 3
	repHostUnreachable     = 4
	repConnectionRefused   = 5
	repCommandNotSupported = 7
	repAddrNotSupported    = 8
)

// socksRequest is a parsed SOCKS5 request.
type socksRequest struct {
	cmd  byte
	host string // an IPv4 or IPv6 literal, or a name
	port uint16
	atyp byte
}

func (r socksRequest) address() string { return net.JoinHostPort(r.host, strconv.Itoa(int(r.port))) }

// errSocks is a request the server answers with rep before closing.
type errSocks struct {
	rep byte
	err error
}

func (e *errSocks) Error() string { return e.err.Error() }

// readGreeting reads the client's method list and says whether "no authentication" is in it.
func readGreeting(r *bufio.Reader) (bool, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return false, err
	}
	if h[0] != socksVersion {
		return false, fmt.Errorf("socks: version %d", h[0])
	}
	methods := make([]byte, h[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return false, err
	}
	for _, m := range methods {
		if m == methodNone {
			return true, nil
		}
	}
	return false, nil
}

// readRequest reads a request (after the greeting). A request this server does not serve
// (not CONNECT, an unknown address type) is an *errSocks with the reply to send.
func readRequest(r *bufio.Reader) (socksRequest, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return socksRequest{}, err
	}
	if h[0] != socksVersion {
		return socksRequest{}, fmt.Errorf("socks: request version %d", h[0])
	}
	req := socksRequest{cmd: h[1], atyp: h[3]}
	switch req.atyp {
	case atypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return req, err
		}
		req.host = netip.AddrFrom4(a).String()
	case atypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return req, err
		}
		req.host = netip.AddrFrom16(a).String()
	case atypDomain:
		n, err := r.ReadByte()
		if err != nil {
			return req, err
		}
		name := make([]byte, n)
		if _, err := io.ReadFull(r, name); err != nil {
			return req, err
		}
		if n == 0 || !validName(name) {
			return req, &errSocks{repHostUnreachable, fmt.Errorf("socks: bad host name %q", name)}
		}
		req.host = string(name)
	default:
		return req, &errSocks{repAddrNotSupported, fmt.Errorf("socks: address type %d", req.atyp)}
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return req, err
	}
	req.port = binary.BigEndian.Uint16(p[:])
	if req.cmd != cmdConnect {
		return req, &errSocks{repCommandNotSupported, fmt.Errorf("socks: command %d (only CONNECT)", req.cmd)}
	}
	if req.port == 0 {
		return req, &errSocks{repHostUnreachable, errors.New("socks: port 0")}
	}
	return req, nil
}

// validName accepts the characters of a DNS name (letters, digits, '-', '_', '.').
func validName(b []byte) bool {
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func socksReply(w io.Writer, rep byte, bound netip.AddrPort) error {
	b := []byte{socksVersion, rep, 0, atypIPv4, 0, 0, 0, 0, 0, 0}
	if bound.Addr().Is4() {
		a := bound.Addr().As4()
		copy(b[4:8], a[:])
		binary.BigEndian.PutUint16(b[8:], bound.Port())
	}
	_, err := w.Write(b)
	return err
}

// serveSOCKS5 runs one SOCKS5 connection: greeting, CONNECT, then the splice.
func (s *Server) serveSOCKS5(ctx context.Context, c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	r := bufio.NewReader(c)
	ok, err := readGreeting(r)
	if err != nil {
		s.failed.Add(1)
		return
	}
	if !ok {
		_, _ = c.Write([]byte{socksVersion, methodNoMatch})
		s.failed.Add(1)
		return
	}
	if _, err := c.Write([]byte{socksVersion, methodNone}); err != nil {
		return
	}
	req, err := readRequest(r)
	if err != nil {
		s.failed.Add(1)
		var es *errSocks
		if errors.As(err, &es) {
			_ = socksReply(c, es.rep, netip.AddrPort{})
			s.log.Debug().Err(err).Msg("proxy: SOCKS5 request refused")
		}
		return
	}
	up, err := s.dial(ctx, req.address())
	if err != nil {
		s.failed.Add(1)
		_ = socksReply(c, dialReply(err), netip.AddrPort{})
		s.log.Debug().Str("destination", req.address()).Str("error", dialError(err)).Msg("proxy: SOCKS5 dial failed")
		return
	}
	bound, _ := netip.ParseAddrPort(up.LocalAddr().String())
	if err := socksReply(c, repSuccess, bound); err != nil {
		up.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.proxied.Add(1)
	if n := r.Buffered(); n > 0 { // bytes the client sent right after its request
		b, _ := r.Peek(n)
		if _, err := up.Write(b); err != nil {
			up.Close()
			return
		}
	}
	splice(c, up)
}

// dialReply maps a dial error onto a SOCKS5 reply code.
func dialReply(err error) byte {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, ErrNoTunnel):
		return repNetworkUnreachable
	case errors.As(err, &dnsErr):
		return repHostUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return repHostUnreachable
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return repConnectionRefused
	}
	return repGeneralFailure
}
