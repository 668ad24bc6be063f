package tsp

import (
	"errors"
	"fmt"
	"time"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// Client state diagram (what the client waits for in each state):
//
//	Start() VERSION
//	  -> [VersionSent] --CAPABILITY--> AUTHENTICATE <mech>
//	        ANONYMOUS/EXTERNAL ........................-> [AuthSent]
//	        PLAIN, TCP: + credentials at once .........-> [AuthSent]
//	        PLAIN, UDP: -> [PlainPending] --empty--> credentials -> [AuthSent]
//	        DIGEST-MD5: -> [DigestChallenge] --challenge--> response
//	                    -> [DigestRspauth] --rspauth ok--> (UDP: empty datagram)
//	                    -> [DigestStatus]
//	  [AuthSent]/[DigestStatus] --200--> create -> [CreateSent]
//	  [CreateSent] --200 + offer--> accept: TCP -> [Established]
//	                                      UDP -> [AcceptSent] --empty--> [Established]
//	  [Established] --Renew()--> create -> [CreateSent]
//	  any status other than 200, or any unexpected message -> [Closed]

// ClientState is the state of a Client machine.
type ClientState uint8

// Client states.
const (
	ClientStart ClientState = iota
	ClientVersionSent
	ClientPlainPending
	ClientAuthSent
	ClientDigestChallenge
	ClientDigestRspauth
	ClientDigestStatus
	ClientCreateSent
	ClientAcceptSent
	ClientEstablished
	ClientClosed
	ClientOffered // offer received, accept deferred (ClientConfig.DeferAccept)
)

const clientStateNames = "start version-sent plain-pending auth-sent digest-challenge " +
	"digest-rspauth digest-status create-sent accept-sent established closed offered"

// String returns the state name.
func (s ClientState) String() string { return stateName(clientStateNames, int(s)) }

// DefaultVersion is the version the client announces unless configured.
const DefaultVersion = "2.0.2"

// ClientConfig configures a Client machine.
type ClientConfig struct {
	Transport Transport // required
	// Version to announce (DefaultVersion when empty); after a 302 the
	// caller reconnects with 2.0.1, then 2.0.0.
	Version            string
	Mechanism          sasl.Mechanism // required
	Username, Password string         // PLAIN and DIGEST-MD5
	DigestURI          string         // DIGEST-MD5: "tsp/" + the server as configured
	Request            *Tunnel        // the create request; its Action is forced to create
	// AcceptType names the data transport in the accept of an extended offer
	// (our extension); empty sends gogoc's plain accept.
	AcceptType TunnelType
	// DeferAccept stops after each offer (ClientOffered) so that the caller
	// can bring the data channel up first and Accept the transport that works.
	DeferAccept bool
	// Now supplies the DIGEST-MD5 cnonce (Unix seconds, like gogoc); nil
	// means time.Now.
	Now func() time.Time
}

func (c *ClientConfig) validate() error {
	switch {
	case !c.Transport.valid():
		return errors.New("tsp: client config: invalid transport")
	case c.Request == nil || c.Request.Type == "":
		return errors.New("tsp: client config: a request with a tunnel type is required")
	case c.Version != "" && !validVersion(c.Version):
		return errors.New("tsp: client config: bad version")
	}
	switch c.Mechanism {
	case sasl.Anonymous, sasl.External:
	case sasl.Plain:
		if c.Username == "" || c.Password == "" {
			return errors.New("tsp: client config: PLAIN needs username and password")
		}
	case sasl.DigestMD5:
		if c.Username == "" || c.DigestURI == "" {
			return errors.New("tsp: client config: DIGEST-MD5 needs username and digest-uri")
		}
	default:
		return fmt.Errorf("tsp: client config: unknown mechanism %q", c.Mechanism)
	}
	return nil
}

// Client is the client side of one TSP session, byte for byte like gogoc
// (the NUL after AUTHENTICATE included), fed with complete server messages.
// Not safe for concurrent use.
type Client struct {
	cfg     ClientConfig
	state   ClientState
	caps    Capability
	rspauth string
	offer   *Tunnel
}

// NewClient validates cfg and returns a machine in ClientStart.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Version == "" {
		cfg.Version = DefaultVersion
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg}, nil
}

// State returns the current state.
func (c *Client) State() ClientState { return c.state }

// Capability returns the server's advertised capability.
func (c *Client) Capability() Capability { return c.caps }

// Offer returns the last offer received (the one in force once established).
func (c *Client) Offer() *Tunnel { return c.offer }

