package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"go.step.sm/crypto/jose"

	"github.com/dstmgw/dstm/internal/fsutil"
	"github.com/dstmgw/dstm/internal/limit"
)

// Fixed names baked into tokens: changing them would invalidate tokens
// already handed out.
const (
	provisionerName = "dstm-enroll"
	audienceHost    = "dstm-ca"
	signAudience    = "https://" + audienceHost + "/1.0/sign"
	metaVersion     = 1
)

// clientTemplate is the smallstep template for client certificates: the
// token's subject as CN, the token's SANs, client authentication only.
const clientTemplate = `{
	"subject": {"commonName": {{ toJson .Subject.CommonName }}{{ if .Token.groups }}, "organizationalUnit": {{ toJson .Token.groups }}{{ end }}},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"]
}`

type meta struct {
	Version     int       `json:"version"`
	Provisioner string    `json:"provisioner"`
	Created     time.Time `json:"created"`
	Fingerprint string    `json:"root_fingerprint"`
}

// CA is an opened certificate authority. All methods are safe for
// concurrent use. Close releases the databases.
type CA struct {
	dir   string
	opts  Options
	pki   *pki
	kid   string
	auth  *authority.Authority
	index indexStore
	// sharedFrom is the etcd revision the shared revocations were loaded at (Options.Shared).
	sharedFrom int64
	stepDB     *stepDB // smallstep's database in etcd (Options.Shared); nil: its bbolt file
	roots      *x509.CertPool
	inter      *x509.CertPool

	revoked atomic.Pointer[map[string]struct{}] // copy-on-write
	revMu   sync.RWMutex                        // revocations: write; renewals: read
	server  atomic.Pointer[tls.Certificate]
	srvMu   sync.Mutex // serialises server certificate rotation
	crl     crlCache
	events  broker
	signIn  atomic.Pointer[SignIn] // single sign-on; nil: disabled
	// signInRate bounds sign-ins verified (each may fetch the provider's keys)
	signInRate *limit.TokenBucket

	closeOnce sync.Once
	closeErr  error
}

// Init creates a new CA in dir and opens it. It refuses to touch a directory
// that already holds any CA file.
func Init(dir string, opts Options) (*CA, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	for _, f := range []string{metaFile, rootCertFile, rootKeyFile, interCertFile, interKeyFile, provKeyFile, caDBFile, indexDBFile} {
		if fsutil.Exists(filepath.Join(dir, f)) {
			return nil, fmt.Errorf("%w: %s exists; remove the directory to start over", ErrExists, filepath.Join(dir, f))
		}
	}
	if err := fsutil.EnsureDir(dir); err != nil {
		return nil, err
	}
	p, err := newPKI(opts.Name, opts.Now())
	if err != nil {
		return nil, err
	}
	if err := p.save(dir); err != nil {
		return nil, err
	}
	m := meta{Version: metaVersion, Provisioner: provisionerName, Created: opts.Now().UTC(), Fingerprint: Fingerprint(p.root)}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, metaFile), append(b, '\n'), fsutil.KeyPerm); err != nil {
		return nil, err
	}
	return Open(dir, opts)
}

// Open loads the CA Init created in dir. The server certificate is loaded,
// or re-issued if it is missing, due for renewal, or names other hosts than
// opts asks for.
func Open(dir string, opts Options) (*CA, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := checkMeta(dir); err != nil {
		return nil, err
	}
	p, err := loadPKI(dir)
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	ca := &CA{dir: dir, opts: opts, pki: p, roots: x509.NewCertPool(), inter: x509.NewCertPool(),
		signInRate: limit.NewTokenBucket(signInRate, signInBurst, opts.Now)}
	ca.roots.AddCert(p.root)
	ca.inter.AddCert(p.inter)
	if err := ca.start(); err != nil {
		return nil, errors.Join(err, ca.Close())
	}
	return ca, nil
}

func checkMeta(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w in %s", ErrNotInitialized, dir)
	}
	if err != nil {
		return fmt.Errorf("open CA: %w", err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("open CA: %s: %w", metaFile, err)
	}
	if m.Version != metaVersion || m.Provisioner != provisionerName {
		return fmt.Errorf("open CA: unsupported %s (version %d, provisioner %q)", metaFile, m.Version, m.Provisioner)
	}
	return nil
}

