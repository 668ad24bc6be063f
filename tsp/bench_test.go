package tsp

import (
	"context"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// trivialBackend returns a fixed v4v6 offer without bookkeeping.
type trivialBackend struct{ offer Tunnel }

func (b *trivialBackend) Create(context.Context, Identity, *Tunnel) (*Tunnel, error) {
	o := b.offer
	return &o, nil
}
func (b *trivialBackend) Accept(context.Context, Identity, *Tunnel, TunnelType) error { return nil }
func (b *trivialBackend) Delete(context.Context, Identity) error                      { return nil }

func benchBackend() *trivialBackend {
	return &trivialBackend{offer: *testOffer(gogocRequest(TypeV4V6, "2001:db8:5572::2"))}
}

// gogocStream is the client side of a TCP ANONYMOUS v4v6 session as gogoc
// writes it (one element per write).
func gogocStream(b *testing.B) [][]byte {
	req := MarshalContent(mustMarshalB(b, gogocRequest(TypeV4V6, "2001:db8:5572::2")))
	return [][]byte{
		[]byte("VERSION=2.0.2\r\n"), []byte("AUTHENTICATE ANONYMOUS\r\n\x00"), req,
		[]byte("Content-length: 35\r\n<tunnel action=\"accept\"></tunnel>\r\n"),
	}
}

func mustMarshalB(b *testing.B, t *Tunnel) []byte {
	x, err := t.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return x
}

// BenchmarkServerSession runs complete in-memory TCP sessions (VERSION →
// CAPABILITY → AUTHENTICATE ANONYMOUS → create → offer → accept) through a
// Splitter and a Server with a trivial backend.
func BenchmarkServerSession(b *testing.B) {
	writes := gogocStream(b)
	cfg := ServerConfig{
		Transport: TransportTCP, Tunnels: []TunnelType{TypeV4V6},
		Mechanisms: []sasl.Mechanism{sasl.Anonymous}, AnonymousName: "[2001:db8:5572::2]:40000",
		Backend: benchBackend(),
	}
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		srv, err := NewServer(cfg)
		if err != nil {
			b.Fatal(err)
		}
		sp := NewSplitter(0)
		for _, w := range writes {
			sp.Write(w)
			for {
				msg, ok, err := sp.Next()
				if err != nil {
					b.Fatal(err)
				}
				if !ok {
					break
				}
				if _, err := srv.Step(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		}
		if srv.State() != StateEstablished {
			b.Fatalf("state %s", srv.State())
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
}

// BenchmarkServerSessionDigestUDP runs complete UDP DIGEST-MD5 sessions
// (§10.4) through a DatagramSession: the most expensive legacy path.
func BenchmarkServerSessionDigestUDP(b *testing.B) {
	creds := testCreds{realm: "fakerealm", users: map[string]string{"alice": "secret"}}
	ch := sasl.NewChallenge("fakerealm", "N142cbcee")
	resp := sasl.ClientResponse(ch, "alice", sasl.HA1("alice", "fakerealm", "secret"), "tsp/[::1]:3653", "1795634805", false)
	payloads := [][]byte{
		[]byte("VERSION=2.0.2\r\n"), []byte("AUTHENTICATE DIGEST-MD5\r\n\x00"), base64Line(resp.Marshal()), {},
		MarshalContent(mustMarshalB(b, gogocRequest(TypeV4V6, "2001:db8:5572::2"))),
		[]byte("Content-length: 35\r\n<tunnel action=\"accept\"></tunnel>\r\n"),
	}
	dgrams := make([][]byte, len(payloads))
	for i, p := range payloads {
		dgrams[i] = AppendDatagram(nil, Header{Seq: 0xF0 + uint32(i), Timestamp: uint32(i)}, p)
	}
	cfg := ServerConfig{
		Transport: TransportUDP, Tunnels: []TunnelType{TypeV4V6},
		Mechanisms: []sasl.Mechanism{sasl.DigestMD5}, Credentials: creds, Realm: "fakerealm",
		Backend: benchBackend(), NewNonce: func() (string, error) { return "N142cbcee", nil },
	}
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		srv, _ := NewServer(cfg)
		ds, _ := NewDatagramSession(srv)
		for _, d := range dgrams {
			if _, err := ds.Handle(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
		if srv.State() != StateEstablished {
			b.Fatalf("state %s", srv.State())
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
}

// parseTunnelInputs are the <tunnel> elements the gateway and the
// benchmark's client parse per session: gogoc's create request (§3.8, exact
// bytes), our client's create request resuming a data channel, the classic
// v4v6 offer (§3.9, exact bytes), an extended offer and an accept.
func parseTunnelInputs(b *testing.B) []struct {
	name string
	xml  []byte
} {
	ours := &Tunnel{Action: ActionCreate, Type: TypeV4DTLSV6, Client: &ClientInfo{IPv6: mustAddr("2001:db8:5572::2")},
		Data: &DataChannel{Token: testToken(), Port: 3653, Transports: []TunnelType{TypeV4DTLSV6}}}
	return []struct {
		name string
		xml  []byte
	}{
		{"gogoc-create", mustMarshalB(b, gogocRequest(TypeV4V6, "2001:db8:5572::2"))},
		{"ours-create", mustMarshalB(b, ours)},
		{"offer-v4v6", mustMarshalB(b, testOffer(gogocRequest(TypeV4V6, "2001:db8:5572::2")))},
		{"offer-v4anyv6", mustMarshalB(b, testOffer(gogocRequest(TypeV4AnyV6, "2001:db8:5572::2")))},
		{"accept", mustMarshalB(b, &Tunnel{Action: ActionAccept, Type: TypeV4DTLSV6})},
	}
}

// BenchmarkParseTunnel measures ParseTunnel on create requests, server
// offers and an accept.
func BenchmarkParseTunnel(b *testing.B) {
	benchParse(b, ParseTunnel)
}

// BenchmarkParseTunnelEncodingXML measures the encoding/xml decoding of
// tunnel_xml_oracle_test.go on the same elements, for
// docs/decisions/0006-tunnel-xml-parser.md.
func BenchmarkParseTunnelEncodingXML(b *testing.B) {
	benchParse(b, oracleParseTunnel)
}

func benchParse(b *testing.B, parse func([]byte) (*Tunnel, error)) {
	for _, in := range parseTunnelInputs(b) {
		b.Run(in.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.xml)))
			for b.Loop() {
				if _, err := parse(in.xml); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTunnelMarshal measures Tunnel.Marshal on the same elements.
func BenchmarkTunnelMarshal(b *testing.B) {
	for _, in := range parseTunnelInputs(b) {
		t, err := ParseTunnel(in.xml)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(in.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := t.Marshal(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
