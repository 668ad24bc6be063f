package tsp

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// The server's states and transitions are diagrammed in docs/protocol.md,
// "State machine (server)". Every error reply moves to StateClosed.

// ServerState is the state of a Server machine.
type ServerState uint8

// Server states.
const (
	StateVersion          ServerState = iota // awaiting VERSION
	StateAuthenticate                        // awaiting AUTHENTICATE
	StatePlainCredentials                    // awaiting the SASL PLAIN message
	StateDigestResponse                      // awaiting the DIGEST-MD5 response
	StateDigestConfirm                       // UDP: awaiting the empty datagram
	StateAuthenticated                       // awaiting create
	StateOffered                             // offer sent, awaiting accept/reject
	StateEstablished                         // offer accepted
	StateClosed                              // terminal
)

const serverStateNames = "version authenticate plain-credentials digest-response " +
	"digest-confirm authenticated offered established closed"

// String returns the state name.
func (s ServerState) String() string { return stateName(serverStateNames, int(s)) }

func stateName(names string, i int) string {
	for f := range strings.FieldsSeq(names) {
		if i == 0 {
			return f
		}
		i--
	}
	return "invalid"
}

// ServerConfig configures a Server machine.
type ServerConfig struct {
	Transport Transport // required
	// Tunnels are advertised in CAPABILITY and the only types served;
	// V4TLSV6 requires TransportTLS.
	Tunnels []TunnelType
	// Mechanisms are advertised in this order; EXTERNAL requires TransportTLS.
	Mechanisms  []sasl.Mechanism
	Credentials sasl.Credentials // verifies PLAIN and DIGEST-MD5
	Realm       string           // DIGEST-MD5
	// AnonymousName names ANONYMOUS sessions (the gateway uses the client's
	// IPv6 endpoint).
	AnonymousName string
	// ExternalName is the verified TLS client certificate's identity; empty
	// fails EXTERNAL with 300.
	ExternalName string
	// ExternalGroups are the policy groups that certificate carries.
	ExternalGroups []string
	Backend        Backend // required
	// NewNonce returns a DIGEST-MD5 nonce; nil means 16 random bytes in hex.
	NewNonce func() (string, error)
}

func (c *ServerConfig) validate() error {
	if !c.Transport.valid() {
		return errors.New("tsp: server config: invalid transport")
	}
	if c.Backend == nil || len(c.Tunnels) == 0 || len(c.Mechanisms) == 0 {
		return errors.New("tsp: server config: backend, tunnels and mechanisms are required")
	}
	for _, t := range c.Tunnels {
		if !t.Servable() {
			return fmt.Errorf("tsp: server config: tunnel type %q is not servable", t)
		}
		if t == TypeV4TLSV6 && c.Transport != TransportTLS {
			return errors.New("tsp: server config: v4tlsv6 needs the TLS transport")
		}
	}
	for _, m := range c.Mechanisms {
		if err := c.validateMechanism(m); err != nil {
			return err
		}
	}
	return nil
}

func (c *ServerConfig) validateMechanism(m sasl.Mechanism) error {
	switch m {
	case sasl.Anonymous:
		if c.AnonymousName == "" {
			return errors.New("tsp: server config: ANONYMOUS needs AnonymousName")
		}
	case sasl.Plain:
		if c.Credentials == nil {
			return errors.New("tsp: server config: PLAIN needs Credentials")
		}
	case sasl.DigestMD5:
		if c.Credentials == nil || c.Realm == "" {
			return errors.New("tsp: server config: DIGEST-MD5 needs Credentials and Realm")
		}
	case sasl.External:
		if c.Transport != TransportTLS {
			return errors.New("tsp: server config: EXTERNAL needs the TLS transport")
		}
	default:
		return fmt.Errorf("tsp: server config: unknown mechanism %q", m)
	}
	return nil
}

// Server is the server side of one TSP session, a state machine fed with
// complete client messages. Not safe for concurrent use.
type Server struct {
	cfg       ServerConfig
	state     ServerState
	version   string
	id        Identity
	challenge sasl.Challenge
	offer     *Tunnel    // last offer sent
	accepted  *Tunnel    // offer in force after accept
	data      TunnelType // data transport chosen at accept
}

// NewServer validates cfg and returns a machine in StateVersion.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg}, nil
}

// State returns the current state.
func (s *Server) State() ServerState { return s.state }

// Version returns the negotiated client version ("" before VERSION).
func (s *Server) Version() string { return s.version }

// Identity returns the authenticated identity, if any.
func (s *Server) Identity() (Identity, bool) { return s.id, s.id.Mechanism != "" }

