package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"
)

// Server limits.
const (
	maxRequestBody    = 64 << 10
	maxNameLen        = 1024 // identity, serial or session ID
	readHeaderTimeout = 5 * time.Second
	requestTimeout    = 30 * time.Second
	idleTimeout       = 60 * time.Second
	shutdownTimeout   = 5 * time.Second
)

// Server serves the admin API over HTTP on a unix socket.
type Server struct {
	b   Backend
	log zerolog.Logger
}

// NewServer returns a server for b. Requests are logged at debug level and
// internal (500) errors at warn level; the zero Logger disables logging.
func NewServer(b Backend, log zerolog.Logger) *Server {
	return &Server{b: b, log: log}
}

// Serve binds path with [Listen] and serves until ctx is done. It returns
// nil after a shutdown caused by ctx, and an error wrapping [ErrInUse] if
// another gateway owns the socket.
func (s *Server) Serve(ctx context.Context, path string) error {
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln, which it owns, until ctx is done, then shuts
// down, waiting a few seconds at most for requests in flight.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           http.TimeoutHandler(s.Handler(), requestTimeout, `{"code":"unavailable","error":"request timed out"}`),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          log.New(warnWriter{s.log}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc: // srv.Serve has closed ln
		return fmt.Errorf("admin: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	<-errc
	if err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// warnWriter sends net/http's own complaints (TLS-less, so mostly panics in
// handlers and accept errors) to the logger.
type warnWriter struct{ l zerolog.Logger }

func (w warnWriter) Write(p []byte) (int, error) {
	w.l.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Handler returns the API's routes:
//
//	GET    /v1/leases          → []Lease
//	GET    /v1/sessions        → []Session
//	DELETE /v1/sessions/{id}   → 204
//	POST   /v1/revoke          {"target": "…"}              → RevokeResult
//	POST   /v1/tokens          {"identity": "…", "ttl": "…"} → TokenResult
//	GET    /v1/status          → Status
//
// Errors are {"code": "…", "error": "…"} with status 400, 404, 503 or 500.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/leases", s.leases)
	mux.HandleFunc("GET /v1/sessions", s.sessions)
	mux.HandleFunc("DELETE /v1/sessions/{id}", s.kick)
	mux.HandleFunc("POST /v1/revoke", s.revoke)
	mux.HandleFunc("POST /v1/tokens", s.token)
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, fmt.Errorf("%w: no route %s %s", ErrNotFound, r.Method, r.URL.Path))
	})
	return mux
}

func (s *Server) leases(w http.ResponseWriter, r *http.Request) {
	v, err := s.b.Leases(r.Context())
	s.reply(w, r, http.StatusOK, nonNil(v), err)
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	v, err := s.b.Sessions(r.Context())
	s.reply(w, r, http.StatusOK, nonNil(v), err)
}

func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := validName("session", id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.reply(w, r, http.StatusNoContent, nil, s.b.Kick(r.Context(), id))
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := validName("target", req.Target); err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.b.Revoke(r.Context(), req.Target)
	if v.Serials == nil {
		v.Serials = []string{}
	}
	s.reply(w, r, http.StatusOK, v, err)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	ttl, err := parseTTL(req.TTL)
	if err == nil {
		err = validName("identity", req.Identity)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.b.Token(r.Context(), req.Identity, ttl)
	s.reply(w, r, http.StatusOK, v, err)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	v, err := s.b.Status(r.Context())
	s.reply(w, r, http.StatusOK, v, err)
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, code int, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Int("status", code).Msg("admin request")
	if code == http.StatusNoContent {
		w.WriteHeader(code)
		return
	}
	writeJSON(w, code, v)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, status := classify(err)
	ev := s.log.Debug()
	if status == http.StatusInternalServerError {
		ev = s.log.Warn()
	}
	ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).Err(err).Msg("admin request failed")
	writeJSON(w, status, errorBody{Code: code, Error: err.Error()})
}

func classify(err error) (code string, status int) {
	switch {
	case errors.Is(err, ErrNotFound):
		return codeNotFound, http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		return codeInvalid, http.StatusBadRequest
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return codeUnavailable, http.StatusServiceUnavailable
	default:
		return codeInternal, http.StatusInternalServerError
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The client may be gone; nothing useful to do with a write error.
	_ = json.NewEncoder(w).Encode(v)
}

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return nil
}

func validName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(s) > maxNameLen:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, maxNameLen)
	case strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }):
		return fmt.Errorf("%w: %s %q contains spaces or control characters", ErrInvalid, what, s)
	}
	return nil
}

func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w: ttl: %v", ErrInvalid, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%w: ttl %s is not positive", ErrInvalid, s)
	}
	return d, nil
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}
