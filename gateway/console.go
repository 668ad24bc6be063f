package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/console"
	"github.com/dstmgw/dstm/gateway/events"
	"github.com/dstmgw/dstm/sso"
)

// The recent events kept for the console: this many of each kind; and how many certificates'
// last sightings.
const (
	eventsPerKind = 200
	seenSerials   = 1 << 16
)

// recordEvent takes in what the control plane reports (control.Config.Events).
func (g *Gateway) recordEvent(e events.Event) {
	g.events.Add(e)
	if e.Kind == events.Ended {
		g.seen.Mark(e.Serial, e.Time)
	}
}

// readConsoleSecret reads the console's client secret before anything else opens, so that a
// missing file stops the start at once.
func (g *Gateway) readConsoleSecret() error {
	c := g.cfg.Console
	if c == nil || c.ClientSecretFile == "" {
		return nil
	}
	secret, err := readSecret(c.ClientSecretFile)
	if err != nil {
		return fmt.Errorf("console.client_secret_file: %w", err)
	}
	g.consoleSecret = secret
	return nil
}

// readSecret returns the first line of path, which must not be empty.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		return "", fmt.Errorf("%s: the first line is empty", path)
	}
	return line, nil
}

// listenConsole opens the console's listener and builds the console (Run, control nodes).
func (g *Gateway) listenConsole() (net.Listener, error) {
	c := g.cfg.Console
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("console.listen: %w", err)
	}
	port := g.cfg.Listen.Addresses[0].Port()
	if len(g.tcpAddrs) > 0 {
		port = uint16(g.tcpAddrs[0].(*net.TCPAddr).Port)
	}
	cfg := console.Config{
		URL: c.URL, ClientID: c.ClientID, ClientSecret: g.consoleSecret, Admins: c.Admins,
		Certificates: g.verifier, Backend: consoleBackend{adminBackend{g}},
		Gateway:     net.JoinHostPort(c.Host(), strconv.Itoa(int(port))),
		Fingerprint: g.ca.Fingerprint(), Metrics: g.metrics,
		Logger: g.log.With().Str("component", "console").Logger(), Now: g.now,
	}
	if g.cfg.SSO != nil {
		cfg.SSO = signInSource{g}
	}
	s, err := console.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	g.console = s
	return ln, nil
}

// serveConsole serves the console on ln until ctx ends.
func (g *Gateway) serveConsole(ln net.Listener) func(context.Context) error {
	url := g.cfg.Console.URL // read before a reload can replace the section
	return func(ctx context.Context) error {
		g.log.Info().Str("component", "console").Str("listen", ln.Addr().String()).Str("url", url).
			Bool("sso", g.signIn.Load() != nil).Msg("console listening")
		return g.console.Serve(ctx, ln, console.TLSConfig(g.ca.GetCertificate, g.ca.RootPool()))
	}
}

// signInSource is the sso section's verifier as the console uses it: the current one, which a
// reload may replace (or remove: sign-ins then fail as with a provider that is down).
type signInSource struct{ g *Gateway }

var errNoSignIn = fmt.Errorf("%w: the sso section was removed (restart to serve the console without it)", sso.ErrUnavailable)

func (s signInSource) Verify(ctx context.Context, raw, audience string) (sso.Claims, error) {
	v := s.g.signIn.Load()
	if v == nil {
		return sso.Claims{}, errNoSignIn
	}
	return v.Verify(ctx, raw, audience)
}

func (s signInSource) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	v := s.g.signIn.Load()
	if v == nil {
		return oauth2.Endpoint{}, errNoSignIn
	}
	return v.Endpoint(ctx)
}

func (s signInSource) HTTPClient() *http.Client {
	if v := s.g.signIn.Load(); v != nil {
		return v.HTTPClient()
	}
	return http.DefaultClient
}

// consoleBackend is the gateway as the console sees it.
type consoleBackend struct{ adminBackend }

var _ console.Backend = consoleBackend{}

func (b consoleBackend) Events(n int) []events.Event { return b.g.events.List(n) }

func (b consoleBackend) Certificates(_ context.Context, identity string) ([]certs.Certificate, error) {
	cs, err := b.g.ca.Certificates(identity)
	if errors.Is(err, certs.ErrBadIdentity) {
		return nil, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	return cs, err
}

func (b consoleBackend) Certificate(_ context.Context, serial string) (certs.Certificate, error) {
	c, err := b.g.ca.Certificate(serial)
	switch {
	case errors.Is(err, certs.ErrUnknownSerial):
		return c, fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	case errors.Is(err, certs.ErrBadSerial):
		return c, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	return c, err
}

func (b consoleBackend) LastSeen(serial string) (time.Time, bool) { return b.g.seen.Get(serial) }
