package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dstmgw/dstm/auth/certchain"
	"github.com/dstmgw/dstm/internal/fsutil"
)

// Files in a client state directory. All are written 0600; the directory is
// 0700.
const (
	KeyFile   = "client.key" // PEM "EC PRIVATE KEY"
	CertFile  = "client.crt" // PEM chain: leaf, intermediate
	RootFile  = "root.crt"   // PEM root, pinned at enrollment
	filesPerm = fsutil.KeyPerm
)

// State is an enrolled client's credentials.
type State struct {
	Certificate tls.Certificate   // key and chain, Leaf set
	Leaf        *x509.Certificate // the client certificate
	Root        *x509.Certificate // the pinned gateway root
	Roots       *x509.CertPool    // pool holding Root
	Identity    string            // the leaf's subject common name

	// server verifies the gateway's certificate to Root, with our own
	// chain's intermediate verified once. Nil in a State not made by Load.
	server *certchain.Verifier
}

// Fingerprint returns the pinned root's fingerprint.
func (s *State) Fingerprint() string { return Fingerprint(s.Root) }

// ClientTLSConfig returns a TLS client configuration presenting the
// certificate and trusting only the pinned root. serverName is the name the
// gateway's certificate must carry (a DNS name or an IP literal).
//
// The gateway's chain is verified as crypto/tls would, but in
// VerifyConnection with a certchain.Verifier, so that the intermediate of our
// own chain is verified once. crypto/tls's verification is therefore off
// (InsecureSkipVerify): ServerName, InsecureSkipVerify and VerifyConnection
// must be changed together. An empty serverName leaves the verification to
// crypto/tls, which takes the name from the dialled address.
func (s *State) ClientTLSConfig(serverName string, nextProtos ...string) *tls.Config {
	cert := s.Certificate
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		ServerName:   serverName,
		RootCAs:      s.Roots,
		Certificates: []tls.Certificate{cert},
		NextProtos:   nextProtos,
	}
	if serverName == "" || s.server == nil {
		return cfg
	}
	v := s.server
	cfg.InsecureSkipVerify = true // VerifyConnection below verifies the chain and the name
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the gateway sent no certificate")
		}
		if _, err := v.Verify(cs.PeerCertificates[0], cs.PeerCertificates[1:], time.Now(), serverName); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return nil
	}
	return cfg
}

// Load reads the credentials stored in dir by Enroll.
func Load(dir string) (*State, error) {
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load client key: %w", err)
	}
	chainPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, RootFile))
	if err != nil {
		return nil, fmt.Errorf("load root: %w", err)
	}
	return parseState(keyPEM, chainPEM, rootPEM)
}

func parseState(keyPEM, chainPEM, rootPEM []byte) (*State, error) {
	cert, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load client key pair: %w", err)
	}
	root, err := parseOneCert(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("load root: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	var inters []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("load client certificate chain: %w", err)
		}
		inters = append(inters, c)
	}
	return &State{
		Certificate: cert,
		Leaf:        cert.Leaf,
		Root:        root,
		Roots:       pool,
		Identity:    cert.Leaf.Subject.CommonName,
		server: certchain.New(certchain.Config{
			Roots: []*x509.Certificate{root}, Known: inters, Usage: x509.ExtKeyUsageServerAuth,
		}),
	}, nil
}

func parseOneCert(p []byte) (*x509.Certificate, error) {
	ders, err := fsutil.DecodePEM(p, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(ders[0])
}

func parseChain(pems []string) ([]*x509.Certificate, error) {
	if len(pems) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	var out []*x509.Certificate
	for _, p := range pems {
		ders, err := fsutil.DecodePEM([]byte(p), "CERTIFICATE")
		if err != nil {
			return nil, fmt.Errorf("chain: %w", err)
		}
		for _, der := range ders {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("chain: %w", err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

func chainPEM(chain []*x509.Certificate) []byte {
	ders := make([][]byte, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	return fsutil.EncodePEM("CERTIFICATE", ders...)
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode client key: %w", err)
	}
	return fsutil.EncodePEM("EC PRIVATE KEY", der), nil
}

// save writes root, key and chain. The chain is written last: its presence
// marks a complete enrollment.
func save(dir string, key *ecdsa.PrivateKey, chain []*x509.Certificate, root *x509.Certificate) error {
	if err := fsutil.EnsureDir(dir); err != nil {
		return err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, RootFile), fsutil.EncodePEM("CERTIFICATE", root.Raw), filesPerm); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, KeyFile), kp, filesPerm); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, CertFile), chainPEM(chain), filesPerm)
}

// verifyIssued checks that chain[0] is a client certificate for pub that
// chains to root.
func verifyIssued(chain []*x509.Certificate, root *x509.Certificate, pub crypto.PublicKey) error {
	leaf := chain[0]
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2),
	})
	if err != nil {
		return fmt.Errorf("issued certificate does not verify against the pinned root: %w", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := leaf.PublicKey.(equaler); !ok || !k.Equal(pub) {
		return errors.New("issued certificate is not for our key")
	}
	return nil
}
