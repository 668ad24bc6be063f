package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/internal/fsutil"
)

// ErrCertificateExpired means the certificate expired before it could be
// renewed; only a new enrollment helps.
var ErrCertificateExpired = errors.New("client certificate expired: enroll again")

// RenewerOptions configure a Renewer.
type RenewerOptions struct {
	StateDir string // as given to Enroll
	Gateway  string // "host:port"
	// Gateways are more gateways of the same cluster ("host:port"), tried in order when
	// Gateway cannot renew (unreachable, or an error other than a refusal).
	Gateways   []string
	ServerName string   // optional TLS server name override (default: each gateway's host)
	Dial       DialFunc // optional dialer
	Timeout    time.Duration
	// Now and After are the clock; nil means the wall clock.
	Now                func() time.Time
	After              func(time.Duration) <-chan time.Time
	RetryMin, RetryMax time.Duration // backoff after a failed renewal
	Logger             zerolog.Logger
}

// Renewer renews the client certificate at two thirds of its lifetime over
// mutual TLS with the certificate itself, keeping the key; a certificate from
// a sign-in (SSOFile present) is renewed by signing in again with the
// refresh token instead. It is safe for
// concurrent use.
type Renewer struct {
	opts RenewerOptions
	mu   sync.Mutex
	st   *State
}

// NewRenewer loads the credentials from opts.StateDir.
func NewRenewer(opts RenewerOptions) (*Renewer, error) {
	if opts.Gateway == "" {
		return nil, errors.New("renewer: gateway is required")
	}
	st, err := Load(opts.StateDir)
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 5 * time.Second
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(5*time.Minute, opts.RetryMin)
	}
	return &Renewer{opts: opts, st: st}, nil
}

// State returns the current credentials.
func (r *Renewer) State() *State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// GetClientCertificate is a tls.Config callback presenting the current
// certificate.
func (r *Renewer) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := r.State().Certificate
	return &c, nil
}

// NextRenewal is when the current certificate reaches two thirds of its
// lifetime.
func (r *Renewer) NextRenewal() time.Time {
	leaf := r.State().Leaf
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
}

// Renew renews the certificate now.
func (r *Renewer) Renew(ctx context.Context) error {
	st := r.State()
	if !r.opts.Now().Before(st.Leaf.NotAfter) {
		return ErrCertificateExpired
	}
	ssoSt, signedIn, err := loadSSO(r.opts.StateDir)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	var chain []*x509.Certificate
	var errs []error
	for _, gw := range append([]string{r.opts.Gateway}, r.opts.Gateways...) {
		ep := endpoint{gateway: gw, serverName: r.opts.ServerName, dial: r.opts.Dial,
			timeout: r.opts.Timeout, root: st.Root, clientCert: r.GetClientCertificate}
		var err error
		if signedIn {
			key, ok := st.Certificate.PrivateKey.(*ecdsa.PrivateKey)
			if !ok {
				return errors.New("renew: the key is not ECDSA")
			}
			chain, err = r.renewSSO(ctx, ssoSt, ep, key)
		} else {
			chain, err = postChain(ctx, ep, PathRenew, RenewRequest{})
		}
		if err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", gw, err))
		if permanent(err) || ctx.Err() != nil {
			break
		}
	}
	if chain == nil {
		return fmt.Errorf("renew: %w", errors.Join(errs...))
	}
	if err := verifyIssued(chain, st.Root, st.Leaf.PublicKey); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(r.opts.StateDir, CertFile), chainPEM(chain), filesPerm); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	return r.reload()
}

func (r *Renewer) reload() error {
	st, err := Load(r.opts.StateDir)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	r.mu.Lock()
	r.st = st
	r.mu.Unlock()
	r.opts.Logger.Info().Str("identity", st.Identity).Str("serial", st.Leaf.SerialNumber.String()).
		Time("not_after", st.Leaf.NotAfter).Msg("client certificate renewed")
	return nil
}

// Run renews at two thirds of each certificate's lifetime until ctx ends,
// retrying failures with backoff. It returns when the gateway refuses
// (401/403) or the certificate has expired: retrying cannot help then.
func (r *Renewer) Run(ctx context.Context) error {
	backoff := r.opts.RetryMin
	for {
		wait := r.NextRenewal().Sub(r.opts.Now())
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
		err := r.Renew(ctx)
		if err == nil {
			backoff = r.opts.RetryMin
			continue
		}
		if permanent(err) || ctx.Err() != nil {
			return err
		}
		r.opts.Logger.Warn().Err(err).Dur("retry_in", backoff).Msg("certificate renewal failed")
		if err := r.sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, r.opts.RetryMax)
	}
}

func (r *Renewer) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.opts.After(d):
		return nil
	}
}

func permanent(err error) bool {
	if errors.Is(err, ErrCertificateExpired) || errors.Is(err, ErrSignInAgain) {
		return true
	}
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden)
}
