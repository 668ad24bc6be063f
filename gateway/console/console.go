// Package console is the gateway's web console (docs/console.md): served over HTTPS by a
// control node, with the embedded CA's server certificate. Operators — members of
// sso.admin_groups, or identities in console.admins signed in by SSO or holding a client
// certificate of our CA — see the sessions with live throughput, the leases by pool, the
// recent events and the gateway's and cluster's health, and can kick a session, revoke an
// identity and issue an enrollment token, each after a confirmation. Users signed in by SSO
// see their own devices (the certificates issued to them, when each was last seen, the
// session it carries), revoke one of them, and download a client configuration.
//
// Pages are rendered on the server (html/template, embedded); one small script polls a JSON
// endpoint for the live numbers. Sessions live in memory (256-bit IDs in a __Host- cookie),
// every form carries the session's CSRF token and every POST must come from the console's
// own origin; the security headers forbid inline script and framing.
package console

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/events"
	"github.com/dstmgw/dstm/sso"
)

// Backend is what the console needs from the gateway: the admin API's operations, and what
// only the console shows.
type Backend interface {
	admin.Backend
	// Events returns up to n recent events, newest first.
	Events(n int) []events.Event
	// Certificates lists the certificates issued to identity, newest first.
	Certificates(ctx context.Context, identity string) ([]certs.Certificate, error)
	// Certificate returns one certificate by serial; an error wrapping admin.ErrNotFound if
	// the CA did not issue it.
	Certificate(ctx context.Context, serial string) (certs.Certificate, error)
	// LastSeen says when the certificate last carried a session that has ended (since the
	// gateway started).
	LastSeen(serial string) (time.Time, bool)
}

// SSO verifies sign-ins at the company's provider (*sso.Verifier).
type SSO interface {
	Verify(ctx context.Context, rawIDToken, audience string) (sso.Claims, error)
	Endpoint(ctx context.Context) (oauth2.Endpoint, error)
	HTTPClient() *http.Client
}

// CertVerifier verifies a browser's client certificate (*auth.Verifier: our CA, validity,
// revocation, policy).
type CertVerifier interface {
	VerifyState(cs tls.ConnectionState) (*auth.Peer, error)
}

// Metrics counts what the console decides (*metrics.Metrics).
type Metrics interface {
	ConsoleSignIn(method, result string)
	ConsoleRefused(reason string)
}

// noMetrics counts nothing.
type noMetrics struct{}

func (noMetrics) ConsoleSignIn(string, string) {}
func (noMetrics) ConsoleRefused(string)        {}

// Config is the console's setup.
type Config struct {
	// URL is the console's public URL, https://HOST[:PORT] (config.Console.URL).
	URL string
	// ClientID and ClientSecret are the console's confidential client at the provider (with
	// SSO).
	ClientID, ClientSecret string
	// Admins are the operator identities (besides the provider's admin groups).
	Admins []string
	// SSO verifies sign-ins; nil: only operators with an admin certificate.
	SSO SSO
	// Certificates verifies client certificates; nil: certificates are not accepted.
	Certificates CertVerifier
	Backend      Backend
	// Gateway is HOST:PORT of the TSP port and Fingerprint the root's SHA-256, for the client
	// configuration users download.
	Gateway, Fingerprint string
	// Metrics counts sign-ins and refusals (*metrics.Metrics); nil: none.
	Metrics Metrics
	Logger  zerolog.Logger
	Now     func() time.Time
}

// Server is the console. Create it with New; serve Handler, or Serve on a listener.
type Server struct {
	cfg     Config
	origin  string
	log     zerolog.Logger
	now     func() time.Time
	admins  atomic.Pointer[[]string]
	store   *store
	sampler *sampler
	pages   *pages
	handler http.Handler
}

// New checks cfg and builds the console.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("console: a backend is required")
	}
	origin, err := originOf(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.SSO != nil && (cfg.ClientID == "" || cfg.ClientSecret == "") {
		return nil, errors.New("console: sign-in needs the console's client id and secret")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, origin: origin, log: cfg.Logger, now: cfg.Now, store: newStore(cfg.Now),
		sampler: newSampler(cfg.Now), pages: pg}
	s.SetAdmins(cfg.Admins)
	s.handler = s.routes()
	return s, nil
}

// SetAdmins replaces the operator identities (a reload).
func (s *Server) SetAdmins(ids []string) {
	c := slices.Clone(ids)
	s.admins.Store(&c)
}

func (s *Server) isAdmin(identity string) bool {
	return slices.Contains(*s.admins.Load(), identity)
}

// Handler serves the console (behind TLS: it reads r.TLS for client certificates).
func (s *Server) Handler() http.Handler { return s.handler }

// Sweep drops expired sessions and sign-ins; Serve runs it every minute.
func (s *Server) Sweep() { s.store.sweep() }

// TLSConfig is the console listener's TLS: the server certificate from getCertificate, and a
// client certificate requested (not required) from the holders of clientCAs' certificates,
// checked per request by Config.Certificates.
func TLSConfig(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: getCertificate,
		ClientAuth:     tls.RequestClientCert,
		ClientCAs:      clientCAs,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// shutdownTimeout bounds the requests in flight when Serve stops.
const shutdownTimeout = 5 * time.Second

// Serve serves the console with TLS on ln until ctx ends; it closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures of scanners and the like: debug only.
		ErrorLog: log.New(debugWriter{s.log}, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
				defer cancel()
				_ = srv.Shutdown(sctx)
				return
			case <-tick.C:
				s.Sweep()
			}
		}
	}()
	err := srv.ServeTLS(ln, "", "")
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("console: %w", err)
}

// debugWriter writes net/http's own error lines at debug level.
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		return p[:n-1]
	}
	return p
}
