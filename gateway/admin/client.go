package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultSocket is the admin socket path when the configuration names none.
const DefaultSocket = "/run/dstm/admin.sock"

// clientTimeout bounds one request when the caller's context has no
// deadline.
const (
	clientTimeout  = 60 * time.Second
	maxErrorBody   = 64 << 10
	requestBaseURL = "http://dstm-gateway" // host is ignored: the transport dials the socket
)

// Client talks to the admin API over the unix socket. It is safe for
// concurrent use and implements [Backend].
type Client struct {
	path string
	hc   *http.Client
}

var _ Backend = (*Client)(nil)

// NewClient returns a client for the socket at path. Nothing is dialled
// until the first call.
func NewClient(path string) *Client {
	c := &Client{path: path}
	c.hc = &http.Client{
		Timeout: clientTimeout,
		Transport: &http.Transport{
			DialContext:        c.dial,
			MaxIdleConns:       2,
			IdleConnTimeout:    30 * time.Second,
			DisableCompression: true,
		},
	}
	return c
}

func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err // drop "dial unix <path>:", DialError names the path
		}
		return nil, &DialError{Path: c.path, Err: err}
	}
	return conn, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Leases lists the leases.
func (c *Client) Leases(ctx context.Context) ([]Lease, error) {
	var v []Lease
	err := c.do(ctx, http.MethodGet, "/v1/leases", nil, &v)
	return v, err
}

// Sessions lists the live sessions.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	var v []Session
	err := c.do(ctx, http.MethodGet, "/v1/sessions", nil, &v)
	return v, err
}

// Kick closes a session.
func (c *Client) Kick(ctx context.Context, session string) error {
	if err := validName("session", session); err != nil {
		return err // an empty ID would otherwise address the collection
	}
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(session), nil, nil)
}

// Revoke revokes an identity's certificates or one serial.
func (c *Client) Revoke(ctx context.Context, target string) (RevokeResult, error) {
	var v RevokeResult
	err := c.do(ctx, http.MethodPost, "/v1/revoke", revokeRequest{Target: target}, &v)
	return v, err
}

// Token issues an enrollment token; ttl 0 asks for the gateway's default.
func (c *Client) Token(ctx context.Context, identity string, ttl time.Duration) (TokenResult, error) {
	req := tokenRequest{Identity: identity}
	if ttl != 0 {
		req.TTL = ttl.String()
	}
	var v TokenResult
	err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &v)
	return v, err
}

// Status describes the running gateway.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var v Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &v)
	return v, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	req, err := newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var de *DialError
		if errors.As(err, &de) {
			return de
		}
		return fmt.Errorf("admin: %s %s: %w", method, path, unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin: %s %s: decode response: %w", method, path, err)
	}
	return nil
}

func newRequest(ctx context.Context, method, path string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("admin: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, requestBaseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// unwrapURL drops *url.Error's "Get \"http://…\":" prefix, which names a
// URL the user never typed.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb errorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &Error{Status: resp.StatusCode, Code: codeForStatus(resp.StatusCode), Message: "gateway answered " + resp.Status + ": " + msg}
	}
	if eb.Code == "" {
		eb.Code = codeForStatus(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return codeNotFound
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
		return codeInvalid
	case http.StatusServiceUnavailable:
		return codeUnavailable
	default:
		return codeInternal
	}
}
