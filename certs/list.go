package certs

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Certificate describes one client certificate the CA issued, as the index and smallstep's
// database record it.
type Certificate struct {
	Serial    string // decimal
	Identity  string
	NotBefore time.Time // when it was issued (smallstep backdates by a minute); zero if unknown
	NotAfter  time.Time
	RenewalOf string // the serial it renewed, if any
	Revoked   bool
	RevokedAt time.Time
	Reason    string // revocation reason, as given
}

// Certificates lists the certificates issued to identity, the newest (latest NotAfter)
// first; none for an identity that never had one.
func (ca *CA) Certificates(identity string) ([]Certificate, error) {
	id, err := NormalizeIdentity(identity)
	if err != nil {
		return nil, err
	}
	serials, err := ca.index.serialsOf(id)
	if err != nil {
		return nil, err
	}
	out := make([]Certificate, 0, len(serials))
	for _, s := range serials {
		c, ok, err := ca.certificate(s)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Certificate) int {
		if c := b.NotAfter.Compare(a.NotAfter); c != 0 {
			return c
		}
		return compareSerials(b.Serial, a.Serial)
	})
	return out, nil
}

// Certificate returns one certificate by serial (decimal, 0x-hex or colon hex); it fails with
// ErrUnknownSerial if this CA did not issue it.
func (ca *CA) Certificate(serial string) (Certificate, error) {
	s, err := ParseSerial(serial)
	if err != nil {
		return Certificate{}, err
	}
	c, ok, err := ca.certificate(s)
	if err != nil {
		return Certificate{}, err
	}
	if !ok {
		return Certificate{}, fmt.Errorf("%w: %s", ErrUnknownSerial, s)
	}
	return c, nil
}

func (ca *CA) certificate(serial string) (Certificate, bool, error) {
	rec, ok, err := ca.index.issued(serial)
	if err != nil || !ok {
		return Certificate{}, false, err
	}
	c := Certificate{Serial: serial, Identity: rec.Identity, NotAfter: rec.NotAfter, RenewalOf: rec.Renewal}
	// The index keeps no issue time; smallstep's database keeps the certificate itself.
	if crt, err := ca.auth.GetDatabase().GetCertificate(serial); err == nil && crt != nil {
		c.NotBefore = crt.NotBefore
	}
	if ca.IsRevoked(serial) {
		c.Revoked = true
		rr, found, err := ca.index.revokedOne(serial)
		if err != nil {
			return Certificate{}, false, err
		}
		if found {
			c.RevokedAt, c.Reason = rr.RevokedAt, rr.Reason
		}
	}
	return c, true, nil
}

// compareSerials orders decimal serials by value.
func compareSerials(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (ix *boltIndex) revokedOne(serial string) (revokedRecord, bool, error) {
	var rec revokedRecord
	var found bool
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketRevoked)).Get([]byte(serial))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return rec, false, fmt.Errorf("index lookup of revocation %s: %w", serial, err)
	}
	return rec, found, nil
}

func (ix *etcdIndex) revokedOne(serial string) (revokedRecord, bool, error) {
	var rec revokedRecord
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	resp, err := ix.sh.Client.Get(ctx, ix.k.revoked+serial)
	if err != nil {
		return rec, false, fmt.Errorf("index lookup of revocation %s: etcd: %w", serial, err)
	}
	if len(resp.Kvs) == 0 {
		return rec, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return rec, false, fmt.Errorf("index lookup of revocation %s: %w", serial, err)
	}
	return rec, true, nil
}