// Established returns the accepted offer and the chosen data transport
// while the session is established.
func (s *Server) Established() (offer *Tunnel, data TunnelType, ok bool) {
	if s.state != StateEstablished {
		return nil, "", false
	}
	return s.accepted, s.data, true
}

// Step consumes one client message and returns the replies to send, in
// order. They must be sent even when err is non-nil: the machine is then
// closed and err is the cause for the log, usually a *StatusError. On UDP
// there is exactly one reply (an empty payload is a header-only datagram).
// Once closed, Step returns ErrClosed and no replies.
func (s *Server) Step(ctx context.Context, in []byte) ([]Reply, error) {
	if s.state == StateClosed {
		return nil, ErrClosed
	}
	out, err := s.dispatch(ctx, in)
	if err != nil {
		s.state = StateClosed
	}
	if s.cfg.Transport == TransportUDP && len(out) == 0 {
		out = []Reply{{Payload: []byte{}}}
	}
	return out, err
}

// Fail closes the session with code for a cause found outside the machine
// (a message the transport could not frame) and returns the status reply,
// framed as in the current state: a bare line before authentication,
// Content-length framed after it. A closed machine returns ErrClosed.
func (s *Server) Fail(code int, cause error) ([]Reply, error) {
	if s.state == StateClosed {
		return nil, ErrClosed
	}
	var out []Reply
	var err error
	switch s.state {
	case StateAuthenticated, StateOffered, StateEstablished:
		out, err = failFramed(code, cause)
	default:
		out, err = fail(code, cause)
	}
	s.state = StateClosed
	return out, err
}

func (s *Server) dispatch(ctx context.Context, in []byte) ([]Reply, error) {
	switch s.state {
	case StateVersion:
		return s.onVersion(in)
	case StateAuthenticate:
		return s.onAuthenticate(in)
	case StatePlainCredentials:
		return s.onPlain(in)
	case StateDigestResponse:
		return s.onDigestResponse(in)
	case StateDigestConfirm:
		return s.onDigestConfirm(in)
	case StateAuthenticated, StateOffered, StateEstablished:
		return s.onTunnel(ctx, in)
	}
	return nil, ErrClosed
}

// fail returns a text-phase status reply and the error closing the session.
func fail(code int, cause error) ([]Reply, error) {
	return []Reply{{Payload: NewStatus(code).Marshal()}}, &StatusError{Code: code, Err: cause}
}

// failFramed returns a Content-length framed status reply (XML phase).
func failFramed(code int, cause error) ([]Reply, error) {
	return []Reply{{Payload: MarshalContent(NewStatus(code).Marshal())}}, &StatusError{Code: code, Err: cause}
}

func ok() []Reply { return []Reply{{Payload: NewStatus(StatusSuccess).Marshal()}} }

func (s *Server) onVersion(in []byte) ([]Reply, error) {
	v, err := ParseVersion(in)
	if err != nil {
		return fail(StatusInvalidRequest, err)
	}
	if !versionSupported(v.Version) {
		return fail(StatusUnsupportedVersion, fmt.Errorf("client version %q", v.Version))
	}
	s.version = v.Version
	s.state = StateAuthenticate
	c := Capability{Tunnels: s.cfg.Tunnels, Mechanisms: s.cfg.Mechanisms}
	return []Reply{{Payload: c.Marshal()}}, nil
}

func (s *Server) mechanismAllowed(m sasl.Mechanism) bool {
	for _, x := range s.cfg.Mechanisms {
		if x == m {
			return true
		}
	}
	return false
}

func (s *Server) onAuthenticate(in []byte) ([]Reply, error) {
	a, err := ParseAuthenticate(in)
	if err != nil {
		return fail(StatusInvalidRequest, err)
	}
	if !s.mechanismAllowed(a.Mechanism) {
		return fail(StatusAuthenticationFailed, fmt.Errorf("mechanism %s not allowed", a.Mechanism))
	}
	switch a.Mechanism {
	case sasl.Anonymous:
		return s.authenticated(Identity{Name: s.cfg.AnonymousName, Mechanism: sasl.Anonymous})
	case sasl.External:
		if s.cfg.ExternalName == "" {
			return fail(StatusAuthenticationFailed, errors.New("EXTERNAL without a client certificate identity"))
		}
		return s.authenticated(Identity{Name: s.cfg.ExternalName, Mechanism: sasl.External, Groups: s.cfg.ExternalGroups})
	case sasl.Plain:
		s.state = StatePlainCredentials
		return nil, nil
	default: // DIGEST-MD5 (mechanismAllowed filtered the rest)
		return s.digestChallenge()
	}
}

