package console

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Cookie names: the __Host- prefix makes the browser insist on Secure, Path=/ and no Domain.
const (
	sessionCookie = "__Host-dstm-session"
	loginCookie   = "__Host-dstm-login"
)

// contentSecurityPolicy allows only the console's own script, style and connections: no
// inline script, no framing, forms posting only to the console.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxForm bounds a POST body.
const maxForm = 64 << 10

// originOf returns the origin of the console URL (scheme://host[:port], lower case).
func originOf(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("console: url %q is not an https URL", raw)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// secure sets the security headers on every answer; pages and JSON are not cached.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "max-age=300")
		} else {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// viewer is who makes a request.
type viewer struct {
	Identity string
	Method   string // MethodSSO or MethodCertificate
	Operator bool
	sess     session
}

// errCSRF and errOrigin are why checkPost refuses a POST.
var (
	errCSRF   = errors.New("the form's CSRF token is missing or wrong")
	errOrigin = errors.New("the request does not come from the console's own pages")
)

// checkPost refuses a POST that does not come from the console's pages: its Origin must be
// the console's (or, where the browser sends "null" because of Referrer-Policy, the Fetch
// metadata must say same-origin) and its form must carry the session's CSRF token.
func (s *Server) checkPost(r *http.Request, v viewer) error {
	switch origin := r.Header.Get("Origin"); {
	case origin != "" && origin != "null":
		if !strings.EqualFold(origin, s.origin) {
			return fmt.Errorf("%w: Origin %q", errOrigin, origin)
		}
	case r.Header.Get("Sec-Fetch-Site") != "same-origin":
		return fmt.Errorf("%w: Origin %q, Sec-Fetch-Site %q", errOrigin, origin, r.Header.Get("Sec-Fetch-Site"))
	}
	got := r.PostFormValue("csrf")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(v.sess.csrf)) != 1 {
		return errCSRF
	}
	return nil
}

// setCookie sets a __Host- cookie: Secure, HttpOnly, SameSite=Lax, Path=/.
func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
	} else if value == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// viewerOf returns who makes r: the session of its cookie, or a new session for a verified
// operator certificate; ok false when neither. A certificate session holds only while the
// request carries the same certificate identity, still an operator's.
func (s *Server) viewerOf(w http.ResponseWriter, r *http.Request) (viewer, bool) {
	certID, certErr := s.certificateIdentity(r)
	if c, err := r.Cookie(sessionCookie); err == nil {
		ss, err := s.store.get(c.Value)
		switch {
		case err != nil:
		case ss.method == MethodCertificate && (certErr != nil || certID != ss.identity || !s.isAdmin(certID)):
			s.store.remove(ss.id)
		default:
			return viewer{Identity: ss.identity, Method: ss.method, Operator: ss.ssoAdmin || s.isAdmin(ss.identity), sess: ss}, true
		}
	}
	if certErr != nil || !s.isAdmin(certID) {
		return viewer{}, false
	}
	ss := s.store.create(certID, MethodCertificate, false)
	setCookie(w, sessionCookie, ss.id, lifetime)
	s.log.Info().Str("identity", certID).Str("method", MethodCertificate).Str("remote", r.RemoteAddr).Msg("console: signed in")
	s.cfg.Metrics.ConsoleSignIn(MethodCertificate, "ok")
	return viewer{Identity: certID, Method: MethodCertificate, Operator: true, sess: ss}, true
}

// errNoCertificate: the request carries no client certificate.
var errNoCertificate = errors.New("no client certificate")

// certificateIdentity verifies the request's client certificate (our CA, validity,
// revocation, policy) and returns its identity.
func (s *Server) certificateIdentity(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || s.cfg.Certificates == nil {
		return "", errNoCertificate
	}
	p, err := s.cfg.Certificates.VerifyState(*r.TLS)
	if err != nil {
		return "", err
	}
	return p.Identity.Name, nil
}