// Start returns the first message (VERSION).
func (c *Client) Start() ([]Reply, error) {
	if c.state != ClientStart {
		return nil, errors.New("tsp: client already started")
	}
	c.state = ClientVersionSent
	return one(Version{Version: c.cfg.Version}.Marshal()), nil
}

// Renew sends a new create on an established session (lease renewal).
func (c *Client) Renew() ([]Reply, error) {
	if c.state != ClientEstablished {
		return nil, fmt.Errorf("tsp: renew in state %s", c.state)
	}
	return c.create()
}

func one(b []byte) []Reply { return []Reply{{Payload: b}} }

// Step consumes one server message and returns the messages to send. An
// error closes the machine; a refusal is a *StatusError with the server's
// code (302: reconnect with an older Version).
func (c *Client) Step(in []byte) ([]Reply, error) {
	if c.state == ClientClosed || c.state == ClientStart {
		return nil, fmt.Errorf("tsp: client step in state %s", c.state)
	}
	out, err := c.dispatch(in)
	if err != nil {
		c.state = ClientClosed
		return nil, err
	}
	return out, nil
}

func (c *Client) dispatch(in []byte) ([]Reply, error) {
	switch c.state {
	case ClientVersionSent:
		return c.onCapability(in)
	case ClientPlainPending:
		if err := expectEmpty(in); err != nil {
			return nil, err
		}
		c.state = ClientAuthSent
		return one(c.plainMessage()), nil
	case ClientAuthSent, ClientDigestStatus:
		if err := expectSuccess(in); err != nil {
			return nil, err
		}
		return c.create()
	case ClientDigestChallenge:
		return c.onChallenge(in)
	case ClientDigestRspauth:
		return c.onRspauth(in)
	case ClientCreateSent:
		return c.onOffer(in)
	case ClientAcceptSent:
		if err := expectEmpty(in); err != nil {
			return nil, err
		}
		c.state = ClientEstablished
		return nil, nil
	}
	return nil, fmt.Errorf("%w: unexpected server message in state %s", ErrMalformed, c.state)
}

func expectEmpty(in []byte) error {
	if len(in) != 0 {
		if st, _, err := ParseStatus(in); err == nil {
			return &StatusError{Code: st.Code, Err: fmt.Errorf("server: %q", st.Reason)}
		}
		return fmt.Errorf("%w: expected an empty datagram", ErrMalformed)
	}
	return nil
}

// expectSuccess turns any status but 200 into a *StatusError.
func expectSuccess(in []byte) error {
	st, rest, err := ParseStatus(in)
	if err != nil {
		return err
	}
	if len(trimNULs(rest)) != 0 {
		return fmt.Errorf("%w: bytes after status line", ErrMalformed)
	}
	if st.Code != StatusSuccess {
		return &StatusError{Code: st.Code, Err: fmt.Errorf("server: %q", st.Reason)}
	}
	return nil
}

// statusInstead reports a *StatusError when in is a status line.
func statusInstead(in []byte) error {
	if st, _, err := ParseStatus(in); err == nil {
		return &StatusError{Code: st.Code, Err: fmt.Errorf("server: %q", st.Reason)}
	}
	return nil
}

func (c *Client) onCapability(in []byte) ([]Reply, error) {
	if err := statusInstead(in); err != nil {
		return nil, err
	}
	caps, err := ParseCapability(in)
	if err != nil {
		return nil, err
	}
	c.caps = caps
	if !caps.HasTunnel(c.cfg.Request.Type) {
		return nil, fmt.Errorf("tsp: tunnel type %s not available on server", c.cfg.Request.Type)
	}
	if !caps.HasMechanism(c.cfg.Mechanism) {
		return nil, fmt.Errorf("tsp: mechanism %s not available on server", c.cfg.Mechanism)
	}
	auth := Authenticate{Mechanism: c.cfg.Mechanism}.Marshal()
	switch c.cfg.Mechanism {
	case sasl.Plain:
		if c.cfg.Transport == TransportUDP {
			c.state = ClientPlainPending
			return one(auth), nil
		}
		c.state = ClientAuthSent
		return []Reply{{Payload: auth}, {Payload: c.plainMessage()}}, nil
	case sasl.DigestMD5:
		c.state = ClientDigestChallenge
	default:
		c.state = ClientAuthSent
	}
	return one(auth), nil
}

func (c *Client) plainMessage() []byte {
	return append(sasl.EncodePlain("", c.cfg.Username, c.cfg.Password), crlf...)
}

