package certs_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
)

func waitRevocation(t *testing.T, ch <-chan certs.Revocation) certs.Revocation {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no revocation event")
		return certs.Revocation{}
	}
}

func TestRevokeBySerial(t *testing.T) {
	clk := newClock()
	ca, dir := newCA(t, clk)
	const id = "alice@corp.example"
	chain, _ := enrollIdentity(t, ca, id)
	keep, _ := enrollIdentity(t, ca, "bob@corp.example")
	serial := chain[0].SerialNumber.String()
	events, cancel := ca.Subscribe(4)
	defer cancel()

	if ca.IsRevoked(serial) {
		t.Fatal("revoked before Revoke")
	}
	hexSerial := fmt.Sprintf("0x%x", chain[0].SerialNumber)
	if err := ca.Revoke(t.Context(), hexSerial, "keyCompromise"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if !ca.IsRevoked(serial) || ca.IsRevoked(keep[0].SerialNumber.String()) {
		t.Fatal("IsRevoked wrong after Revoke")
	}
	if ev := waitRevocation(t, events); ev.Serial != serial || ev.Identity != id {
		t.Errorf("event %+v", ev)
	}
	checkCRL(t, ca, []string{serial})

	if err := ca.Revoke(t.Context(), serial, ""); !errors.Is(err, certs.ErrAlreadyRevoked) {
		t.Errorf("second Revoke: %v, want ErrAlreadyRevoked", err)
	}
	if err := ca.Revoke(t.Context(), "12345", ""); !errors.Is(err, certs.ErrUnknownSerial) {
		t.Errorf("unknown serial: %v", err)
	}
	if err := ca.Revoke(t.Context(), "-1", ""); !errors.Is(err, certs.ErrBadSerial) {
		t.Errorf("bad serial: %v", err)
	}

	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-events; ok {
		t.Error("subscription not closed by Close")
	}
	ca2, err := certs.Open(dir, testOptions(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	if !ca2.IsRevoked(serial) || ca2.IsRevoked(keep[0].SerialNumber.String()) {
		t.Fatal("IsRevoked wrong after reopen")
	}
	checkCRL(t, ca2, []string{serial})
}

func TestRevokeIdentity(t *testing.T) {
	ca, _ := newCA(t, newClock())
	const id = "alice@corp.example"
	a, _ := enrollIdentity(t, ca, id)
	b, _ := enrollIdentity(t, ca, id)
	other, _ := enrollIdentity(t, ca, "bob@corp.example")
	events, cancel := ca.Subscribe(8)
	defer cancel()

	got, err := ca.RevokeIdentity(t.Context(), "Alice@Corp.Example")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{a[0].SerialNumber.String(), b[0].SerialNumber.String()}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("revoked %v, want %v", got, want)
	}
	for range 2 {
		if ev := waitRevocation(t, events); ev.Identity != id {
			t.Errorf("event %+v", ev)
		}
	}
	if ca.IsRevoked(other[0].SerialNumber.String()) {
		t.Error("bob revoked too")
	}
	checkCRL(t, ca, want)
	again, err := ca.RevokeIdentity(t.Context(), id)
	if err != nil || len(again) != 0 {
		t.Errorf("second RevokeIdentity: %v %v", again, err)
	}
	if _, err := ca.RevokeIdentity(t.Context(), "nobody@corp.example"); !errors.Is(err, certs.ErrUnknownIdentity) {
		t.Errorf("unknown identity: %v", err)
	}
}

func TestSubscribeDropPolicy(t *testing.T) {
	ca, _ := newCA(t, newClock())
	for range 3 {
		enrollIdentity(t, ca, "alice@corp.example")
	}
	events, cancel := ca.Subscribe(1)
	if _, err := ca.RevokeIdentity(t.Context(), "alice@corp.example"); err != nil {
		t.Fatal(err)
	}
	if got := ca.DroppedEvents(); got != 2 {
		t.Errorf("dropped %d, want 2", got)
	}
	waitRevocation(t, events)
	cancel()
	cancel() // idempotent
	if _, ok := <-events; ok {
		t.Error("channel open after cancel")
	}
}

func checkCRL(t *testing.T, ca *certs.CA, serials []string) {
	t.Helper()
	der, err := ca.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Intermediate()); err != nil {
		t.Fatalf("CRL not signed by the intermediate: %v", err)
	}
	var got []string
	for _, e := range crl.RevokedCertificateEntries {
		got = append(got, e.SerialNumber.String())
	}
	for _, s := range serials {
		if !slices.Contains(got, s) {
			t.Errorf("CRL lacks %s (has %v)", s, got)
		}
	}
	if len(got) != len(serials) {
		t.Errorf("CRL lists %v, want %v", got, serials)
	}
}

func TestConcurrentEnrollRenewRevoke(t *testing.T) {
	ca, _ := newCA(t, newClock())
	const n = 4
	chains := make([][]*x509.Certificate, n)
	for i := range chains {
		chains[i], _ = enrollIdentity(t, ca, fmt.Sprintf("user%d@corp.example", i))
	}
	errs := make(chan error, 3*n)
	for i := range n {
		go func() {
			_, err := ca.Renew(t.Context(), chains[i][0], nil)
			errs <- err
		}()
		go func() {
			_, err := ca.RevokeIdentity(t.Context(), fmt.Sprintf("user%d@corp.example", i))
			errs <- err
		}()
		go func() {
			_ = ca.IsRevoked(chains[i][0].SerialNumber.String())
			_, err := ca.CRL()
			errs <- err
		}()
	}
	for range 3 * n {
		select {
		case err := <-errs:
			if err != nil && !errors.Is(err, certs.ErrRevoked) {
				t.Errorf("concurrent op: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("concurrent operations stuck")
		}
	}
	// Every certificate of every user is revoked, including renewals that
	// won the race against RevokeIdentity.
	for i := range n {
		got, err := ca.RevokeIdentity(t.Context(), fmt.Sprintf("user%d@corp.example", i))
		if err != nil || len(got) != 0 {
			t.Errorf("user%d: certificates left after revocation: %v %v", i, got, err)
		}
	}
}
