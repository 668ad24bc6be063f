package certs

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"time"
)

// renewAt is two thirds into a certificate's lifetime.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// loadServer loads server.crt/server.key, or issues a new pair if they are
// missing, unreadable, not from our intermediate, due for renewal, or for
// other names than Options asks for.
func (ca *CA) loadServer() error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(ca.dir, serverCertFile), filepath.Join(ca.dir, serverKeyFile))
	if err == nil && ca.serverUsable(cert.Leaf) {
		ca.server.Store(&cert)
		return nil
	}
	return ca.rotateServer(true)
}

func (ca *CA) serverUsable(leaf *x509.Certificate) bool {
	if leaf == nil || leaf.CheckSignatureFrom(ca.pki.inter) != nil {
		return false
	}
	if !ca.opts.Now().Before(renewAt(leaf)) {
		return false
	}
	if !slices.Equal(leaf.DNSNames, ca.opts.DNSNames) || len(leaf.IPAddresses) != len(ca.opts.IPAddresses) {
		return false
	}
	for i, ip := range leaf.IPAddresses {
		if !ip.Equal(net.IP(ca.opts.IPAddresses[i].AsSlice())) {
			return false
		}
	}
	return true
}

// rotateServer issues a new server certificate and key, writes them
// atomically and serves them. Unless force is set, a certificate that is not
// yet due is kept (several handshakes may ask at once).
func (ca *CA) rotateServer(force bool) error {
	ca.srvMu.Lock()
	defer ca.srvMu.Unlock()
	if cur := ca.server.Load(); !force && cur != nil && ca.opts.Now().Before(renewAt(cur.Leaf)) {
		return nil
	}
	cert, err := ca.pki.issueServer(ca.opts, ca.opts.Now())
	if err != nil {
		return err
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("server key is not a signer")
	}
	if err := writeKey(filepath.Join(ca.dir, serverKeyFile), key); err != nil {
		return err
	}
	if err := writeCert(filepath.Join(ca.dir, serverCertFile), cert.Leaf, ca.pki.inter); err != nil {
		return err
	}
	ca.server.Store(cert)
	ca.opts.Logger.Info().Str("serial", cert.Leaf.SerialNumber.String()).Time("not_after", cert.Leaf.NotAfter).
		Msg("server certificate issued")
	return nil
}

// ServerCertificate returns the server certificate currently served.
func (ca *CA) ServerCertificate() *tls.Certificate { return ca.server.Load() }

// GetCertificate is a tls.Config callback serving the current server
// certificate (leaf and intermediate). If Run is not running and the
// certificate is past two thirds of its lifetime, it rotates it first; if
// that fails the old certificate is served while still valid.
func (ca *CA) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := ca.server.Load()
	now := ca.opts.Now()
	if now.Before(renewAt(cur.Leaf)) {
		return cur, nil
	}
	if err := ca.rotateServer(false); err != nil && !now.Before(cur.Leaf.NotAfter) {
		return nil, fmt.Errorf("server certificate expired and rotation failed: %w", err)
	}
	return ca.server.Load(), nil
}

// ServerTLSConfig returns a TLS server configuration with GetCertificate,
// client certificates verified against the root if presented (required by
// TSP-SSL, optional for enrollment), TLS 1.2 minimum, and the given ALPN
// protocols.
func (ca *CA) ServerTLSConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: ca.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      ca.RootPool(),
		NextProtos:     nextProtos,
	}
}

// Run re-issues the server certificate at two thirds of its lifetime until
// ctx ends. A failed rotation is retried after a minute (or a tenth of the
// remaining lifetime if shorter). With Options.Shared it also follows the
// revocations made on the other gateways. It returns ctx.Err().
func (ca *CA) Run(ctx context.Context) error {
	if ix, ok := ca.index.(*etcdIndex); ok {
		done := make(chan struct{})
		go func() {
			defer close(done)
			ix.followRevoked(ctx, ca.sharedFrom, ca.remoteRevoked)
		}()
		defer func() { <-done }()
	}
	for {
		cur := ca.server.Load()
		wait := renewAt(cur.Leaf).Sub(ca.opts.Now())
		if wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ca.opts.After(wait):
			}
			continue // re-evaluate: the clock may have jumped
		}
		if err := ca.rotateServer(false); err != nil {
			ca.opts.Logger.Warn().Err(err).Msg("server certificate rotation failed")
			retry := min(time.Minute, max(cur.Leaf.NotAfter.Sub(ca.opts.Now())/10, time.Second))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ca.opts.After(retry):
			}
		}
	}
}
