package tsp

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/dstmgw/dstm/tsp/sasl"
)

func testServerConfig(tr Transport, be Backend) ServerConfig {
	cfg := ServerConfig{
		Transport: tr, Tunnels: []TunnelType{TypeV4V6, TypeV4DTLSV6, TypeV4AnyV6},
		Mechanisms:  []sasl.Mechanism{sasl.Anonymous, sasl.Plain, sasl.DigestMD5},
		Credentials: newCreds(), Realm: "fakerealm", AnonymousName: "[2001:db8::2]:1",
		Backend: be, NewNonce: func() (string, error) { return "N142cbcee", nil },
	}
	if tr == TransportTLS {
		cfg.Tunnels = append(cfg.Tunnels, TypeV4TLSV6)
		cfg.Mechanisms = append(cfg.Mechanisms, sasl.External)
		cfg.ExternalName = "alice@corp"
	}
	return cfg
}

type stepper struct {
	t   *testing.T
	srv *Server
}

// step sends one message and returns the concatenated reply payloads.
func (s stepper) step(in string) (string, error) {
	s.t.Helper()
	replies, err := s.srv.Step(context.Background(), []byte(in))
	if s.srv.cfg.Transport == TransportUDP && err != ErrClosed && len(replies) != 1 {
		s.t.Fatalf("UDP step %q gave %d replies", in, len(replies))
	}
	var b strings.Builder
	for _, r := range replies {
		b.Write(r.Payload)
	}
	return b.String(), err
}

func newStepper(t *testing.T, tr Transport, be Backend) stepper {
	t.Helper()
	srv, err := NewServer(testServerConfig(tr, be))
	if err != nil {
		t.Fatal(err)
	}
	return stepper{t: t, srv: srv}
}

// authed returns a stepper already authenticated with ANONYMOUS.
func authed(t *testing.T, tr Transport, be Backend) stepper {
	t.Helper()
	s := newStepper(t, tr, be)
	if _, err := s.step("VERSION=2.0.2\r\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.step("AUTHENTICATE ANONYMOUS\r\n\x00"); err != nil || got != "200 Success\r\n" {
		t.Fatalf("anonymous: %q %v", got, err)
	}
	return s
}

func createMsg(t *testing.T, typ TunnelType) string {
	return string(MarshalContent(mustMarshal(t, gogocRequest(typ, "2001:db8::2"))))
}

func acceptMsg(typ TunnelType) string {
	if typ == "" {
		return "Content-length: 35\r\n<tunnel action=\"accept\"></tunnel>\r\n"
	}
	x := `<tunnel action="accept" type="` + string(typ) + `"></tunnel>` + "\r\n"
	return string(MarshalContent([]byte(x)))
}

func wantStatus(t *testing.T, err error, code int) {
	t.Helper()
	var se *StatusError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("error %v, want status %d", err, code)
	}
}