func (ca *CA) start() error {
	var err error
	if sh := ca.opts.Shared; sh != nil {
		k := newSharedKeys(sh.Prefix)
		if err := sh.claimRoot(k, Fingerprint(ca.pki.root)); err != nil {
			return err
		}
		ix := &etcdIndex{sh: sh, k: k}
		if path := filepath.Join(ca.dir, indexDBFile); fsutil.Exists(path) {
			n, err := ix.migrate(path, ca.opts.LockTimeout)
			if err != nil {
				return err
			}
			ca.opts.Logger.Info().Int("certificates", n).Str("path", path).Msg("CA index moved into the cluster's etcd")
		}
		sdb := &stepDB{sh: sh, k: k}
		if path := filepath.Join(ca.dir, caDBFile); fsutil.Exists(path) {
			if err := sdb.migrate(path, ca.opts.LockTimeout); err != nil {
				return err
			}
		}
		// Revocations after this revision are followed by Run; those before it are loaded now.
		if ca.sharedFrom, err = ix.revision(); err != nil {
			return fmt.Errorf("open CA: %w", err)
		}
		ca.index, ca.stepDB = ix, sdb
	} else {
		// The index is opened first and stays open as long as the CA: a second process gives
		// up on it after opts.LockTimeout, before smallstep waits its own 5 s on ca.db.
		bi, err := openIndex(filepath.Join(ca.dir, indexDBFile), ca.opts.LockTimeout)
		if err != nil {
			return err
		}
		ca.index = bi
	}
	if err := ca.loadRevoked(); err != nil {
		return err
	}
	if ca.auth, err = ca.newAuthority(); err != nil {
		return fmt.Errorf("start embedded CA: %w", err)
	}
	return ca.loadServer()
}

func (ca *CA) newAuthority() (*authority.Authority, error) {
	pub := jose.JSONWebKey{Key: &ca.pki.provKey.PublicKey, Algorithm: jose.ES256, Use: "sig"}
	kid, err := jose.Thumbprint(&pub)
	if err != nil {
		return nil, err
	}
	pub.KeyID, ca.kid = kid, kid
	leaf := ca.opts.LeafLifetime
	minDur := min(5*time.Minute, leaf)
	prov := &provisioner.JWK{
		Type: "JWK", Name: provisionerName, Key: &pub,
		Claims: &provisioner.Claims{
			MinTLSDur:     &provisioner.Duration{Duration: minDur},
			MaxTLSDur:     &provisioner.Duration{Duration: leaf},
			DefaultTLSDur: &provisioner.Duration{Duration: leaf},
		},
		Options: &provisioner.Options{X509: &provisioner.X509Options{Template: clientTemplate}},
	}
	cfg := &config.Config{
		DNSNames: []string{audienceHost},
		AuthorityConfig: &config.AuthConfig{
			Provisioners:         provisioner.List{prov},
			DisableIssuedAtCheck: true, // tokens outlive a restart
		},
		DB: &db.Config{Type: "bbolt", DataSource: filepath.Join(ca.dir, caDBFile)},
	}
	opts := []authority.Option{
		authority.WithConfig(cfg),
		authority.WithX509RootCerts(ca.pki.root),
		authority.WithX509Signer(ca.pki.inter, ca.pki.interKey),
		authority.WithQuietInit(),
	}
	if ca.stepDB != nil {
		cfg.DB = nil
		opts = append(opts, authority.WithDatabase(ca.stepDB))
	}
	return authority.NewEmbedded(opts...)
}

// Close shuts the CA down, closing its databases and subscription channels.
func (ca *CA) Close() error {
	ca.closeOnce.Do(func() {
		var errs []error
		if ca.auth != nil {
			errs = append(errs, ca.auth.Shutdown())
		}
		if ca.index != nil {
			errs = append(errs, ca.index.close())
		}
		ca.events.closeAll()
		if err := errors.Join(errs...); err != nil {
			ca.closeErr = fmt.Errorf("close CA: %w", err)
		}
	})
	return ca.closeErr
}

// Root returns the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.pki.root }

// Intermediate returns the issuing certificate.
func (ca *CA) Intermediate() *x509.Certificate { return ca.pki.inter }

// RootPool returns a new pool holding only the root.
func (ca *CA) RootPool() *x509.CertPool { return ca.roots.Clone() }

// Fingerprint returns the root's SHA-256 fingerprint (lowercase hex).
func (ca *CA) Fingerprint() string { return Fingerprint(ca.pki.root) }

// Dir returns the state directory.
func (ca *CA) Dir() string { return ca.dir }
