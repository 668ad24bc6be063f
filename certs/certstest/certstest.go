// Package certstest mints throw-away PKIs for tests of other packages: a
// root and an intermediate (ECDSA P-256) in memory, client certificates
// shaped exactly like the embedded CA's (CN = identity, one e-mail or DNS
// SAN, client-auth EKU), server certificates, TLS configurations and a
// revocation set. It uses only the standard library, so importing it does
// not link smallstep.
package certstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// CA is an in-memory test CA. It is safe for concurrent use.
type CA struct {
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	// Now is the clock for validity windows (default time.Now).
	Now func() time.Time

	rootKey  *ecdsa.PrivateKey
	interKey *ecdsa.PrivateKey
	mu       sync.Mutex
	revoked  map[string]struct{}
}

// Spec describes a leaf certificate for Issue.
type Spec struct {
	CommonName  string
	DNSNames    []string
	Emails      []string
	IPs         []net.IP
	ExtKeyUsage []x509.ExtKeyUsage
	NotBefore   time.Time // zero: now - 1 minute
	NotAfter    time.Time // zero: NotBefore + 24 h
}

// New returns a fresh CA named after the test.
func New(t testing.TB) *CA {
	t.Helper()
	ca := &CA{Now: time.Now, revoked: map[string]struct{}{}}
	ca.rootKey, ca.interKey = NewKey(t), NewKey(t)
	now := time.Now()
	name := t.Name()
	ca.Root = sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " Test Root CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * 365 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &ca.rootKey.PublicKey, ca.rootKey)
	ca.Intermediate = sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " Test Intermediate CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * 365 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, ca.Root, &ca.interKey.PublicKey, ca.rootKey)
	return ca
}

// NewKey returns a fresh ECDSA P-256 key, the kind every certificate here has.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return k
}

func sign(t testing.TB, tpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tpl.SerialNumber = nil // always a fresh random serial
	return Mint(t, tpl, parent, signer, pub)
}

// Mint signs tpl for pub with signer as the key of parent (nil: self-signed) and returns the
// parsed certificate; a tpl without a serial number gets a random one.
func Mint(t testing.TB, tpl, parent *x509.Certificate, signer *ecdsa.PrivateKey, pub *ecdsa.PublicKey) *x509.Certificate {
	t.Helper()
	if tpl.SerialNumber == nil {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			t.Fatalf("certstest: %v", err)
		}
		tpl.SerialNumber = serial
	}
	if parent == nil {
		parent = tpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return c
}

// Pool returns a pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

// Fingerprint returns the root's SHA-256 fingerprint in lowercase hex.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.Root.Raw)
	return hex.EncodeToString(sum[:])
}

// Issue signs a leaf for a new P-256 key with the intermediate and returns
// it as a tls.Certificate (leaf, intermediate; Leaf set).
func (ca *CA) Issue(t testing.TB, s Spec) tls.Certificate {
	t.Helper()
	k := NewKey(t)
	nb := s.NotBefore
	if nb.IsZero() {
		nb = ca.Now().Add(-time.Minute)
	}
	na := s.NotAfter
	if na.IsZero() {
		na = nb.Add(24 * time.Hour)
	}
	leaf := sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: s.CommonName}, DNSNames: s.DNSNames, EmailAddresses: s.Emails, IPAddresses: s.IPs,
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: s.ExtKeyUsage,
	}, ca.Intermediate, &k.PublicKey, ca.interKey)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Intermediate.Raw}, PrivateKey: k, Leaf: leaf}
}

// ClientSpec returns the Spec the embedded CA uses for identity.
func ClientSpec(identity string) Spec {
	s := Spec{CommonName: identity, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if strings.Contains(identity, "@") {
		s.Emails = []string{identity}
	} else {
		s.DNSNames = []string{identity}
	}
	return s
}

// IssueClient issues a 24 h client certificate for identity.
func (ca *CA) IssueClient(t testing.TB, identity string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, ClientSpec(identity))
}

// IssueServer issues a server certificate for names (DNS names or IP
// literals).
func (ca *CA) IssueServer(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	s := Spec{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			s.IPs = append(s.IPs, ip)
		} else {
			s.DNSNames = append(s.DNSNames, n)
		}
	}
	if len(names) > 0 {
		s.CommonName = names[0]
	}
	return ca.Issue(t, s)
}

// ServerTLSConfig returns a server configuration for names that requires
// and verifies client certificates from this CA.
func (ca *CA) ServerTLSConfig(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.IssueServer(t, names...)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
}

// ClientTLSConfig returns a client configuration presenting a fresh
// certificate for identity and trusting only this CA for serverName.
func (ca *CA) ClientTLSConfig(t testing.TB, identity, serverName string) *tls.Config {
	t.Helper()
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.IssueClient(t, identity)},
		RootCAs:      ca.Pool(),
		ServerName:   serverName,
	}
}

// Revoke marks a serial (decimal, as x509.Certificate.SerialNumber.String
// prints it) revoked.
func (ca *CA) Revoke(serial string) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.revoked[serial] = struct{}{}
}

// IsRevoked has the shape of certs.CA.IsRevoked.
func (ca *CA) IsRevoked(serial string) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	_, ok := ca.revoked[serial]
	return ok
}

// CopyKeys copies the CA directory from (keys, certificates, meta) into to, without its
// databases (*.db and their moved copies), as an operator does for the next gateway of a
// cluster (docs/cluster.md).
func CopyKeys(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".db") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(to, e.Name()), b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