func TestServerTextPhaseErrors(t *testing.T) {
	tests := []struct {
		name  string
		msgs  []string
		reply string
		code  int
	}{
		{"garbage first line", []string{"HELLO\r\n"}, "500 Invalid request\r\n", 500},
		{"old version", []string{"VERSION=1.0.1\r\n"}, "302 Unsupported client version\r\n", 302},
		{"newer version", []string{"VERSION=2.0.3\r\n"}, "302 Unsupported client version\r\n", 302},
		{"mechanism not allowed", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE EXTERNAL\r\n"}, "300 Authentication failed\r\n", 300},
		{"unknown mechanism", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE CRAM-MD5\r\n"}, "500 Invalid request\r\n", 500},
		{"create before auth", []string{"VERSION=2.0.2\r\n", "Content-length: 35\r\n<tunnel action=\"create\"></tunnel>\r\n"}, "500 Invalid request\r\n", 500},
		{"wrong password", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE PLAIN\r\n", "\x00alice\x00wrong\r\n"}, "300 Authentication failed\r\n", 300},
		{"unknown user", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE PLAIN\r\n", "\x00bob\x00secret\r\n"}, "300 Authentication failed\r\n", 300},
		{"authzid differs", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE PLAIN\r\n", "root\x00alice\x00secret\r\n"}, "300 Authentication failed\r\n", 300},
		{"PLAIN with NUL inside", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE PLAIN\r\n", "\x00al\x00ice\x00secret\r\n"}, "300 Authentication failed\r\n", 300},
		{"digest garbage", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE DIGEST-MD5\r\n", "!!!\r\n"}, "300 Authentication failed\r\n", 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStepper(t, TransportTCP, &fakeBackend{mode: "ok"})
			var got string
			var err error
			for _, m := range tt.msgs {
				got, err = s.step(m)
			}
			if got != tt.reply {
				t.Fatalf("reply %q want %q", got, tt.reply)
			}
			wantStatus(t, err, tt.code)
			if s.srv.State() != StateClosed {
				t.Fatalf("state %s after error", s.srv.State())
			}
			if _, err := s.step("VERSION=2.0.2\r\n"); err != ErrClosed {
				t.Fatalf("step after close: %v", err)
			}
		})
	}
}

func TestServerPlainAuthzidEqualsUser(t *testing.T) {
	s := newStepper(t, TransportTCP, &fakeBackend{mode: "ok"})
	s.step("VERSION=2.0.2\r\n")
	if got, _ := s.step("AUTHENTICATE PLAIN\r\n"); got != "" {
		t.Fatalf("TCP reply to AUTHENTICATE PLAIN: %q", got)
	}
	if got, err := s.step("alice\x00alice\x00secret\n"); err != nil || got != "200 Success\r\n" {
		t.Fatalf("%q %v", got, err)
	}
	if id, ok := s.srv.Identity(); !ok || id.Name != "alice" || id.Mechanism != sasl.Plain || id.Groups != nil {
		t.Fatalf("identity %+v", id)
	}
}

func digestResponse(t *testing.T, nc, pass string) string {
	ch := sasl.NewChallenge("fakerealm", "N142cbcee")
	r := sasl.ClientResponse(ch, "alice", sasl.HA1("alice", "fakerealm", pass), "tsp/gw.example", "42", false)
	r.NC = nc
	return base64.StdEncoding.EncodeToString(r.Marshal()) + "\r\n"
}

func TestServerDigest(t *testing.T) {
	tests := []struct {
		name string
		resp string
		ok   bool
	}{
		{"good", digestResponse(t, "00000001", "secret"), true},
		{"nc 2", digestResponse(t, "00000002", "secret"), false},
		{"wrong password", digestResponse(t, "00000001", "nope"), false},
	}
	for _, tt := range tests {
		for _, tr := range []Transport{TransportTCP, TransportUDP} {
			t.Run(tt.name+"/"+tr.String(), func(t *testing.T) {
				s := newStepper(t, tr, &fakeBackend{mode: "ok"})
				s.step("VERSION=2.0.2\r\n")
				s.step("AUTHENTICATE DIGEST-MD5\r\n\x00")
				replies, err := s.srv.Step(context.Background(), []byte(tt.resp))
				if !tt.ok {
					wantStatus(t, err, 300)
					return
				}
				if err != nil || !strings.HasPrefix(string(replies[0].Payload), "cnNwYXV0aD") {
					t.Fatalf("%v %+v", err, replies)
				}
				if tr == TransportTCP {
					if len(replies) != 2 || !replies[1].Separate || string(replies[1].Payload) != "200 Success\r\n" {
						t.Fatalf("TCP must send rspauth and a separate 200: %+v", replies)
					}
					return
				}
				if len(replies) != 1 || s.srv.State() != StateDigestConfirm {
					t.Fatalf("UDP: %+v state %s", replies, s.srv.State())
				}
				if got, err := s.step(""); err != nil || got != "200 Success\r\n" {
					t.Fatalf("UDP confirm: %q %v", got, err)
				}
			})
		}
	}
}

func TestServerExternal(t *testing.T) {
	s := newStepper(t, TransportTLS, &fakeBackend{mode: "ok"})
	s.step("VERSION=2.0.2\r\n")
	if got, err := s.step("AUTHENTICATE EXTERNAL\r\n"); err != nil || got != "200 Success\r\n" {
		t.Fatalf("%q %v", got, err)
	}
	cfg := testServerConfig(TransportTLS, &fakeBackend{})
	cfg.ExternalName = ""
	srv, _ := NewServer(cfg)
	s = stepper{t: t, srv: srv}
	s.step("VERSION=2.0.2\r\n")
	_, err := s.step("AUTHENTICATE EXTERNAL\r\n")
	wantStatus(t, err, 300)
}

func TestServerCreateErrors(t *testing.T) {
	tests := []struct {
		name  string
		mode  string
		msg   func(t *testing.T) string
		reply string
		code  int
	}{
		{"v6v4 unsupported", "ok", func(t *testing.T) string { return createMsg(t, TypeV6V4) }, "Content-length: 29\r\n303 Unsupported tunnel type\r\n", 303},
		{"v4tlsv6 not advertised on tcp", "ok", func(t *testing.T) string { return createMsg(t, TypeV4TLSV6) }, "Content-length: 29\r\n303 Unsupported tunnel type\r\n", 303},
		{"capacity", "capacity", func(t *testing.T) string { return createMsg(t, TypeV4V6) }, "Content-length: 31\r\n301 No more tunnels available\r\n", 301},
		{"backend failure hides text", "broken", func(t *testing.T) string { return createMsg(t, TypeV4V6) }, "Content-length: 23\r\n310 Server side error\r\n", 310},
		{"bad xml", "ok", func(*testing.T) string { return "Content-length: 7\r\n<tunnel" }, "Content-length: 21\r\n500 Invalid request\r\n", 500},
		{"bad framing", "ok", func(*testing.T) string { return "Content-length: 70\r\n<tunnel/>" }, "Content-length: 21\r\n500 Invalid request\r\n", 500},
		{"no client v6", "ok", func(*testing.T) string {
			return string(MarshalContent([]byte(`<tunnel action="create" type="v4v6"></tunnel>`)))
		}, "Content-length: 26\r\n502 Invalid IPv6 address\r\n", 502},
		{"accept without offer", "ok", func(*testing.T) string { return acceptMsg("") }, "Content-length: 21\r\n500 Invalid request\r\n", 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := authed(t, TransportTCP, &fakeBackend{mode: tt.mode})
			got, err := s.step(tt.msg(t))
			if got != tt.reply {
				t.Fatalf("reply %q want %q", got, tt.reply)
			}
			wantStatus(t, err, tt.code)
			if tt.mode == "broken" && (!errors.Is(err, errBackendSecret) || strings.Contains(got, "hunter2")) {
				t.Fatalf("internal error must be wrapped for the log and absent from the wire: %v", err)
			}
		})
	}
}

// badBackend returns a fixed, invalid offer.
type badBackend struct {
	fakeBackend
	mutate func(*Tunnel)
}

func (b *badBackend) Create(ctx context.Context, id Identity, req *Tunnel) (*Tunnel, error) {
	o, err := b.fakeBackend.Create(ctx, id, req)
	if err == nil {
		b.mutate(o)
	}
	return o, err
}

func TestServerRejectsBadOffers(t *testing.T) {
	tests := []struct {
		name   string
		typ    TunnelType
		mutate func(*Tunnel)
	}{
		{"v4v6 without dns", TypeV4V6, func(o *Tunnel) { o.Client.DNSServers = nil }},
		{"v4v6 with ipv4 dns", TypeV4V6, func(o *Tunnel) { o.Client.DNSServers = append(o.Client.DNSServers, mustAddr("192.0.2.53")) }},
		{"v4v6 with mtu", TypeV4V6, func(o *Tunnel) { o.MTU = 1280 }},
		{"v4v6 with dns domains", TypeV4V6, func(o *Tunnel) { o.Client.DNSDomains = []string{"corp.example"} }},
		{"v4v6 with data", TypeV4V6, func(o *Tunnel) {
			o.Data = &DataChannel{Token: testToken(), Port: 1, Transports: []TunnelType{TypeV4DTLSV6}}
		}},
		{"missing server v6", TypeV4V6, func(o *Tunnel) { o.Server.IPv6 = mustAddr("192.0.2.9") }},
		{"no lifetime", TypeV4V6, func(o *Tunnel) { o.Lifetime = 0 }},
		{"wrong type", TypeV4V6, func(o *Tunnel) { o.Type = TypeV4DTLSV6 }},
		{"keepalive without address", TypeV4V6, func(o *Tunnel) { o.Client.Keepalive.Address = mustAddr("::1") }},
		{"dtls without data", TypeV4DTLSV6, func(o *Tunnel) { o.Data = nil }},
		{"dtls zero token", TypeV4DTLSV6, func(o *Tunnel) { o.Data.Token = [TokenLen]byte{} }},
		{"dtls small mtu", TypeV4DTLSV6, func(o *Tunnel) { o.MTU = 500 }},
		{"dtls offering tls", TypeV4DTLSV6, func(o *Tunnel) { o.Data.Transports = []TunnelType{TypeV4TLSV6} }},
		{"any offering tls outside TLS", TypeV4AnyV6, func(o *Tunnel) { o.Data.Transports = []TunnelType{TypeV4TLSV6} }},
		{"offer too large for UDP", TypeV4DTLSV6, func(o *Tunnel) {
			for i := 0; i < MaxRoutes; i++ {
				o.Client.Routes = append(o.Client.Routes, mustPrefix(i))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := authed(t, TransportUDP, &badBackend{fakeBackend: fakeBackend{mode: "ok"}, mutate: tt.mutate})
			got, err := s.step(createMsg(t, tt.typ))
			if got != "Content-length: 23\r\n310 Server side error\r\n" {
				t.Fatalf("reply %q", got)
			}
			wantStatus(t, err, 310)
		})
	}
}

func TestServerLifecycle(t *testing.T) {
	be := &fakeBackend{mode: "ok"}
	s := authed(t, TransportTCP, be)
	// info before any tunnel is a protocol error only once established; here
	// the create/accept/renew/info/delete path is exercised.
	if got, err := s.step(createMsg(t, TypeV4V6)); err != nil || !strings.HasPrefix(got, "Content-length: 462\r\n200 Success\r\n") {
		t.Fatalf("create: %q %v", got, err)
	}
	if _, _, ok := s.srv.Established(); ok {
		t.Fatal("established before accept")
	}
	if got, err := s.step(acceptMsg("")); err != nil || got != "" {
		t.Fatalf("accept: %q %v", got, err)
	}
	offer, data, ok := s.srv.Established()
	if !ok || data != TypeV4V6 || offer.Client.IPv4 != mustAddr("192.0.2.2") {
		t.Fatalf("established: %+v %s %v", offer, data, ok)
	}
	// Renewal: a new create on the same connection goes to the backend again.
	if _, err := s.step(createMsg(t, TypeV4V6)); err != nil || s.srv.State() != StateOffered {
		t.Fatalf("renew: %v %s", err, s.srv.State())
	}
	if _, err := s.step(acceptMsg("")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.step(string(MarshalContent([]byte(`<tunnel action="info"></tunnel>`)))); err != nil || !strings.Contains(got, `action="info" type="v4v6"`) {
		t.Fatalf("info: %q %v", got, err)
	}
	if got, err := s.step(string(MarshalContent([]byte(`<tunnel action="delete"></tunnel>`)))); err != nil || got != "Content-length: 13\r\n200 Success\r\n" {
		t.Fatalf("delete: %q %v", got, err)
	}
	if s.srv.State() != StateClosed || be.creates != 2 || len(be.accepts) != 2 || be.deletes != 1 {
		t.Fatalf("state %s backend %+v", s.srv.State(), be)
	}
}

func TestServerReject(t *testing.T) {
	be := &fakeBackend{mode: "ok"}
	s := authed(t, TransportUDP, be)
	s.step(createMsg(t, TypeV4V6))
	got, err := s.step(string(MarshalContent([]byte(`<tunnel action="reject"></tunnel>`))))
	if err != nil || got != "" || s.srv.State() != StateAuthenticated || be.deletes != 1 {
		t.Fatalf("reject: %q %v %s", got, err, s.srv.State())
	}
	// A second create after a reject is allowed.
	if _, err := s.step(createMsg(t, TypeV4V6)); err != nil {
		t.Fatal(err)
	}
	// A create while an offer is pending is not.
	_, err = s.step(createMsg(t, TypeV4V6))
	wantStatus(t, err, 500)
}

func TestServerAcceptType(t *testing.T) {
	tests := []struct {
		tr     Transport
		typ    TunnelType
		accept TunnelType
		want   TunnelType
		code   int
	}{
		{TransportTLS, TypeV4AnyV6, "", TypeV4DTLSV6, 0},
		{TransportTLS, TypeV4AnyV6, TypeV4TLSV6, TypeV4TLSV6, 0},
		{TransportTLS, TypeV4TLSV6, "", TypeV4TLSV6, 0},
		{TransportUDP, TypeV4DTLSV6, TypeV4TLSV6, "", 500},
		{TransportTCP, TypeV4V6, TypeV4DTLSV6, "", 500},
	}
	for _, tt := range tests {
		t.Run(tt.tr.String()+"/"+string(tt.typ)+"/"+string(tt.accept), func(t *testing.T) {
			cfg := testServerConfig(tt.tr, &fakeBackend{mode: "ok"})
			if tt.tr == TransportTLS {
				cfg.Tunnels = []TunnelType{TypeV4AnyV6, TypeV4TLSV6}
			}
			srv, err := NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := stepper{t: t, srv: srv}
			s.step("VERSION=2.0.2\r\n")
			s.step("AUTHENTICATE ANONYMOUS\r\n")
			if _, err := s.step(createMsg(t, tt.typ)); err != nil {
				t.Fatal(err)
			}
			_, err = s.step(acceptMsg(tt.accept))
			if tt.code != 0 {
				wantStatus(t, err, tt.code)
				return
			}
			if _, data, ok := srv.Established(); err != nil || !ok || data != tt.want {
				t.Fatalf("data %s ok %v err %v", data, ok, err)
			}
		})
	}
}

func TestServerConfigValidation(t *testing.T) {
	base := func() ServerConfig { return testServerConfig(TransportTCP, &fakeBackend{}) }
	tests := []struct {
		name string
		mut  func(*ServerConfig)
	}{
		{"no transport", func(c *ServerConfig) { c.Transport = 0 }},
		{"no backend", func(c *ServerConfig) { c.Backend = nil }},
		{"no tunnels", func(c *ServerConfig) { c.Tunnels = nil }},
		{"v6v4", func(c *ServerConfig) { c.Tunnels = []TunnelType{TypeV6V4} }},
		{"tls type on tcp", func(c *ServerConfig) { c.Tunnels = []TunnelType{TypeV4TLSV6} }},
		{"external on tcp", func(c *ServerConfig) { c.Mechanisms = []sasl.Mechanism{sasl.External} }},
		{"anonymous without name", func(c *ServerConfig) { c.AnonymousName = "" }},
		{"digest without realm", func(c *ServerConfig) { c.Realm = "" }},
		{"plain without creds", func(c *ServerConfig) { c.Credentials = nil }},
		{"unknown mechanism", func(c *ServerConfig) { c.Mechanisms = []sasl.Mechanism{"X"} }},
	}
	for _, tt := range tests {
		c := base()
		tt.mut(&c)
		if _, err := NewServer(c); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, err := NewServer(base()); err != nil {
		t.Fatal(err)
	}
}

func TestServerStateStrings(t *testing.T) {
	seen := map[string]bool{}
	for s := StateVersion; s <= StateClosed; s++ {
		n := s.String()
		if n == "invalid" || seen[n] {
			t.Errorf("state %d name %q", s, n)
		}
		seen[n] = true
	}
	if ServerState(200).String() != "invalid" || ClientState(200).String() != "invalid" || Transport(9).String() != "invalid" {
		t.Error("out of range names")
	}
	for s := ClientStart; s <= ClientClosed; s++ {
		if s.String() == "invalid" {
			t.Errorf("client state %d", s)
		}
	}
}

func TestDatagramSession(t *testing.T) {
	srv, _ := NewServer(testServerConfig(TransportUDP, &fakeBackend{mode: "ok"}))
	ds, err := NewDatagramSession(srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dg := func(seq, ts uint32, p string) []byte {
		return AppendDatagram(nil, Header{Seq: seq, Timestamp: ts}, []byte(p))
	}
	r1, err := ds.Handle(ctx, dg(0xf0, 1, "VERSION=2.0.2\r\n"))
	if err != nil || !bytes.HasPrefix(r1[8:], []byte("CAPABILITY ")) {
		t.Fatalf("%q %v", r1, err)
	}
	// Retransmission: same sequence, new timestamp -> same payload, new header echoed.
	r2, err := ds.Handle(ctx, dg(0xf0, 2001, "VERSION=2.0.2\r\n"))
	if err != nil || !bytes.Equal(r2[8:], r1[8:]) || !bytes.Equal(r2[:8], dg(0xf0, 2001, "")) {
		t.Fatalf("retransmit: % x %v", r2, err)
	}
	if srv.State() != StateAuthenticate {
		t.Fatalf("retransmission stepped the machine: %s", srv.State())
	}
	if r, err := ds.Handle(ctx, dg(0xef, 3, "x")); r != nil || !errors.Is(err, ErrStale) {
		t.Fatalf("stale: %q %v", r, err)
	}
	if r, err := ds.Handle(ctx, []byte{0x45, 0, 0, 0, 0, 0, 0, 0}); r != nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("no signature: %q %v", r, err)
	}
	// A failing step still answers, and its reply is replayed after close.
	r3, err := ds.Handle(ctx, dg(0xf1, 4, "AUTHENTICATE BOGUS\r\n"))
	wantStatus(t, err, 500)
	r4, err := ds.Handle(ctx, dg(0xf1, 5, "AUTHENTICATE BOGUS\r\n"))
	if err != nil || !bytes.Equal(r3[8:], r4[8:]) {
		t.Fatalf("replay after close: %q %v", r4, err)
	}
	if r, err := ds.Handle(ctx, dg(0xf2, 6, "x")); r != nil || err != ErrClosed {
		t.Fatalf("after close: %q %v", r, err)
	}
	tcp, _ := NewServer(testServerConfig(TransportTCP, &fakeBackend{}))
	if _, err := NewDatagramSession(tcp); err == nil {
		t.Fatal("datagram session over a TCP machine")
	}
}

// TestServerFail: a status for a cause outside the machine is framed as the machine frames
// one in its state, and closes the session.
func TestServerFail(t *testing.T) {
	cause := errors.New("line longer than 8192 bytes")
	tests := []struct {
		name  string
		setup func(t *testing.T) stepper
		want  string
	}{
		{"before VERSION", func(t *testing.T) stepper { return newStepper(t, TransportTCP, &fakeBackend{mode: "ok"}) },
			"500 Invalid request\r\n"},
		{"authenticating", func(t *testing.T) stepper {
			s := newStepper(t, TransportTCP, &fakeBackend{mode: "ok"})
			if _, err := s.step("VERSION=2.0.2\r\n"); err != nil {
				t.Fatal(err)
			}
			return s
		}, "500 Invalid request\r\n"},
		{"authenticated", func(t *testing.T) stepper { return authed(t, TransportTCP, &fakeBackend{mode: "ok"}) },
			"Content-length: 21\r\n500 Invalid request\r\n"},
		{"offered", func(t *testing.T) stepper {
			s := authed(t, TransportTCP, &fakeBackend{mode: "ok"})
			if _, err := s.step(createMsg(t, TypeV4V6)); err != nil {
				t.Fatal(err)
			}
			return s
		}, "Content-length: 21\r\n500 Invalid request\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.setup(t)
			replies, err := s.srv.Fail(StatusInvalidRequest, cause)
			var se *StatusError
			if !errors.As(err, &se) || se.Code != StatusInvalidRequest || !errors.Is(err, cause) {
				t.Fatalf("error %v", err)
			}
			if len(replies) != 1 || string(replies[0].Payload) != tc.want {
				t.Fatalf("replies %v, want %q", replies, tc.want)
			}
			if s.srv.State() != StateClosed {
				t.Fatalf("state %s after Fail", s.srv.State())
			}
			if r, err := s.srv.Fail(StatusInvalidRequest, cause); r != nil || !errors.Is(err, ErrClosed) {
				t.Fatalf("second Fail: %v %v", r, err)
			}
		})
	}
}
