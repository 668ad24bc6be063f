// Package sso verifies sign-ins at the company's OpenID provider: ID tokens
// for certificate enrollment (the client's device or browser flow) and for
// the web console. It maps the token onto our terms: an identity (the
// verified email, or another configured claim), the directory groups, the
// policy groups they map to, and whether the user is an operator.
//
// The provider is discovered on first use, not at start, so a provider that
// is down never stops the gateway from starting: sign-ins fail with
// ErrUnavailable until it answers. Discovery and keys are cached by go-oidc
// (keys refetched when a token names an unknown key).
package sso

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/auth"
)

// Errors; each error Verify returns wraps one of them.
var (
	// ErrInvalidToken: not a valid ID token of our provider for this
	// client (signature, issuer, audience, expiry, claims).
	ErrInvalidToken = errors.New("invalid ID token")
	// ErrNotAllowed: a valid token of a user the configuration does not
	// admit (domain, groups, unverified email).
	ErrNotAllowed = errors.New("sign-in not allowed")
	// ErrUnavailable: the provider could not be reached.
	ErrUnavailable = errors.New("identity provider unavailable")
)

// Config is the `sso` section of gateway.yaml.
type Config struct {
	// Issuer is the provider's issuer URL (https).
	Issuer string `yaml:"issuer"`
	// ClientID is the public client dstm-client signs in with (device
	// grant, or code flow with PKCE on a loopback redirect).
	ClientID string `yaml:"client_id"`
	// CAFile adds roots for the provider's TLS certificate (PEM); the
	// system roots are always used.
	CAFile string `yaml:"ca_file,omitempty"`
	// IdentityClaim names the claim that becomes the identity; "email"
	// (the default) also requires email_verified.
	IdentityClaim string `yaml:"identity_claim,omitempty"`
	// GroupsClaim names the claim listing the user's directory groups
	// (default "groups").
	GroupsClaim string `yaml:"groups_claim,omitempty"`
	// AllowedDomains, when set, admits only identities name@domain of
	// these domains.
	AllowedDomains []string `yaml:"allowed_domains,omitempty"`
	// AllowedGroups, when set, admits only members of at least one of
	// these directory groups.
	AllowedGroups []string `yaml:"allowed_groups,omitempty"`
	// Groups maps directory groups onto policy groups; the certificate
	// carries the policy groups, and policy resolves them.
	Groups map[string]string `yaml:"groups,omitempty"`
	// AdminGroups are the directory groups of console operators.
	AdminGroups []string `yaml:"admin_groups,omitempty"`
}

// Defaults.
const (
	DefaultIdentityClaim = "email"
	DefaultGroupsClaim   = "groups"
)

// Validate checks the section without touching the network; every error
// names its field under prefix (e.g. "sso").
func (c Config) Validate(prefix string, policyGroups map[string]bool) error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, fmt.Sprintf(format, a...)))
	}
	switch u, err := url.Parse(c.Issuer); {
	case c.Issuer == "":
		bad("issuer", "required")
	case err != nil:
		bad("issuer", "%v", err)
	case u.Scheme != "https" || u.Host == "":
		bad("issuer", "%q is not an https URL", c.Issuer)
	case u.RawQuery != "" || u.Fragment != "":
		bad("issuer", "%q has a query or fragment", c.Issuer)
	}
	if c.ClientID == "" {
		bad("client_id", "required")
	}
	switch c.IdentityClaim {
	case "", "email", "sub", "upn":
	default:
		// A claim the user can edit at the provider (a display or preferred name) would let
		// a user take another's identity.
		bad("identity_claim", "%q: want email, sub or upn (claims the user cannot change)", c.IdentityClaim)
	}
	if c.CAFile != "" {
		if b, err := os.ReadFile(c.CAFile); err != nil {
			bad("ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			bad("ca_file", "%s holds no PEM certificate", c.CAFile)
		}
	}
	for i, d := range c.AllowedDomains {
		if d == "" || strings.ContainsAny(d, "@ /") {
			bad(fmt.Sprintf("allowed_domains[%d]", i), "%q is not a domain", d)
		}
	}
	for dir, pg := range c.Groups {
		if dir == "" {
			bad("groups", "empty directory group name")
		}
		if policyGroups != nil && !policyGroups[pg] {
			bad(fmt.Sprintf("groups[%q]", dir), "policy group %q is not defined in policy.groups", pg)
		}
	}
	return errors.Join(errs...)
}

func (c Config) identityClaim() string {
	if c.IdentityClaim == "" {
		return DefaultIdentityClaim
	}
	return c.IdentityClaim
}

