package gateway_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
)

// dtlsSession runs TSP-SSL up to an accepted v4dtlsv6 tunnel (no DTLS link is bound: the
// gateway allows that) and returns the connection and the offer. With resume, the create
// carries that data element.
func dtlsSession(t *testing.T, gw *testGW, st *enroll.State, resume *tsp.DataChannel) (io.Closer, *tsp.Tunnel, error) {
	t.Helper()
	c, err := gw.dialTLS(testCtx(t), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := &tsp.Tunnel{Type: tsp.TypeV4AnyV6, Client: &tsp.ClientInfo{IPv6: loopback6}}
	if resume != nil {
		req.Type, req.Data = tsp.TypeV4DTLSV6, resume
	}
	m, err := tsp.NewClient(tsp.ClientConfig{Transport: tsp.TransportTLS, Mechanism: sasl.External, DeferAccept: true, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streamSession(c, m); err != nil {
		return c, nil, err
	}
	replies, err := m.Accept(tsp.TypeV4DTLSV6)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeReplies(c, replies); err != nil {
		t.Fatal(err)
	}
	return c, m.Offer(), nil
}

func TestResumeSessionOnNewControlConnection(t *testing.T) {
	gw := startGateway(t, nil)
	alice := gw.enrollIdentity(t, "alice@example.com")
	first, offer, err := dtlsSession(t, gw, alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	before, err := gw.admin.Sessions(ctx)
	if err != nil || len(before) != 1 {
		t.Fatalf("sessions before: %v %v", before, err)
	}

	// Someone else's certificate cannot take the session over with the token.
	mallory := gw.enrollIdentity(t, "mallory@example.com")
	if _, _, err := dtlsSession(t, gw, mallory, offer.Data); err == nil {
		t.Fatal("another identity resumed alice's session")
	} else if se := new(tsp.StatusError); !errors.As(err, &se) || se.Code != tsp.StatusAuthenticationFailed {
		t.Fatalf("refusal: %v, want status 300", err)
	}

	_, again, err := dtlsSession(t, gw, alice, offer.Data)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if again.Client.IPv4 != offer.Client.IPv4 || again.Data.Token != offer.Data.Token {
		t.Fatalf("resumed offer %v token %x, want %v %x", again.Client.IPv4, again.Data.Token, offer.Client.IPv4, offer.Data.Token)
	}
	// The first control connection is closed by the gateway.
	buf := make([]byte, 64)
	first.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := first.(io.Reader).Read(buf); err == nil {
		t.Fatal("the replaced control connection is still open")
	}
	after, err := gw.admin.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var alices []string
	for _, s := range after {
		if s.Identity == "alice@example.com" {
			alices = append(alices, s.ID)
		}
	}
	if len(alices) != 1 || alices[0] != before[0].ID {
		t.Fatalf("alice's sessions after resume %v, want just %s", alices, before[0].ID)
	}
}
