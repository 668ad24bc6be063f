package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Limits of the /metrics server.
const (
	// Path is where [Metrics.Serve] mounts the handler.
	Path = "/metrics"

	maxScrapesInFlight = 4
	scrapeTimeout      = 10 * time.Second
	readHeaderTimeout  = 5 * time.Second
	writeTimeout       = scrapeTimeout + 5*time.Second
	idleTimeout        = 60 * time.Second
	shutdownTimeout    = 5 * time.Second
)

// ServeOptions are the extras of the metrics listener.
type ServeOptions struct {
	// Profiling serves Go's runtime profiles (net/http/pprof) under /debug/pprof/.
	Profiling bool
}

// ListenAndServe binds addr over TCP and calls [Metrics.Serve].
func (m *Metrics) ListenAndServe(ctx context.Context, addr string, opts ServeOptions) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	return m.Serve(ctx, ln, opts)
}

// Serve answers scrapes on ln, which it owns, at [Path] until ctx is done,
// then shuts down, waiting a few seconds at most for in-flight scrapes.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, opts ServeOptions) error {
	mux := http.NewServeMux()
	mux.Handle(Path, m.Handler())
	if opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	}
	return nil
}