func (s *Server) authenticated(id Identity) ([]Reply, error) {
	s.id = id
	s.state = StateAuthenticated
	return ok(), nil
}

// onPlain handles the SASL PLAIN message. On TCP the NUL gogoc sends after
// "AUTHENTICATE PLAIN\r\n" precedes the message, which itself starts with
// NUL (empty authzid); a valid message has exactly two NULs, so surplus
// leading ones are stray and removed.
func (s *Server) onPlain(in []byte) ([]Reply, error) {
	msg, err := plainMessage(in)
	if err != nil {
		return fail(StatusAuthenticationFailed, err)
	}
	authz, user, pass, err := sasl.ParsePlain(msg)
	if err != nil {
		return fail(StatusAuthenticationFailed, err)
	}
	if authz != "" && authz != user {
		return fail(StatusAuthenticationFailed, errors.New("PLAIN authorization identity differs from user"))
	}
	if !s.cfg.Credentials.VerifyPlain(user, pass) {
		return fail(StatusAuthenticationFailed, fmt.Errorf("PLAIN credentials rejected for %q", user))
	}
	return s.authenticated(Identity{Name: user, Mechanism: sasl.Plain})
}

// plainMessage strips one line terminator and surplus leading NULs.
func plainMessage(in []byte) ([]byte, error) {
	msg := in
	switch {
	case len(msg) >= 2 && msg[len(msg)-2] == '\r' && msg[len(msg)-1] == '\n':
		msg = msg[:len(msg)-2]
	case len(msg) >= 1 && msg[len(msg)-1] == '\n':
		msg = msg[:len(msg)-1]
	}
	nuls := 0
	for _, c := range msg {
		if c == 0 {
			nuls++
		}
	}
	for extra := nuls - 2; extra > 0; extra-- {
		if msg[0] != 0 {
			return nil, fmt.Errorf("%w: PLAIN message with more than two NULs", ErrMalformed)
		}
		msg = msg[1:]
	}
	return msg, nil
}

func (s *Server) digestChallenge() ([]Reply, error) {
	nonce, err := s.newNonce()
	if err != nil {
		return fail(StatusServerError, err)
	}
	s.challenge = sasl.NewChallenge(s.cfg.Realm, nonce)
	s.state = StateDigestResponse
	return []Reply{{Payload: base64Line(s.challenge.Marshal())}}, nil
}

func (s *Server) newNonce() (string, error) {
	if s.cfg.NewNonce != nil {
		return s.cfg.NewNonce()
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("tsp: digest nonce: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func base64Line(b []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(b) + crlf)
}

// decodeBase64Line decodes one base64 line (padding optional).
func decodeBase64Line(in []byte) ([]byte, error) {
	line, err := onlyLine(in)
	if err != nil {
		return nil, err
	}
	if d, err := base64.StdEncoding.DecodeString(string(line)); err == nil {
		return d, nil
	}
	d, err := base64.RawStdEncoding.DecodeString(string(line))
	if err != nil {
		return nil, fmt.Errorf("%w: bad base64", ErrMalformed)
	}
	return d, nil
}

func (s *Server) onDigestResponse(in []byte) ([]Reply, error) {
	raw, err := decodeBase64Line(in)
	if err != nil {
		return fail(StatusAuthenticationFailed, err)
	}
	r, err := sasl.ParseResponse(raw)
	if err != nil {
		return fail(StatusAuthenticationFailed, err)
	}
	ha1, known := s.cfg.Credentials.DigestHA1(r.Username, s.cfg.Realm)
	rspauth, good := sasl.VerifyResponse(s.challenge, r, ha1, s.version == "2.0.0")
	if !known || !good {
		return fail(StatusAuthenticationFailed, fmt.Errorf("DIGEST-MD5 response rejected for %q", r.Username))
	}
	s.id = Identity{Name: r.Username, Mechanism: sasl.DigestMD5}
	first := Reply{Payload: base64Line(sasl.MarshalRspAuth(rspauth))}
	if s.cfg.Transport == TransportUDP {
		s.state = StateDigestConfirm
		return []Reply{first}, nil
	}
	s.state = StateAuthenticated
	return []Reply{first, {Payload: NewStatus(StatusSuccess).Marshal(), Separate: true}}, nil
}

func (s *Server) onDigestConfirm(in []byte) ([]Reply, error) {
	if len(in) != 0 {
		return fail(StatusInvalidRequest, errors.New("expected the empty DIGEST-MD5 confirmation datagram"))
	}
	s.state = StateAuthenticated
	return ok(), nil
}
