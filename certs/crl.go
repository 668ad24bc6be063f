package certs

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"sync"
	"time"
)

type crlCache struct {
	mu         sync.Mutex
	der        []byte
	thisUpdate time.Time
}

// CRL returns the current CRL, DER encoded and signed by the intermediate,
// listing every unexpired revoked certificate. It is regenerated on every
// revocation and, when asked for, after half its validity.
func (ca *CA) CRL() ([]byte, error) {
	ca.crl.mu.Lock()
	fresh := ca.crl.der != nil && ca.opts.Now().Before(ca.crl.thisUpdate.Add(ca.opts.CRLValidity/2))
	der := ca.crl.der
	ca.crl.mu.Unlock()
	if fresh {
		return der, nil
	}
	if err := ca.refreshCRL(); err != nil {
		return nil, err
	}
	ca.crl.mu.Lock()
	defer ca.crl.mu.Unlock()
	return ca.crl.der, nil
}

func (ca *CA) refreshCRL() error {
	ca.crl.mu.Lock()
	defer ca.crl.mu.Unlock()
	recs, err := ca.index.revoked()
	if err != nil {
		return err
	}
	n, err := ca.index.nextCRLNumber()
	if err != nil {
		return err
	}
	now := ca.opts.Now().UTC().Truncate(time.Second)
	tpl := &x509.RevocationList{
		Number:     new(big.Int).SetUint64(n),
		ThisUpdate: now,
		NextUpdate: now.Add(ca.opts.CRLValidity),
	}
	for serial, r := range recs {
		if now.After(r.NotAfter) {
			continue
		}
		sn, ok := new(big.Int).SetString(serial, 10)
		if !ok {
			return fmt.Errorf("CRL: bad serial %q in index", serial)
		}
		tpl.RevokedCertificateEntries = append(tpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: sn, RevocationTime: r.RevokedAt, ReasonCode: r.ReasonCode})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tpl, ca.pki.inter, ca.pki.interKey)
	if err != nil {
		return fmt.Errorf("sign CRL: %w", err)
	}
	ca.crl.der, ca.crl.thisUpdate = der, now
	return nil
}
