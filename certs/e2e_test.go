package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/certs/enroll"
)

// gateway serves ca.Handler on a real TLS listener the way the gateway
// mounts it (ALPN http/1.1, client certificate optional).
type gateway struct {
	addr string
	ca   *certs.CA
}

func serve(t testing.TB, ca *certs.CA, network, addr string) *gateway {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	srv := &http.Server{Handler: ca.Handler(), TLSConfig: ca.ServerTLSConfig(enroll.ALPN), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(ln, srv.TLSConfig))
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return &gateway{addr: ln.Addr().String(), ca: ca}
}

func TestEnrollOverTLS(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"ipv6", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, _ := newCA(t, newClock())
			gw := serve(t, ca, tc.network, tc.addr)
			token, _ := ca.Token("alice@corp.example", time.Hour)
			dir := filepath.Join(t.TempDir(), "client")
			st, err := enroll.Enroll(t.Context(), enroll.Options{Gateway: gw.addr, Token: token, StateDir: dir})
			if err != nil {
				t.Fatalf("Enroll (fingerprint from token): %v", err)
			}
			if st.Identity != "alice@corp.example" || st.Fingerprint() != ca.Fingerprint() {
				t.Errorf("state identity %q root %s", st.Identity, st.Fingerprint())
			}
			checkClientFiles(t, dir)
			loaded, err := enroll.Load(dir)
			if err != nil || !loaded.Leaf.Equal(st.Leaf) {
				t.Fatalf("Load: %v", err)
			}
		})
	}
}

func checkClientFiles(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("client dir mode: %v %v", fi.Mode(), err)
	}
	for _, f := range []string{enroll.KeyFile, enroll.CertFile, enroll.RootFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v err %v", f, fi.Mode(), err)
		}
	}
}