func (c *Client) onChallenge(in []byte) ([]Reply, error) {
	if err := statusInstead(in); err != nil {
		return nil, err
	}
	raw, err := decodeBase64Line(in)
	if err != nil {
		return nil, err
	}
	ch, err := sasl.ParseChallenge(raw)
	if err != nil {
		return nil, err
	}
	if ch.Qop != sasl.DigestQop || ch.Algorithm != sasl.DigestAlgorithm {
		return nil, fmt.Errorf("%w: unsupported digest qop %q or algorithm %q", ErrMalformed, ch.Qop, ch.Algorithm)
	}
	inner := sasl.HA1(c.cfg.Username, ch.Realm, c.cfg.Password)
	cnonce := sasl.FormatCNonce(c.cfg.Now().Unix())
	trunc := c.cfg.Version == "2.0.0"
	r := sasl.ClientResponse(ch, c.cfg.Username, inner, c.cfg.DigestURI, cnonce, trunc)
	c.rspauth = sasl.RspAuthValue(inner, ch.Nonce, cnonce, ch.Qop, c.cfg.DigestURI, trunc)
	c.state = ClientDigestRspauth
	return one(base64Line(r.Marshal())), nil
}

func (c *Client) onRspauth(in []byte) ([]Reply, error) {
	if err := statusInstead(in); err != nil {
		return nil, err
	}
	raw, err := decodeBase64Line(in)
	if err != nil {
		return nil, err
	}
	v, err := sasl.ParseRspAuth(raw)
	if err != nil {
		return nil, err
	}
	if !sasl.CheckRspAuth(v, c.rspauth) {
		return nil, errors.New("tsp: server rspauth mismatch (server does not know the password)")
	}
	c.state = ClientDigestStatus
	if c.cfg.Transport == TransportUDP {
		return []Reply{{Payload: []byte{}}}, nil
	}
	return nil, nil
}

func (c *Client) create() ([]Reply, error) {
	req := *c.cfg.Request
	req.Action = ActionCreate
	x, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("tsp: marshal request: %w", err)
	}
	c.state = ClientCreateSent
	return one(MarshalContent(x)), nil
}

func (c *Client) onOffer(in []byte) ([]Reply, error) {
	body, err := ParseContent(in)
	if err != nil {
		return nil, err
	}
	st, rest, err := ParseStatus(body)
	if err != nil {
		return nil, err
	}
	if st.Code != StatusSuccess {
		return nil, &StatusError{Code: st.Code, Err: fmt.Errorf("server: %q", st.Reason)}
	}
	offer, err := ParseTunnel(rest)
	if err != nil {
		return nil, err
	}
	if err := c.checkOffer(offer); err != nil {
		return nil, err
	}
	c.offer = offer
	if c.cfg.DeferAccept {
		c.state = ClientOffered
		return nil, nil
	}
	return c.accept()
}

// Accept accepts the offer held in state ClientOffered (DeferAccept), naming
// data as the data transport of an extended offer ("" for gogoc's accept).
func (c *Client) Accept(data TunnelType) ([]Reply, error) {
	if c.state != ClientOffered {
		return nil, fmt.Errorf("tsp: accept in state %s", c.state)
	}
	c.cfg.AcceptType = data
	return c.accept()
}

func (c *Client) checkOffer(o *Tunnel) error {
	if o.Action != ActionInfo {
		return fmt.Errorf("%w: offer action %q", ErrMalformed, o.Action)
	}
	if err := checkOfferType(c.cfg.Request.Type, o.Type); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if o.Server == nil || o.Client == nil || !o.Server.IPv4.IsValid() || !o.Server.IPv6.IsValid() ||
		!o.Client.IPv4.IsValid() || !o.Client.IPv6.IsValid() {
		return fmt.Errorf("%w: offer lacks one of the four tunnel addresses", ErrMalformed)
	}
	if o.Type.Extended() && o.Data == nil {
		return fmt.Errorf("%w: %s offer without data element", ErrMalformed, o.Type)
	}
	return nil
}

func (c *Client) accept() ([]Reply, error) {
	acc := &Tunnel{Action: ActionAccept}
	if c.offer.Type.Extended() {
		acc.Type = c.cfg.AcceptType
	}
	x, err := acc.Marshal()
	if err != nil {
		return nil, err
	}
	if c.cfg.Transport == TransportUDP {
		c.state = ClientAcceptSent
	} else {
		c.state = ClientEstablished
	}
	return one(MarshalContent(x)), nil
}
