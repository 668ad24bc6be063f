package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/sso"
)

// callbackPath is where the provider sends the browser back: Config.URL + callbackPath is
// the redirect URI registered for the console's client.
const callbackPath = "/auth/callback"

// providerTimeout bounds the console's requests to the provider (discovery, token).
const providerTimeout = 15 * time.Second

// localPath returns p if it is a path on the console ("/ops"), else "/": a sign-in never
// redirects elsewhere. Browsers drop tabs and line breaks from a Location and read a
// backslash as a slash, so a path with a control character or a backslash is refused
// whole, and what is left must parse as a path alone.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsRune(p, '\\') ||
		strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "/"
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	return p
}

func (s *Server) oauthConfig(ep oauth2.Endpoint) *oauth2.Config {
	return &oauth2.Config{
		ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, Endpoint: ep,
		RedirectURL: s.origin + callbackPath, Scopes: []string{oidc.ScopeOpenID, "email", "profile"},
	}
}

// login starts the authorization code flow with PKCE, state and nonce: the state goes into
// a short-lived cookie too, which the callback must bring back (no sign-in forced on a
// browser from elsewhere).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.SSO == nil {
		s.fail(w, r, viewer{}, http.StatusNotFound, "Single sign-on is not configured on this gateway; operators use an admin client certificate.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), providerTimeout)
	defer cancel()
	ep, err := s.cfg.SSO.Endpoint(ctx)
	if err != nil {
		s.log.Warn().Err(err).Str("remote", r.RemoteAddr).Str("reason", "provider unavailable").Msg("console: sign-in failed")
		s.fail(w, r, viewer{}, http.StatusServiceUnavailable, "The identity provider cannot be reached; try again in a moment.")
		return
	}
	p := s.store.begin(localPath(r.URL.Query().Get("next")))
	setCookie(w, loginCookie, p.cookie, pendingTimeout)
	u := s.oauthConfig(ep).AuthCodeURL(p.state, oauth2.S256ChallengeOption(p.verifier), oidc.Nonce(p.nonce))
	http.Redirect(w, r, u, http.StatusFound)
}

// signInError is a refused sign-in: the status and text for the browser, the reason for
// the log.
type signInError struct {
	status int
	text   string
	reason string
	err    error
}

func (e *signInError) Error() string { return e.reason }

// callback finishes a sign-in: state against the cookie, the code exchanged with the PKCE
// verifier and the client secret, the ID token verified (issuer, signature, audience = the
// console's client, expiry, admission) and its nonce checked; then a session.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	setCookie(w, loginCookie, "", 0)
	p, claims, err := s.finishSignIn(r)
	if err != nil {
		var se *signInError
		if !errors.As(err, &se) {
			se = &signInError{status: http.StatusInternalServerError, text: "Sign-in failed.", reason: "internal error", err: err}
		}
		ev := s.log.Warn().Str("remote", r.RemoteAddr).Str("reason", se.reason)
		if se.err != nil {
			ev = ev.Err(se.err)
		}
		ev.Msg("console: sign-in refused")
		result := "refused"
		if se.status >= http.StatusInternalServerError {
			result = "error"
		}
		s.cfg.Metrics.ConsoleSignIn(MethodSSO, result)
		s.fail(w, r, viewer{}, se.status, se.text)
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil { // a sign-in replaces the browser's session
		s.store.remove(old.Value)
	}
	ss := s.store.create(claims.Identity, MethodSSO, claims.Admin)
	setCookie(w, sessionCookie, ss.id, lifetime)
	operator := ss.ssoAdmin || s.isAdmin(ss.identity)
	s.log.Info().Str("identity", ss.identity).Str("method", MethodSSO).Bool("operator", operator).
		Str("remote", r.RemoteAddr).Msg("console: signed in")
	s.cfg.Metrics.ConsoleSignIn(MethodSSO, "ok")
	next := p.next
	if next == "/" && operator {
		next = "/ops"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) finishSignIn(r *http.Request) (pending, sso.Claims, error) {
	if s.cfg.SSO == nil {
		return pending{}, sso.Claims{}, &signInError{status: http.StatusNotFound, text: "Single sign-on is not configured.", reason: "no sso"}
	}
	q := r.URL.Query()
	cookie := ""
	if c, err := r.Cookie(loginCookie); err == nil {
		cookie = c.Value
	}
	p, ok := s.store.finish(q.Get("state"), cookie)
	if !ok {
		return p, sso.Claims{}, &signInError{status: http.StatusBadRequest,
			text: "This sign-in is unknown, expired or was started in another browser. Start again.", reason: "bad or expired state"}
	}
	if e := q.Get("error"); e != "" {
		return p, sso.Claims{}, &signInError{status: http.StatusForbidden,
			text: "The identity provider refused the sign-in: " + e + ".", reason: "provider error: " + e + ": " + q.Get("error_description")}
	}
	ctx, cancel := context.WithTimeout(r.Context(), providerTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.cfg.SSO.HTTPClient())
	ep, err := s.cfg.SSO.Endpoint(ctx)
	if err != nil {
		return p, sso.Claims{}, &signInError{status: http.StatusServiceUnavailable, text: "The identity provider cannot be reached; try again in a moment.", reason: "provider unavailable", err: err}
	}
	tok, err := s.oauthConfig(ep).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		return p, sso.Claims{}, &signInError{status: http.StatusBadGateway, text: "The identity provider did not accept the sign-in code. Start again.", reason: "code exchange failed", err: err}
	}
	raw, _ := tok.Extra("id_token").(string)
	claims, err := s.cfg.SSO.Verify(ctx, raw, s.cfg.ClientID)
	switch {
	case errors.Is(err, sso.ErrNotAllowed):
		return p, claims, &signInError{status: http.StatusForbidden, text: "Your account is not allowed to use this gateway.", reason: "not allowed", err: err}
	case errors.Is(err, sso.ErrUnavailable):
		return p, claims, &signInError{status: http.StatusServiceUnavailable, text: "The identity provider cannot be reached; try again in a moment.", reason: "provider unavailable", err: err}
	case err != nil:
		return p, claims, &signInError{status: http.StatusForbidden, text: "The identity provider's answer could not be verified. Start again.", reason: "invalid ID token", err: err}
	case claims.Nonce == "" || claims.Nonce != p.nonce:
		return p, claims, &signInError{status: http.StatusForbidden, text: "The identity provider's answer does not belong to this sign-in. Start again.", reason: "nonce mismatch (replayed token?)"}
	}
	return p, claims, nil
}

// logout ends the session (a POST with the CSRF token).
func (s *Server) logout(w http.ResponseWriter, r *http.Request, v viewer) {
	s.store.remove(v.sess.id)
	setCookie(w, sessionCookie, "", 0)
	s.log.Info().Str("identity", v.Identity).Str("method", v.Method).Msg("console: signed out")
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