func TestEnrollOverTLSRefusals(t *testing.T) {
	ca, _ := newCA(t, newClock())
	other, _ := newCA(t, newClock())
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	const id = "alice@corp.example"
	used, _ := ca.Token(id, time.Hour)
	if _, err := enroll.Enroll(t.Context(), enroll.Options{Gateway: gw.addr, Token: used, StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	fresh := func() string { s, _ := ca.Token(id, time.Hour); return s }
	foreignToken, _ := other.Token(id, time.Hour)

	tests := []struct {
		name   string
		opts   enroll.Options
		want   error
		status int
		msg    string
	}{
		{name: "token reuse", opts: enroll.Options{Token: used}, status: http.StatusUnauthorized, msg: "already used"},
		{name: "wrong fingerprint", opts: enroll.Options{Token: fresh(), Fingerprint: other.Fingerprint()}, want: enroll.ErrFingerprintMismatch, msg: "mismatch"},
		{name: "token of another CA pins its root", opts: enroll.Options{Token: foreignToken}, want: enroll.ErrFingerprintMismatch},
		{name: "token of another CA with our pin", opts: enroll.Options{Token: foreignToken, Fingerprint: ca.Fingerprint()}, want: enroll.ErrFingerprintMismatch},
		{name: "wrong server name", opts: enroll.Options{Token: fresh(), ServerName: "evil.example"}, msg: "certificate"},
		{name: "garbage token", opts: enroll.Options{Token: "x.y.z", Fingerprint: ca.Fingerprint()}, want: enroll.ErrMalformedToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Gateway, tc.opts.StateDir = gw.addr, t.TempDir()
			_, err := enroll.Enroll(t.Context(), tc.opts)
			if err == nil {
				t.Fatal("Enroll succeeded")
			}
			t.Logf("refused: %v", err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
			var ae *enroll.APIError
			if tc.status != 0 && (!errors.As(err, &ae) || ae.Status != tc.status) {
				t.Errorf("err %v, want HTTP %d", err, tc.status)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if _, err := os.Stat(filepath.Join(tc.opts.StateDir, enroll.CertFile)); err == nil {
				t.Error("failed enrollment left a certificate behind")
			}
		})
	}
}

func TestEnrollViaDialer(t *testing.T) {
	ca, _ := newCA(t, newClock())
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	token, _ := ca.Token("laptop.corp.example", time.Hour)
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		var d net.Dialer
		return d.DialContext(ctx, network, gw.addr)
	}
	st, err := enroll.Enroll(t.Context(), enroll.Options{
		Gateway: "gw.dstm.test:3653", Token: token, Fingerprint: strings.ToUpper(ca.Fingerprint()),
		StateDir: t.TempDir(), Dial: dial,
	})
	if err != nil {
		t.Fatalf("Enroll by DNS name: %v", err)
	}
	if st.Leaf.DNSNames[0] != "laptop.corp.example" || len(dialed) != 2 || dialed[0] != "gw.dstm.test:3653" {
		t.Errorf("leaf %v dialed %v", st.Leaf.DNSNames, dialed)
	}
}

func TestRenewOverMutualTLS(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	token, _ := ca.Token("alice@corp.example", time.Hour)
	dir := t.TempDir()
	st, err := enroll.Enroll(t.Context(), enroll.Options{Gateway: gw.addr, Token: token, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := enroll.NewRenewer(enroll.RenewerOptions{StateDir: dir, Gateway: gw.addr, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Renew(t.Context()); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	renewed := r.State().Leaf
	if renewed.Equal(st.Leaf) || renewed.Subject.CommonName != "alice@corp.example" {
		t.Fatal("renewal did not replace the certificate")
	}
	if loaded, _ := enroll.Load(dir); !loaded.Leaf.Equal(renewed) {
		t.Error("renewed certificate not on disk")
	}
	c, _ := r.GetClientCertificate(nil)
	if !c.Leaf.Equal(renewed) {
		t.Error("GetClientCertificate serves the old certificate")
	}

	if err := ca.Revoke(t.Context(), renewed.SerialNumber.String(), "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	err = r.Renew(t.Context())
	var ae *enroll.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Message, "revoked") {
		t.Fatalf("renew revoked: %v, want 403 revoked", err)
	}
}

func TestRenewEndpointRefusals(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	other, _ := newCA(t, newClock())
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	chain, key := enrollIdentity(t, ca, "alice@corp.example")
	foreign, fkey := enrollIdentity(t, other, "alice@corp.example")
	mine := &tls.Certificate{Certificate: [][]byte{chain[0].Raw, chain[1].Raw}, PrivateKey: key, Leaf: chain[0]}
	theirs := &tls.Certificate{Certificate: [][]byte{foreign[0].Raw, foreign[1].Raw}, PrivateKey: fkey, Leaf: foreign[0]}

	tests := []struct {
		name   string
		cert   *tls.Certificate
		body   string
		status int
		msg    string
	}{
		{"no certificate", nil, "", http.StatusUnauthorized, "mutual TLS"},
		{"certificate from another CA", theirs, "", 0, ""}, // refused in the handshake
		{"bad JSON", mine, "{", http.StatusBadRequest, "JSON"},
		{"bad CSR", mine, `{"csr":"nope"}`, http.StatusBadRequest, "certificate request"},
		{"rekey CSR for another identity", mine, csrBody(t, "eve@corp.example"), http.StatusForbidden, "eve@corp.example"},
		{"rekey", mine, csrBody(t, "alice@corp.example"), http.StatusOK, "chain"},
		{"ok", mine, "", http.StatusOK, "chain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := post(t, gw.addr, ca.RootPool(), tc.cert, enroll.PathRenew, tc.body)
			if tc.status == 0 {
				if err == nil {
					t.Fatalf("foreign certificate accepted: %d %s", status, body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || !strings.Contains(body, tc.msg) {
				t.Errorf("got %d %s, want %d ~%q", status, body, tc.status, tc.msg)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		clk.Advance(25 * time.Hour)
		defer clk.Advance(-25 * time.Hour)
		// The handshake uses the wall clock; the CA's clock says expired.
		status, body, err := post(t, gw.addr, ca.RootPool(), mine, enroll.PathRenew, "")
		if err != nil || status != http.StatusForbidden || !strings.Contains(body, "expired") {
			t.Errorf("got %d %s %v, want 403 expired", status, body, err)
		}
	})
}

func TestSignEndpointRefusals(t *testing.T) {
	ca, _ := newCA(t, newClock())
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	tests := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"bad JSON", enroll.PathSign, "[", http.StatusBadRequest, "JSON"},
		{"no CSR", enroll.PathSign, `{"token":"a.b.c"}`, http.StatusBadRequest, "certificate request"},
		{"oversized", enroll.PathSign, `{"token":"` + strings.Repeat("a", enroll.MaxBodyBytes) + `"}`, http.StatusBadRequest, "larger"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := post(t, gw.addr, ca.RootPool(), nil, tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			var er enroll.ErrorResponse
			if status != tc.status || json.Unmarshal([]byte(body), &er) != nil || !strings.Contains(er.Error, tc.msg) {
				t.Errorf("got %d %s, want %d ~%q", status, body, tc.status, tc.msg)
			}
		})
	}
}

func TestCRLAndRootsEndpoints(t *testing.T) {
	ca, _ := newCA(t, newClock())
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	chain, _ := enrollIdentity(t, ca, "alice@corp.example")
	if err := ca.Revoke(t.Context(), chain[0].SerialNumber.String(), ""); err != nil {
		t.Fatal(err)
	}
	client := httpsClient(ca.RootPool(), nil)
	resp, err := client.Get("https://" + gw.addr + enroll.PathCRL)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL: %v %s", err, resp.Header.Get("Content-Type"))
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(chain[0].SerialNumber) != 0 {
		t.Errorf("CRL entries %v", crl.RevokedCertificateEntries)
	}
	resp, err = client.Get("https://" + gw.addr + enroll.PathRoots)
	if err != nil {
		t.Fatal(err)
	}
	var rr enroll.RootsResponse
	err = json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if err != nil || len(rr.Roots) != 1 || !strings.Contains(rr.Roots[0], "BEGIN CERTIFICATE") {
		t.Errorf("roots %v %v", rr, err)
	}
}

func httpsClient(roots *x509.CertPool, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: roots, ServerName: "gw.dstm.test", NextProtos: []string{enroll.ALPN}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

func post(t *testing.T, addr string, roots *x509.CertPool, cert *tls.Certificate, path, body string) (int, string, error) {
	t.Helper()
	resp, err := httpsClient(roots, cert).Post("https://"+addr+path, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func csrBody(t *testing.T, id string) string {
	t.Helper()
	csr := csrFor(t, certstest.NewKey(t), id, id)
	b, _ := json.Marshal(enroll.RenewRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))})
	return string(b)
}

func TestRenewerRun(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	gw := serve(t, ca, "tcp4", "127.0.0.1:0")
	token, _ := ca.Token("alice@corp.example", time.Hour)
	dir := t.TempDir()
	st, err := enroll.Enroll(t.Context(), enroll.Options{Gateway: gw.addr, Token: token, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := enroll.NewRenewer(enroll.RenewerOptions{StateDir: dir, Gateway: gw.addr, Now: clk.Now, After: clk.After})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.NextRenewal(), st.Leaf.NotBefore.Add(st.Leaf.NotAfter.Sub(st.Leaf.NotBefore)*2/3); !got.Equal(want) {
		t.Fatalf("NextRenewal %v, want %v", got, want)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	waitFor(t, func() bool { return clk.Waiters() > 0 })
	clk.Advance(17 * time.Hour) // past 2/3 of 24 h
	waitFor(t, func() bool { return !r.State().Leaf.Equal(st.Leaf) })
	// smallstep stamps validity with the wall clock, so step our clock
	// back and let the loop settle on the next renewal time.
	clk.Advance(-17 * time.Hour)
	waitFor(t, func() bool { return clk.Waiters() > 0 })
	if err := ca.Revoke(t.Context(), r.State().Leaf.SerialNumber.String(), ""); err != nil {
		t.Fatal(err)
	}
	clk.Advance(17 * time.Hour)
	select {
	case err := <-done:
		var ae *enroll.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
			t.Fatalf("Run returned %v, want 403 revoked", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going after revocation")
	}
}
