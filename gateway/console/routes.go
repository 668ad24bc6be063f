package console

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/dstmgw/dstm/gateway/admin"
)

// handlerFunc is a handler for a signed-in viewer.
type handlerFunc func(w http.ResponseWriter, r *http.Request, v viewer)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.FileServerFS(staticFS()))
	mux.HandleFunc("GET /{$}", s.signedIn(s.home))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("GET /auth/login", s.login)
	mux.HandleFunc("GET "+callbackPath, s.callback)
	mux.HandleFunc("POST /auth/logout", s.signedIn(s.post(s.logout)))

	mux.HandleFunc("GET /ops", s.operator(s.overview))
	mux.HandleFunc("GET /ops/sessions", s.operator(s.sessionsPage))
	mux.HandleFunc("GET /ops/leases", s.operator(s.leasesPage))
	mux.HandleFunc("GET /ops/events", s.operator(s.eventsPage))
	mux.HandleFunc("GET /ops/live.json", s.operator(s.live))
	mux.HandleFunc("GET /ops/kick", s.operator(s.kickConfirm))
	mux.HandleFunc("POST /ops/kick", s.operator(s.post(s.kick)))
	mux.HandleFunc("GET /ops/revoke", s.operator(s.revokeConfirm))
	mux.HandleFunc("POST /ops/revoke", s.operator(s.post(s.revoke)))
	mux.HandleFunc("GET /ops/token", s.operator(s.tokenConfirm))
	mux.HandleFunc("POST /ops/token", s.operator(s.post(s.token)))

	mux.HandleFunc("GET /me", s.signedIn(s.devices))
	mux.HandleFunc("GET /me/revoke", s.signedIn(s.selfRevokeConfirm))
	mux.HandleFunc("POST /me/revoke", s.signedIn(s.post(s.selfRevoke)))
	mux.HandleFunc("GET /me/config", s.signedIn(s.clientConfig))

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, viewer{}, http.StatusNotFound, "There is no such page.")
	})
	return secure(mux)
}

// signedIn runs h for a signed-in viewer. Others are sent to the sign-in page (a GET),
// answered 401 (JSON) or refused (a POST).
func (s *Server) signedIn(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, ok := s.viewerOf(w, r)
		switch {
		case ok:
			h(w, r, v)
		case strings.HasSuffix(r.URL.Path, ".json"):
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not signed in"})
		case r.Method == http.MethodPost:
			s.fail(w, r, v, http.StatusForbidden, "You are not signed in (or your session expired).")
		default:
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		}
	}
}

// operator runs h for a signed-in operator; anyone else signed in is refused.
func (s *Server) operator(h handlerFunc) http.HandlerFunc {
	return s.signedIn(func(w http.ResponseWriter, r *http.Request, v viewer) {
		if !v.Operator {
			s.log.Info().Str("identity", v.Identity).Str("method", v.Method).Str("path", r.URL.Path).
				Str("reason", "not an operator").Msg("console: request refused")
			s.cfg.Metrics.ConsoleRefused("not_operator")
			if strings.HasSuffix(r.URL.Path, ".json") {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "operators only"})
				return
			}
			s.fail(w, r, v, http.StatusForbidden, "This page is for the gateway's operators. Your own devices are under “My devices”.")
			return
		}
		h(w, r, v)
	})
}

// post runs h for a POST that comes from the console's pages (checkPost).
func (s *Server) post(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, v viewer) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := s.checkPost(r, v); err != nil {
			s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("path", r.URL.Path).
				Str("remote", r.RemoteAddr).Err(err).Str("reason", "forged or stale form").Msg("console: request refused")
			s.cfg.Metrics.ConsoleRefused("forged_form")
			s.fail(w, r, v, http.StatusForbidden, "This form is stale or was not sent from the console. Reload the page and try again.")
			return
		}
		h(w, r, v)
	}
}

// home sends operators to the overview and users to their devices.
func (s *Server) home(w http.ResponseWriter, r *http.Request, v viewer) {
	if v.Operator {
		http.Redirect(w, r, "/ops", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/me", http.StatusSeeOther)
}

// loginPage offers the sign-in (or explains that a certificate is needed).
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	v, ok := s.viewerOf(w, r)
	if ok {
		http.Redirect(w, r, localPath(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	_, certErr := s.certificateIdentity(r)
	data := struct {
		SSO        bool
		Next       string
		CertIssue  string
		HasCertCfg bool
	}{SSO: s.cfg.SSO != nil, Next: localPath(r.URL.Query().Get("next")), HasCertCfg: s.cfg.Certificates != nil}
	switch {
	case certErr == nil:
		data.CertIssue = "Your client certificate is valid but not an operator's."
	case !errors.Is(certErr, errNoCertificate):
		data.CertIssue = "Your client certificate was refused: " + certErr.Error() + "."
	}
	s.render(w, http.StatusOK, "login", v, "Sign in", "", data)
}

// backendError maps a backend error onto an HTTP status and logs what is not the
// operator's mistake.
func (s *Server) backendError(w http.ResponseWriter, r *http.Request, v viewer, what string, err error) {
	status := http.StatusInternalServerError
	text := what + " failed: internal error (see the gateway's log)."
	switch {
	case errors.Is(err, admin.ErrNotFound):
		status, text = http.StatusNotFound, what+": "+err.Error()
	case errors.Is(err, admin.ErrInvalid):
		status, text = http.StatusBadRequest, what+": "+err.Error()
	case errors.Is(err, admin.ErrUnavailable):
		status, text = http.StatusServiceUnavailable, what+": "+err.Error()
	default:
		s.log.Error().Err(err).Str("identity", v.Identity).Str("method", v.Method).Str("path", r.URL.Path).Msg("console: " + what + " failed")
	}
	s.fail(w, r, v, status, text)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
