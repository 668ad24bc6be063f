package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Network is the userspace network connections go through (*netstack.Net). DialContext
// resolves names itself.
type Network interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Limits of a Server.
const (
	DefaultMaxConns  = 512              // proxied connections at once; more are closed at once (counted)
	handshakeTimeout = 10 * time.Second // the client's request, and the dial through the tunnel
)

// ErrNoTunnel is a dial while no tunnel is up.
var ErrNoTunnel = errors.New("proxy: no tunnel")

// Server proxies connections through the current Network.
type Server struct {
	log     zerolog.Logger
	net     atomic.Pointer[netRef]
	slots   chan struct{}
	refused atomic.Uint64 // connections over the limit
	failed  atomic.Uint64 // requests refused or whose dial failed
	proxied atomic.Uint64 // connections set up
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{} // open client connections, closed by Close
	closed  bool
}

type netRef struct{ n Network }

// New returns a Server with no network (every request fails until SetNetwork).
func New(maxConns int, log zerolog.Logger) *Server {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	return &Server{log: log, slots: make(chan struct{}, maxConns), conns: map[net.Conn]struct{}{}}
}

// SetNetwork makes n the network new connections go through; nil: none (no tunnel).
func (s *Server) SetNetwork(n Network) {
	if n == nil {
		s.net.Store(nil)
		return
	}
	s.net.Store(&netRef{n})
}

func (s *Server) dial(ctx context.Context, address string) (net.Conn, error) {
	r := s.net.Load()
	if r == nil {
		return nil, ErrNoTunnel
	}
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	// tcp4: the tunnel carries IPv4 only; names resolve to their A records.
	return r.n.DialContext(ctx, "tcp4", address)
}

// Stats counts the Server's connections.
type Stats struct{ Proxied, Failed, Refused uint64 }

// Stats returns the counts.
func (s *Server) Stats() Stats {
	return Stats{Proxied: s.proxied.Load(), Failed: s.failed.Load(), Refused: s.refused.Load()}
}

// Listener is one proxy listener of a client: its kind ("socks5" or "http") and address.
type Listener struct {
	Kind string
	Addr string // host:port, on a loopback address
}

// ParseURL reads a proxy URL: socks5://HOST:PORT (socks5h too) or http://HOST:PORT, HOST a
// loopback address or localhost: the proxy must not be an open door into the company network.
func ParseURL(s string) (Listener, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Listener{}, fmt.Errorf("proxy %q: %w", s, err)
	}
	var l Listener
	switch u.Scheme {
	case "socks5", "socks5h":
		l.Kind = "socks5"
	case "http":
		l.Kind = "http"
	default:
		return Listener{}, fmt.Errorf("proxy %q: want socks5://HOST:PORT or http://HOST:PORT", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return Listener{}, fmt.Errorf("proxy %q: only a scheme, a host and a port", s)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		return Listener{}, fmt.Errorf("proxy %q: the port is required", s)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return Listener{}, fmt.Errorf("proxy %q: listen on a loopback address (127.0.0.1, ::1, localhost), not %q", s, host)
		}
	}
	l.Addr = net.JoinHostPort(host, port)
	return l, nil
}

// Serve accepts connections on ln for the kind of proxy until ctx ends or Close.
func (s *Server) Serve(ctx context.Context, kind string, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	handle := s.serveSOCKS5
	if kind == "http" {
		handle = s.serveHTTP
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait and go on, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("proxy: accept failed")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		select {
		case s.slots <- struct{}{}:
		default:
			s.refused.Add(1)
			c.Close()
			continue
		}
		if !s.track(c) {
			<-s.slots
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			defer s.untrack(c)
			handle(ctx, c)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close ends every proxied connection and waits for their goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// splice copies both ways until both directions end; a direction that ends closes the
// other side's write half (or the whole connection) so that the peer sees the end.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// dialError describes a failed dial for a log line without the internals of netstack.
func dialError(err error) string {
	if errors.Is(err, ErrNoTunnel) {
		return "no tunnel"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}
