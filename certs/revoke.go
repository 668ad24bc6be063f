package certs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
)

// Revocation is published to subscribers for every revoked certificate.
type Revocation struct {
	Serial   string // decimal
	Identity string
}

// reasonCodes maps RFC 5280 reason names (case-insensitive) to codes; any
// other reason text is kept as text with code 0 (unspecified).
func reasonCode(reason string) int {
	switch strings.ToLower(strings.TrimSpace(reason)) {
	case "keycompromise", "key-compromise":
		return 1
	case "affiliationchanged", "affiliation-changed":
		return 3
	case "superseded":
		return 4
	case "cessationofoperation", "cessation-of-operation":
		return 5
	case "privilegewithdrawn", "privilege-withdrawn":
		return 9
	default:
		return 0
	}
}

// IsRevoked reports whether serial (decimal) was revoked. It is a lock-free
// map lookup, cheap enough for every TLS handshake.
func (ca *CA) IsRevoked(serial string) bool {
	m := ca.revoked.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[serial]
	return ok
}

func (ca *CA) loadRevoked() error {
	recs, err := ca.index.revoked()
	if err != nil {
		return err
	}
	m := make(map[string]struct{}, len(recs))
	for s := range recs {
		m[s] = struct{}{}
	}
	ca.revoked.Store(&m)
	return nil
}

// Revoke revokes one certificate by serial (decimal, 0x-hex or colon hex):
// IsRevoked answers true at once, the CRL is regenerated and subscribers
// receive a Revocation.
func (ca *CA) Revoke(ctx context.Context, serial, reason string) error {
	s, err := ParseSerial(serial)
	if err != nil {
		return err
	}
	ca.revMu.Lock()
	defer ca.revMu.Unlock()
	rec, ok, err := ca.index.issued(s)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownSerial, s)
	}
	stepErr, err := ca.revokeLocked(ctx, s, rec, reason)
	if err != nil {
		return err
	}
	return errors.Join(stepErr, ca.refreshCRL())
}

// RevokeIdentity revokes every unexpired, unrevoked certificate of identity
// and returns their serials. It fails with ErrUnknownIdentity if none was
// ever issued.
func (ca *CA) RevokeIdentity(ctx context.Context, identity string) ([]string, error) {
	id, err := NormalizeIdentity(identity)
	if err != nil {
		return nil, err
	}
	ca.revMu.Lock()
	defer ca.revMu.Unlock()
	serials, err := ca.index.serialsOf(id)
	if err != nil {
		return nil, err
	}
	if len(serials) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownIdentity, id)
	}
	var done []string
	var stepErrs []error
	now := ca.opts.Now()
	tried := map[string]bool{}
	// In a cluster another gateway may renew one of these certificates meanwhile: its
	// renewal is recorded only if the certificate it renews is not revoked by then (see
	// etcdIndex.recordIssued), so listing the serials again after revoking finds it.
	for len(serials) > 0 {
		for _, s := range serials {
			tried[s] = true
			rec, ok, err := ca.index.issued(s)
			if err != nil {
				return done, errors.Join(err, ca.refreshCRL())
			}
			if !ok || ca.IsRevoked(s) || now.After(rec.NotAfter) {
				continue
			}
			stepErr, err := ca.revokeLocked(ctx, s, rec, "identity revoked")
			if errors.Is(err, ErrAlreadyRevoked) { // by another gateway just now
				ca.markRevoked(s)
				continue
			}
			if err != nil {
				return done, errors.Join(err, ca.refreshCRL())
			}
			stepErrs = append(stepErrs, stepErr)
			done = append(done, s)
		}
		if !ca.shared() {
			break
		}
		all, err := ca.index.serialsOf(id)
		if err != nil {
			return done, errors.Join(err, ca.refreshCRL())
		}
		serials = serials[:0]
		for _, s := range all {
			if !tried[s] {
				serials = append(serials, s)
			}
		}
	}
	if len(done) == 0 {
		return nil, nil
	}
	return done, errors.Join(append(stepErrs, ca.refreshCRL())...)
}

// revokeLocked records the revocation in our index (the authority for
// IsRevoked, events and the CRL), updates the in-memory set, publishes, then
// records it in smallstep's DB. A failure of that last step is returned as
// stepErr: the certificate is already refused by then. Callers hold revMu.
func (ca *CA) revokeLocked(ctx context.Context, serial string, rec issuedRecord, reason string) (stepErr, err error) {
	rr := revokedRecord{Identity: rec.Identity, Reason: reason, ReasonCode: reasonCode(reason),
		RevokedAt: ca.opts.Now().UTC(), NotAfter: rec.NotAfter}
	err = ca.index.recordRevoked(serial, rr)
	if errors.Is(err, errIndexAlreadyRevoked) {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyRevoked, serial)
	}
	if err != nil {
		return nil, fmt.Errorf("record revocation of %s: %w", serial, err)
	}
	ca.markRevoked(serial)
	ca.events.publish(Revocation{Serial: serial, Identity: rec.Identity})
	ca.opts.Logger.Info().Str("serial", serial).Str("identity", rec.Identity).Str("reason", reason).Msg("certificate revoked")
	if err := ca.stepRevoke(ctx, serial, reason, rr.ReasonCode); err != nil {
		return fmt.Errorf("revoke %s in the embedded CA's DB (the gateway already refuses it): %w", serial, err), nil
	}
	return nil, nil
}

// stepRevoke records the revocation in smallstep's DB so its own renewal
// path refuses the certificate too.
func (ca *CA) stepRevoke(ctx context.Context, serial, reason string, code int) error {
	crt, err := ca.auth.GetDatabase().GetCertificate(serial)
	if err != nil {
		return fmt.Errorf("load certificate: %w", err)
	}
	rctx := provisioner.NewContextWithMethod(ctx, provisioner.RevokeMethod)
	err = ca.auth.Revoke(rctx, &authority.RevokeOptions{
		Serial: serial, Reason: reason, ReasonCode: code, PassiveOnly: true, MTLS: true, Crt: crt,
	})
	if err != nil && !strings.Contains(err.Error(), "already revoked") {
		return err
	}
	return nil
}

func (ca *CA) markRevoked(serial string) {
	old := ca.revoked.Load()
	var m map[string]struct{}
	if old != nil {
		m = maps.Clone(*old)
	}
	if m == nil {
		m = map[string]struct{}{}
	}
	m[serial] = struct{}{}
	ca.revoked.Store(&m)
}

// shared reports whether the CA's state is in etcd (Options.Shared).
func (ca *CA) shared() bool { return ca.opts.Shared != nil }

// remoteRevoked takes in a revocation made on another gateway of the cluster (or this one's,
// seen again): refused from now on, published, in the CRL.
func (ca *CA) remoteRevoked(serial string, rec revokedRecord) {
	ca.revMu.Lock()
	seen := ca.IsRevoked(serial)
	if !seen {
		ca.markRevoked(serial)
	}
	ca.revMu.Unlock()
	if seen {
		return
	}
	ca.events.publish(Revocation{Serial: serial, Identity: rec.Identity})
	ca.opts.Logger.Info().Str("serial", serial).Str("identity", rec.Identity).Str("reason", rec.Reason).
		Msg("certificate revoked on another gateway")
	if err := ca.refreshCRL(); err != nil {
		ca.opts.Logger.Warn().Err(err).Msg("CRL not refreshed after a revocation on another gateway")
	}
}
