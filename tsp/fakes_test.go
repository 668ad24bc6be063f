package tsp

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/netip"
	"sync"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// testCreds is an in-memory credential store (htdigest semantics).
type testCreds struct {
	realm string
	users map[string]string
}

func (c testCreds) VerifyPlain(user, pass string) bool {
	want, ok := c.users[user]
	eq := subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1
	return ok && eq
}

func (c testCreds) DigestHA1(user, realm string) ([16]byte, bool) {
	p, ok := c.users[user]
	if !ok || realm != c.realm {
		return [16]byte{}, false
	}
	return sasl.HA1(user, realm, p), true
}

var _ sasl.Credentials = testCreds{}

func newCreds() testCreds {
	return testCreds{realm: "fakerealm", users: map[string]string{"alice": "secret"}}
}

// fakeBackend hands out the fixed offers of the transcripts and records calls.
type fakeBackend struct {
	mu      sync.Mutex
	mode    string // "ok", "capacity", "broken"
	noTLS   bool   // never offer the v4tlsv6 data transport
	creates int
	accepts []TunnelType
	deletes int
	ids     []Identity
}

var errBackendSecret = errors.New("db connection to 10.9.9.9 failed: password=hunter2")

func (b *fakeBackend) Create(_ context.Context, id Identity, req *Tunnel) (*Tunnel, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.creates++
	b.ids = append(b.ids, id)
	switch b.mode {
	case "capacity":
		return nil, &StatusError{Code: StatusNoMoreTunnels, Err: errors.New("pool exhausted")}
	case "broken":
		return nil, errBackendSecret
	}
	o := testOffer(req)
	if b.noTLS && o.Data != nil {
		o.Data.Transports = []TunnelType{TypeV4DTLSV6}
	}
	return o, nil
}

func (b *fakeBackend) Accept(_ context.Context, _ Identity, offer *Tunnel, data TunnelType) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if offer == nil {
		return errors.New("accept without offer")
	}
	b.accepts = append(b.accepts, data)
	return nil
}

func (b *fakeBackend) Delete(context.Context, Identity) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deletes++
	return nil
}

var _ Backend = (*fakeBackend)(nil)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// testToken is a fixed non-zero data token.
func testToken() [TokenLen]byte {
	var t [TokenLen]byte
	for i := range t {
		t[i] = byte(0xa0 + i)
	}
	return t
}

// testOffer is the §3.9 offer for v4v6, and an extended offer for our types.
func testOffer(req *Tunnel) *Tunnel {
	o := &Tunnel{
		Action:   ActionInfo,
		Type:     req.Type,
		Lifetime: 25,
		Server:   &Endpoint{IPv4: mustAddr("192.0.2.1"), IPv6: mustAddr("2001:db8:5572::1")},
		Client: &ClientInfo{
			IPv4:       mustAddr("192.0.2.2"),
			IPv6:       req.Client.IPv6,
			Keepalive:  &Keepalive{Interval: 5, Address: mustAddr("192.0.2.1")},
			DNSServers: []netip.Addr{mustAddr("2001:db8:5572::53")},
		},
	}
	if !req.Type.Extended() {
		return o
	}
	o.Lifetime, o.MTU = 86400, 1400
	o.Client.DNSServers = append(o.Client.DNSServers, mustAddr("192.0.2.53"))
	o.Client.Routes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")}
	o.Data = &DataChannel{Token: testToken(), Port: 3653}
	switch req.Type {
	case TypeV4AnyV6:
		o.Data.Transports = []TunnelType{TypeV4DTLSV6, TypeV4TLSV6}
	default:
		o.Data.Transports = []TunnelType{req.Type}
	}
	return o
}

// gogocRequest is the create request gogoc sends for v4v6 (§3.8).
func gogocRequest(typ TunnelType, v6 string) *Tunnel {
	return &Tunnel{
		Action: ActionCreate, Type: typ, Proxy: "no",
		Client: &ClientInfo{IPv6: mustAddr(v6), Keepalive: &Keepalive{Interval: 30, Address: mustAddr("127.0.0.1")}},
	}
}

// mustPrefix returns the i-th distinct /24 under 10.0.0.0/8.
func mustPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)
}
