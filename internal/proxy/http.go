package proxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"time"
)

// serveHTTP runs one HTTP proxy connection: CONNECT tunnels (HTTPS and anything else), and
// requests in absolute form (http://host/path) forwarded through the tunnel.
func (s *Server) serveHTTP(ctx context.Context, c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		s.failed.Add(1)
		return
	}
	if req.Method != http.MethodConnect {
		s.forward(ctx, c, br, req)
		return
	}
	up, err := s.dial(ctx, req.Host)
	if err != nil {
		s.failed.Add(1)
		writeStatus(c, http.StatusBadGateway, "dial "+req.Host+": "+dialError(err))
		s.log.Debug().Str("destination", req.Host).Str("error", dialError(err)).Msg("proxy: CONNECT failed")
		return
	}
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		up.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.proxied.Add(1)
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			up.Close()
			return
		}
	}
	splice(c, up)
}

// forward sends requests in absolute form through the tunnel, one connection's requests in
// turn (keep-alive), until the client or the server closes.
func (s *Server) forward(ctx context.Context, c net.Conn, br *bufio.Reader, req *http.Request) {
	tr := &http.Transport{
		DialContext:           func(ctx context.Context, _, addr string) (net.Conn, error) { return s.dial(ctx, addr) },
		ResponseHeaderTimeout: time.Minute,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   4,
	}
	defer tr.CloseIdleConnections()
	for {
		if req.URL.Scheme != "http" || req.URL.Host == "" {
			s.failed.Add(1)
			writeStatus(c, http.StatusBadRequest, "want CONNECT or a request in absolute form (http://host/path)")
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		out := req.Clone(ctx)
		out.RequestURI = ""
		removeHopHeaders(out.Header)
		resp, err := tr.RoundTrip(out)
		if err != nil {
			s.failed.Add(1)
			writeStatus(c, http.StatusBadGateway, "dstm-client proxy: "+req.URL.Host+": "+dialError(err))
			s.log.Debug().Str("destination", req.URL.Host).Str("error", dialError(err)).Msg("proxy: request failed")
			return
		}
		s.proxied.Add(1)
		removeHopHeaders(resp.Header)
		err = resp.Write(c) // closes the body
		if err != nil || req.Close || resp.Close {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute)) // idle keep-alive
		if req, err = http.ReadRequest(br); err != nil {
			return
		}
	}
}

// hopHeaders are the headers of one hop (RFC 9110, section 7.6.1), not forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func writeStatus(c net.Conn, code int, msg string) {
	resp := &http.Response{
		StatusCode: code, ProtoMajor: 1, ProtoMinor: 1, Close: true,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
	}
	body := msg + "\n"
	resp.ContentLength = int64(len(body))
	resp.Body = http.NoBody
	bw := bufio.NewWriter(c)
	_ = resp.Write(bw)
	_, _ = bw.WriteString(body)
	_ = bw.Flush()
}
