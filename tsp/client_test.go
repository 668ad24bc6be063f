package tsp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// pair connects a client and a server machine in memory with the framing
// of their transport: a byte stream through Splitters (every write chunked
// at an odd size to exercise reassembly), or datagrams with headers
// through a DatagramSession.
type pair struct {
	t        *testing.T
	srv      *Server
	cli      *Client
	ds       *DatagramSession
	ssp, csp *Splitter
	seq      uint32
	separate int // replies flagged Separate
}

func newPair(t *testing.T, scfg ServerConfig, ccfg ClientConfig) *pair {
	t.Helper()
	srv, err := NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{t: t, srv: srv, cli: cli, ssp: NewSplitter(0), csp: NewSplitter(0), seq: 0xF0}
	if scfg.Transport == TransportUDP {
		if p.ds, err = NewDatagramSession(srv); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// run sends the client's messages until it has nothing more to say and
// returns the client's first error.
func (p *pair) run(first []Reply) error {
	pending := first
	for i := 0; len(pending) > 0; i++ {
		if i > 64 {
			p.t.Fatal("conversation does not end")
		}
		m := pending[0].Payload
		pending = pending[1:]
		next, err := p.deliver(m)
		if err != nil {
			return err
		}
		pending = append(pending, next...)
	}
	return nil
}

func (p *pair) deliver(m []byte) ([]Reply, error) {
	ctx := context.Background()
	if p.ds != nil {
		h := Header{Seq: p.seq, Timestamp: p.seq * 3}
		p.seq++
		d, _ := p.ds.Handle(ctx, AppendDatagram(nil, h, m))
		if d == nil {
			return nil, nil
		}
		rh, payload, err := ParseDatagram(d)
		if err != nil || rh != h {
			p.t.Fatalf("reply header %+v for %+v: %v", rh, h, err)
		}
		return p.cli.Step(payload)
	}
	var out []Reply
	for len(m) > 0 { // odd-sized chunks
		n := min(len(m), 7)
		p.ssp.Write(m[:n])
		m = m[n:]
		for {
			msg, ok, err := p.ssp.Next()
			if err != nil {
				p.t.Fatal(err)
			}
			if !ok {
				break
			}
			replies, _ := p.srv.Step(ctx, msg)
			r, err := p.toClient(replies)
			out = append(out, r...)
			if err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func (p *pair) toClient(replies []Reply) ([]Reply, error) {
	var out []Reply
	for _, r := range replies {
		if r.Separate {
			p.separate++
		}
		p.csp.Write(r.Payload)
		for {
			msg, ok, err := p.csp.Next()
			if err != nil {
				p.t.Fatal(err)
			}
			if !ok {
				break
			}
			o, err := p.cli.Step(msg)
			if err != nil {
				return out, err
			}
			out = append(out, o...)
		}
	}
	return out, nil
}

func clientConfig(tr Transport, m sasl.Mechanism, typ TunnelType) ClientConfig {
	return ClientConfig{
		Transport: tr, Mechanism: m, Username: "alice", Password: "secret",
		DigestURI: "tsp/[2001:db8::1]:3653", Request: gogocRequest(typ, "2001:db8::2"),
		Now: func() time.Time { return time.Unix(1795634805, 0) },
	}
}

func TestClientServerMatrix(t *testing.T) {
	mechs := []sasl.Mechanism{sasl.Anonymous, sasl.Plain, sasl.DigestMD5, sasl.External}
	for _, tr := range []Transport{TransportTCP, TransportTLS, TransportUDP} {
		for _, m := range mechs {
			if m == sasl.External && tr != TransportTLS {
				continue
			}
			for _, typ := range []TunnelType{TypeV4V6, TypeV4DTLSV6, TypeV4AnyV6} {
				t.Run(fmt.Sprintf("%s/%s/%s", tr, m, typ), func(t *testing.T) {
					be := &fakeBackend{mode: "ok", noTLS: tr != TransportTLS}
					p := newPair(t, testServerConfig(tr, be), clientConfig(tr, m, typ))
					first, _ := p.cli.Start()
					if err := p.run(first); err != nil {
						t.Fatal(err)
					}
					checkEstablished(t, p, be, m, typ)
					// Renewal on the same session.
					renew, err := p.cli.Renew()
					if err != nil {
						t.Fatal(err)
					}
					if err := p.run(renew); err != nil {
						t.Fatal(err)
					}
					if p.cli.State() != ClientEstablished || p.srv.State() != StateEstablished || be.creates != 2 || len(be.accepts) != 2 {
						t.Fatalf("after renewal: client %s server %s backend %+v", p.cli.State(), p.srv.State(), be)
					}
					wantSep := 0
					if m == sasl.DigestMD5 && tr != TransportUDP {
						wantSep = 1
					}
					if p.separate != wantSep {
						t.Fatalf("%d separate replies, want %d", p.separate, wantSep)
					}
				})
			}
		}
	}
}

func checkEstablished(t *testing.T, p *pair, be *fakeBackend, m sasl.Mechanism, typ TunnelType) {
	t.Helper()
	if p.cli.State() != ClientEstablished || p.srv.State() != StateEstablished {
		t.Fatalf("client %s server %s", p.cli.State(), p.srv.State())
	}
	id, _ := p.srv.Identity()
	if id.Mechanism != m {
		t.Fatalf("identity %+v", id)
	}
	offer, _, _ := p.srv.Established()
	if co := p.cli.Offer(); co.Client.IPv4 != offer.Client.IPv4 || co.Type != offer.Type || co.Type != typ {
		t.Fatalf("client offer %+v server offer %+v", co, offer)
	}
	if typ.Extended() && p.cli.Offer().Data.Token != testToken() {
		t.Fatal("token lost")
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name   string
		scfg   func(ServerConfig) ServerConfig
		ccfg   func(ClientConfig) ClientConfig
		status int    // expected *StatusError code, 0 = other error
		substr string // for non-status errors
	}{
		{"version refused", nil, func(c ClientConfig) ClientConfig { c.Version = "2.1.0"; return c }, 302, ""},
		{"tunnel type not advertised", func(s ServerConfig) ServerConfig { s.Tunnels = []TunnelType{TypeV4DTLSV6}; return s }, nil, 0, "not available"},
		{"mechanism not advertised", func(s ServerConfig) ServerConfig { s.Mechanisms = []sasl.Mechanism{sasl.Anonymous}; return s }, nil, 0, "not available"},
		{"wrong password", nil, func(c ClientConfig) ClientConfig { c.Password = "nope"; return c }, 300, ""},
		{"capacity", func(s ServerConfig) ServerConfig { s.Backend = &fakeBackend{mode: "capacity"}; return s }, nil, 301, ""},
	}
	for _, tt := range tests {
		for _, tr := range []Transport{TransportTCP, TransportUDP} {
			t.Run(tt.name+"/"+tr.String(), func(t *testing.T) {
				scfg := testServerConfig(tr, &fakeBackend{mode: "ok"})
				ccfg := clientConfig(tr, sasl.DigestMD5, TypeV4V6)
				if tt.scfg != nil {
					scfg = tt.scfg(scfg)
				}
				if tt.ccfg != nil {
					ccfg = tt.ccfg(ccfg)
				}
				p := newPair(t, scfg, ccfg)
				first, _ := p.cli.Start()
				err := p.run(first)
				var se *StatusError
				switch {
				case err == nil:
					t.Fatal("no error")
				case tt.status != 0 && (!errors.As(err, &se) || se.Code != tt.status):
					t.Fatalf("error %v, want status %d", err, tt.status)
				case tt.status == 0 && !strings.Contains(err.Error(), tt.substr):
					t.Fatalf("error %v, want %q", err, tt.substr)
				}
				if p.cli.State() != ClientClosed {
					t.Fatalf("client state %s", p.cli.State())
				}
			})
		}
	}
}

func TestClientRejectsBadRspauth(t *testing.T) {
	c, err := NewClient(clientConfig(TransportTCP, sasl.DigestMD5, TypeV4V6))
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	c.Step([]byte("CAPABILITY TUNNEL=V4V6 AUTH=DIGEST-MD5\r\n"))
	ch := sasl.NewChallenge("fakerealm", "abc")
	if _, err := c.Step(base64Line(ch.Marshal())); err != nil {
		t.Fatal(err)
	}
	bad := base64Line(sasl.MarshalRspAuth(strings.Repeat("0", 32)))
	if _, err := c.Step(bad); err == nil || !strings.Contains(err.Error(), "rspauth") {
		t.Fatalf("bad rspauth accepted: %v", err)
	}
}

func TestClientRejectsBadOffers(t *testing.T) {
	tests := []struct {
		name  string
		offer string
	}{
		{"wrong action", `<tunnel action="create" type="v4v6"></tunnel>`},
		{"wrong type", `<tunnel action="info" type="v4dtlsv6" lifetime="1"></tunnel>`},
		{"missing addresses", `<tunnel action="info" type="v4v6" lifetime="1"><client><address type="ipv4">192.0.2.2</address></client></tunnel>`},
		{"trailing bytes", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := NewClient(clientConfig(TransportTCP, sasl.Anonymous, TypeV4V6))
			c.Start()
			c.Step([]byte("CAPABILITY TUNNEL=V4V6 AUTH=ANONYMOUS\r\n"))
			if _, err := c.Step([]byte("200 Success\r\n")); err != nil {
				t.Fatal(err)
			}
			msg := MarshalContent([]byte("200 Success\r\n" + tt.offer))
			if _, err := c.Step(msg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestClientConfigValidation(t *testing.T) {
	base := clientConfig(TransportTCP, sasl.Plain, TypeV4V6)
	tests := []struct {
		name string
		mut  func(*ClientConfig)
	}{
		{"no transport", func(c *ClientConfig) { c.Transport = 0 }},
		{"no request", func(c *ClientConfig) { c.Request = nil }},
		{"bad version", func(c *ClientConfig) { c.Version = "2" }},
		{"plain without password", func(c *ClientConfig) { c.Password = "" }},
		{"digest without uri", func(c *ClientConfig) { c.Mechanism = sasl.DigestMD5; c.DigestURI = "" }},
		{"unknown mechanism", func(c *ClientConfig) { c.Mechanism = "X" }},
	}
	for _, tt := range tests {
		c := base
		tt.mut(&c)
		if _, err := NewClient(c); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	c, _ := NewClient(base)
	if _, err := c.Step([]byte("x")); err == nil {
		t.Error("step before start")
	}
	if _, err := c.Renew(); err == nil {
		t.Error("renew before established")
	}
	c.Start()
	if _, err := c.Start(); err == nil {
		t.Error("second start")
	}
}

// TestDigestBug1455 checks that with VERSION=2.0.0 both sides hash the
// inner HA1 only up to its first zero byte (gogoc's compatibility quirk),
// and that this changes the result for an affected password.
func TestDigestBug1455(t *testing.T) {
	pass := ""
	for i := 0; i < 10000 && pass == ""; i++ {
		cand := fmt.Sprintf("pw%d", i)
		h := sasl.HA1("alice", "fakerealm", cand)
		for _, b := range h[:15] {
			if b == 0 {
				pass = cand
				break
			}
		}
	}
	if pass == "" {
		t.Fatal("no affected password found")
	}
	for _, v := range []string{"2.0.0", "2.0.2"} {
		scfg := testServerConfig(TransportUDP, &fakeBackend{mode: "ok"})
		scfg.Credentials = testCreds{realm: "fakerealm", users: map[string]string{"alice": pass}}
		ccfg := clientConfig(TransportUDP, sasl.DigestMD5, TypeV4V6)
		ccfg.Password, ccfg.Version = pass, v
		p := newPair(t, scfg, ccfg)
		first, _ := p.cli.Start()
		if err := p.run(first); err != nil {
			t.Fatalf("version %s: %v", v, err)
		}
	}
	inner := sasl.HA1("alice", "fakerealm", pass)
	if sasl.ResponseValue(inner, "n", "c", "auth", "tsp/x", true) == sasl.ResponseValue(inner, "n", "c", "auth", "tsp/x", false) {
		t.Fatal("truncation made no difference for an affected password")
	}
}
