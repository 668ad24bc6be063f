package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/x509util"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/internal/fsutil"
)

// File names inside the CA state directory.
const (
	rootCertFile   = "root_ca.crt"
	rootKeyFile    = "root_ca.key"
	interCertFile  = "intermediate_ca.crt"
	interKeyFile   = "intermediate_ca.key"
	provKeyFile    = "provisioner.key"
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	caDBFile       = "ca.db"
	indexDBFile    = "index.db"
	metaFile       = "ca.json"
	certPerm       = 0o644
)

// backdate is subtracted from NotBefore of certificates we sign ourselves,
// as smallstep does, to tolerate clock skew.
const backdate = time.Minute

type pki struct {
	root     *x509.Certificate
	rootKey  crypto.Signer
	inter    *x509.Certificate
	interKey crypto.Signer
	provKey  *ecdsa.PrivateKey
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

func newPKI(name string, now time.Time) (*pki, error) {
	p := &pki{}
	rootKey, err := newKey()
	if err != nil {
		return nil, err
	}
	interKey, err := newKey()
	if err != nil {
		return nil, err
	}
	if p.provKey, err = newKey(); err != nil {
		return nil, err
	}
	p.rootKey, p.interKey = rootKey, interKey
	notAfter := now.Add(CALifetime)
	p.root, err = signCA(name+" Root CA", x509util.DefaultRootTemplate, rootKey, nil, rootKey, now, notAfter)
	if err != nil {
		return nil, fmt.Errorf("create root: %w", err)
	}
	p.inter, err = signCA(name+" Intermediate CA", x509util.DefaultIntermediateTemplate, interKey, p.root, rootKey, now, notAfter)
	if err != nil {
		return nil, fmt.Errorf("create intermediate: %w", err)
	}
	return p, nil
}

func signCA(cn, tmpl string, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer, now, notAfter time.Time) (*x509.Certificate, error) {
	cr, err := x509util.CreateCertificateRequest(cn, []string{}, key)
	if err != nil {
		return nil, err
	}
	c, err := x509util.NewCertificate(cr, x509util.WithTemplate(tmpl, x509util.CreateTemplateData(cn, []string{})))
	if err != nil {
		return nil, err
	}
	t := c.GetCertificate()
	t.NotBefore, t.NotAfter = now.Add(-backdate), notAfter
	if parent == nil {
		parent = t
	}
	return x509util.CreateCertificate(t, parent, key.Public(), parentKey)
}

// issueServer signs a fresh server certificate (new key each time) with the
// intermediate, valid from now for lifetime.
func (p *pki) issueServer(o Options, now time.Time) (*tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("server certificate serial: %w", err)
	}
	cn := firstName(o)
	t := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(o.ServerLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     o.DNSNames,
	}
	for _, a := range o.IPAddresses {
		t.IPAddresses = append(t.IPAddresses, net.IP(a.AsSlice()))
	}
	if t.NotAfter.After(p.inter.NotAfter) {
		t.NotAfter = p.inter.NotAfter
	}
	leaf, err := x509util.CreateCertificate(t, p.inter, key.Public(), p.interKey)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw, p.inter.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

func firstName(o Options) string {
	if len(o.DNSNames) > 0 {
		return o.DNSNames[0]
	}
	return o.IPAddresses[0].String()
}

// save writes the CA material of Init. Keys first, certificates after.
func (p *pki) save(dir string) error {
	for _, f := range []struct {
		name string
		key  crypto.Signer
	}{{rootKeyFile, p.rootKey}, {interKeyFile, p.interKey}, {provKeyFile, p.provKey}} {
		if err := writeKey(filepath.Join(dir, f.name), f.key); err != nil {
			return err
		}
	}
	if err := writeCert(filepath.Join(dir, rootCertFile), p.root); err != nil {
		return err
	}
	return writeCert(filepath.Join(dir, interCertFile), p.inter)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return fsutil.WriteFileAtomic(path, fsutil.EncodePEM("PRIVATE KEY", der), fsutil.KeyPerm)
}

func writeCert(path string, certs ...*x509.Certificate) error {
	ders := make([][]byte, len(certs))
	for i, c := range certs {
		ders[i] = c.Raw
	}
	return fsutil.WriteFileAtomic(path, fsutil.EncodePEM("CERTIFICATE", ders...), certPerm)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := readPrivate(path)
	if err != nil {
		return nil, err
	}
	ders, err := fsutil.DecodePEM(b, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	k, err := x509.ParsePKCS8PrivateKey(ders[0])
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read %s: not a signing key", filepath.Base(path))
	}
	return s, nil
}

// readPrivate reads a key file and refuses one readable by group or others.
func readPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read key: %s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	return os.ReadFile(path)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	ders, err := fsutil.DecodePEM(b, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
		}
		out = append(out, c)
	}
	return out, nil
}

func loadPKI(dir string) (*pki, error) {
	p := &pki{}
	var err error
	if p.rootKey, err = readKey(filepath.Join(dir, rootKeyFile)); err != nil {
		return nil, err
	}
	if p.interKey, err = readKey(filepath.Join(dir, interKeyFile)); err != nil {
		return nil, err
	}
	prov, err := readKey(filepath.Join(dir, provKeyFile))
	if err != nil {
		return nil, err
	}
	var ok bool
	if p.provKey, ok = prov.(*ecdsa.PrivateKey); !ok {
		return nil, errors.New("provisioner key is not an ECDSA key")
	}
	if p.root, err = readOne(filepath.Join(dir, rootCertFile)); err != nil {
		return nil, err
	}
	if p.inter, err = readOne(filepath.Join(dir, interCertFile)); err != nil {
		return nil, err
	}
	return p, p.check()
}

func readOne(path string) (*x509.Certificate, error) {
	cs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

func (p *pki) check() error {
	if err := p.inter.CheckSignatureFrom(p.root); err != nil {
		return fmt.Errorf("intermediate not signed by root: %w", err)
	}
	if !keyMatches(p.root.PublicKey, p.rootKey) || !keyMatches(p.inter.PublicKey, p.interKey) {
		return errors.New("CA key does not match its certificate")
	}
	return nil
}

func keyMatches(pub crypto.PublicKey, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := pub.(equaler)
	return ok && e.Equal(key.Public())
}

// Fingerprint returns the SHA-256 fingerprint of a certificate's DER in
// lowercase hex, as `step certificate fingerprint` prints it.
func Fingerprint(c *x509.Certificate) string { return enroll.Fingerprint(c) }
