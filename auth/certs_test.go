package auth

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/certstest"
)

// testNow is the fixed clock of every certificate test.
var testNow = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return testNow }

// testCA is a certificate authority minted in memory.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certSpec describes a certificate to mint; zero fields get defaults.
type certSpec struct {
	serial    int64
	cn        string
	dns       []string
	email     []string
	eku       []x509.ExtKeyUsage
	noEKU     bool
	notBefore time.Time
	notAfter  time.Time
}

// mint signs tmpl with parent (self-signed if nil) for key's public key.
func mint(t testing.TB, tmpl *x509.Certificate, parent *testCA, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if parent == nil {
		return certstest.Mint(t, tmpl, nil, key, &key.PublicKey)
	}
	return certstest.Mint(t, tmpl, parent.cert, parent.key, &key.PublicKey)
}

// newRoot mints a self-signed root valid a year around testNow.
func newRoot(t testing.TB, name string) *testCA {
	return newCAWithin(t, name, nil, testNow.AddDate(-1, 0, 0), testNow.AddDate(1, 0, 0))
}

// newCAWithin mints a CA signed by parent (self-signed if nil).
func newCAWithin(t testing.TB, name string, parent *testCA, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key := certstest.NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return &testCA{cert: mint(t, tmpl, parent, key), key: key}
}

// issue mints a leaf from spec. Defaults: serial 1000, valid a day around
// testNow, clientAuth EKU, SAN derived from the CN like smallstep does.
func (ca *testCA) issue(t testing.TB, s certSpec) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	if s.serial == 0 {
		s.serial = 1000
	}
	if s.notBefore.IsZero() {
		s.notBefore = testNow.Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = testNow.Add(23 * time.Hour)
	}
	if s.eku == nil && !s.noEKU {
		s.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	key := certstest.NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(s.serial),
		Subject:        pkix.Name{CommonName: s.cn},
		DNSNames:       s.dns,
		EmailAddresses: s.email,
		NotBefore:      s.notBefore,
		NotAfter:       s.notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    s.eku,
	}
	return mint(t, tmpl, ca, key), key
}

func raw(certs ...*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// revokedSet is an in-memory Revocations.
type revokedSet map[string]bool

func (r revokedSet) IsRevoked(serial string) bool { return r[serial] }