func (c Config) groupsClaim() string {
	if c.GroupsClaim == "" {
		return DefaultGroupsClaim
	}
	return c.GroupsClaim
}

// Options are the Verifier's dependencies.
type Options struct {
	// HTTPClient reaches the provider; nil: one with the system roots plus
	// Config.CAFile and a 15 s timeout.
	HTTPClient *http.Client
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
}

// Claims is a verified sign-in.
type Claims struct {
	Identity        string   // from IdentityClaim, lower-cased if an email
	Subject         string   // the provider's sub
	DirectoryGroups []string // the groups claim, sorted
	PolicyGroups    []string // mapped through Config.Groups, sorted, unique
	Admin           bool     // member of an AdminGroups group
	Nonce           string
	Expiry          time.Time
	IssuedAt        time.Time
	// AuthTime is when the user last signed in interactively (auth_time; IssuedAt when the
	// provider does not say). ID tokens from a refresh token keep the original one.
	AuthTime time.Time
	// TokenHash is the hex SHA-256 of the token's verified payload, for single use: every
	// encoding of one token (whitespace, non-canonical base64) has the same hash.
	TokenHash string
}

// Verifier verifies ID tokens of one provider. Safe for concurrent use.
type Verifier struct {
	cfg  Config
	hc   *http.Client
	now  func() time.Time
	mu   sync.Mutex
	prov *oidc.Provider
	// lastFail rate-limits discovery attempts while the provider is down.
	lastFail    time.Time
	lastFailErr error
}

// retryAfter is how long a failed discovery is remembered.
const retryAfter = 2 * time.Second

// New returns a verifier for cfg (which should have passed Validate). It
// does not contact the provider.
func New(cfg Config, o Options) (*Verifier, error) {
	hc := o.HTTPClient
	if hc == nil {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if cfg.CAFile != "" {
			b, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("sso.ca_file: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("sso.ca_file: %s: no PEM certificate", cfg.CAFile)
			}
		}
		hc = &http.Client{
			Timeout: 15 * time.Second,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout: 10 * time.Second,
				MaxIdleConnsPerHost: 4,
			},
		}
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{cfg: cfg, hc: hc, now: now}, nil
}

// Config returns the configuration the verifier was made with.
func (v *Verifier) Config() Config { return v.cfg }

// HTTPClient is the client that reaches the provider.
func (v *Verifier) HTTPClient() *http.Client { return v.hc }

// provider discovers the provider once; while it is down, at most one
// attempt per retryAfter.
func (v *Verifier) provider(ctx context.Context) (*oidc.Provider, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.prov != nil {
		return v.prov, nil
	}
	if !v.lastFail.IsZero() && time.Since(v.lastFail) < retryAfter {
		return nil, v.lastFailErr
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, v.hc), v.cfg.Issuer)
	if err != nil {
		v.lastFail = time.Now()
		v.lastFailErr = fmt.Errorf("%w: discovery at %s: %v", ErrUnavailable, v.cfg.Issuer, err)
		return nil, v.lastFailErr
	}
	v.prov = p
	return p, nil
}

// Endpoint returns the provider's OAuth 2.0 endpoints (with the device
// authorization URL when it has one).
func (v *Verifier) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	p, err := v.provider(ctx)
	if err != nil {
		return oauth2.Endpoint{}, err
	}
	return p.Endpoint(), nil
}

