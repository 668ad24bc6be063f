package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

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

// openSSO builds the verifier of the sso section and reads the console's client secret:
// before the host is touched, so that a missing file stops the start at once.
func (g *Gateway) openSSO() error {
	if g.cfg.SSO == nil {
		return nil
	}
	v, err := sso.New(*g.cfg.SSO, sso.Options{Now: g.now})
	if err != nil {
		return err // names sso.ca_file
	}
	g.sso = v
	if c := g.cfg.Console; c != nil {
		secret, err := readSecret(c.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("console.client_secret_file: %w", err)
		}
		g.consoleSecret = secret
	}
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
	if g.sso != nil {
		cfg.SSO = g.sso
	}
	s, err := console.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	g.console = s
	g.consoleAddr = ln.Addr()
	return ln, nil
}

// serveConsole serves the console on ln until ctx ends.
func (g *Gateway) serveConsole(ln net.Listener) func(context.Context) error {
	url := g.cfg.Console.URL // read before a reload can replace the section
	return func(ctx context.Context) error {
		g.log.Info().Str("component", "console").Str("listen", ln.Addr().String()).Str("url", url).
			Bool("sso", g.sso != nil).Msg("console listening")
		return g.console.Serve(ctx, ln, console.TLSConfig(g.ca.GetCertificate, g.ca.RootPool()))
	}
}

// ConsoleAddr returns the console's bound address (nil without a console; valid after Ready).
func (g *Gateway) ConsoleAddr() net.Addr { return g.consoleAddr }

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