// Verify checks rawIDToken: signature by the provider's keys, issuer,
// audience (and azp when present) equal to audience, expiry against the
// injected clock; then the configured admission (verified email, domains,
// groups). It maps the claims; it does not check single use (TokenHash is
// for the caller) nor the nonce (Claims.Nonce).
func (v *Verifier) Verify(ctx context.Context, rawIDToken, audience string) (Claims, error) {
	rawIDToken = strings.TrimSpace(rawIDToken)
	if rawIDToken == "" {
		return Claims{}, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(rawIDToken) > 16<<10 {
		return Claims{}, fmt.Errorf("%w: %d bytes, at most 16 KiB", ErrInvalidToken, len(rawIDToken))
	}
	p, err := v.provider(ctx)
	if err != nil {
		return Claims{}, err
	}
	// p.Verifier shares the provider's key set (fetched once, refetched for an unknown key);
	// go-oidc checks issuer, audience and expiry before it looks at keys.
	idt, err := p.Verifier(&oidc.Config{ClientID: audience, Now: v.now}).Verify(oidc.ClientContext(ctx, v.hc), rawIDToken)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return Claims{}, fmt.Errorf("%w: expired at %s", ErrInvalidToken, exp.Expiry.UTC().Format(time.RFC3339))
		}
		if isFetchError(err) {
			return Claims{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	var payload json.RawMessage
	if err := idt.Claims(&payload); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(payload, &raw); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	if azp, ok := raw["azp"].(string); ok && azp != "" && azp != audience {
		return Claims{}, fmt.Errorf("%w: authorized party %q is not %q", ErrInvalidToken, azp, audience)
	}
	sum := sha256.Sum256(payload)
	c := Claims{Subject: idt.Subject, Nonce: idt.Nonce, Expiry: idt.Expiry, IssuedAt: idt.IssuedAt, AuthTime: idt.IssuedAt,
		TokenHash: hex.EncodeToString(sum[:])}
	if at, ok := raw["auth_time"].(float64); ok && at > 0 {
		c.AuthTime = time.Unix(int64(at), 0)
	}
	if c.Identity, err = v.identity(raw); err != nil {
		return Claims{}, err
	}
	if c.DirectoryGroups, err = stringList(raw[v.cfg.groupsClaim()]); err != nil {
		return Claims{}, fmt.Errorf("%w: claim %q: %v", ErrInvalidToken, v.cfg.groupsClaim(), err)
	}
	return v.admit(c)
}

func (v *Verifier) identity(raw map[string]any) (string, error) {
	name := v.cfg.identityClaim()
	id, _ := raw[name].(string)
	if id == "" {
		return "", fmt.Errorf("%w: the token has no %q claim", ErrInvalidToken, name)
	}
	if name == "email" {
		if ok, _ := raw["email_verified"].(bool); !ok {
			return "", fmt.Errorf("%w: the provider has not verified the email %q", ErrNotAllowed, id)
		}
	}
	// The CA's identities are ASCII and lower case (certs.NormalizeIdentity): the same
	// spelling here, so the console, the certificate and the policy agree, and a look-alike
	// letter cannot pass a domain rule.
	id = strings.ToLower(id)
	if strings.ContainsFunc(id, func(r rune) bool { return r > 0x7e }) {
		return "", fmt.Errorf("%w: claim %q: %q is not ASCII", ErrNotAllowed, name, id)
	}
	if err := auth.ValidIdentity(id); err != nil {
		return "", fmt.Errorf("%w: claim %q: %v", ErrInvalidToken, name, err)
	}
	return id, nil
}

// admit applies the allowed domains and groups and maps the groups.
func (v *Verifier) admit(c Claims) (Claims, error) {
	if len(v.cfg.AllowedDomains) > 0 {
		_, domain, _ := strings.Cut(c.Identity, "@")
		if !slices.ContainsFunc(v.cfg.AllowedDomains, func(d string) bool { return strings.ToLower(d) == domain }) {
			return Claims{}, fmt.Errorf("%w: %q is not in an allowed domain (%s)", ErrNotAllowed, c.Identity, strings.Join(v.cfg.AllowedDomains, ", "))
		}
	}
	in := func(list []string) bool {
		return slices.ContainsFunc(c.DirectoryGroups, func(g string) bool { return slices.Contains(list, g) })
	}
	if len(v.cfg.AllowedGroups) > 0 && !in(v.cfg.AllowedGroups) {
		return Claims{}, fmt.Errorf("%w: %q is in none of the allowed groups (%s)", ErrNotAllowed, c.Identity, strings.Join(v.cfg.AllowedGroups, ", "))
	}
	c.Admin = len(v.cfg.AdminGroups) > 0 && in(v.cfg.AdminGroups)
	for _, g := range c.DirectoryGroups {
		if pg, ok := v.cfg.Groups[g]; ok {
			c.PolicyGroups = append(c.PolicyGroups, pg)
		}
	}
	slices.Sort(c.PolicyGroups)
	c.PolicyGroups = slices.Compact(c.PolicyGroups)
	return c, nil
}

// stringList accepts a JSON list of strings or one string; absent is empty.
func stringList(v any) ([]string, error) {
	var out []string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		out = []string{x}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("not a list of strings")
			}
			out = append(out, s)
		}
	default:
		return nil, fmt.Errorf("not a list of strings")
	}
	if len(out) > 256 {
		return nil, fmt.Errorf("%d groups, at most 256", len(out))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// isFetchError tells a key-fetch failure (provider down) from a bad token.
func isFetchError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "fetching keys") || strings.Contains(s, "failed to get keys")
}
