package dtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/udpmux"
	piondtls "github.com/pion/dtls/v3"
	"github.com/rs/zerolog"
)

// Token retransmission while waiting for the server's acknowledgement.
const (
	tokenRTO    = 250 * time.Millisecond
	tokenRTOMax = 2 * time.Second
)

// ClientConfig configures Dial.
type ClientConfig struct {
	Certificates []tls.Certificate // required
	RootCAs      *x509.CertPool
	ServerName   string
	// AltServerName, when set, is a second name the server's certificate may carry instead
	// of ServerName: the address the offer names, for a TEP node apart from the control node
	// (the offer came over the authenticated control channel).
	AltServerName string
	Token         []byte // the session token from the TSP offer
	MTU           int    // path MTU for handshake flights; zero: pion's 1200
	// NoDataRecords declines the server's data-record offer: packets stay in DTLS records.
	NoDataRecords bool
	Logger        zerolog.Logger

	// dataVersion is the highest data-record version accepted; 0: dataV2. Tests set dataV1
	// to be a client from before version 2.
	dataVersion byte
}

// ClientLink is the client side of a bound DTLS link.
type ClientLink struct {
	*link
	bound     chan struct{}
	boundOnce sync.Once
}

var _ tunnel.Link = (*ClientLink)(nil)

// Dial runs the DTLS handshake with server over conn, sends the session
// token until the server acknowledges the bind, and delivers inbound packets
// to r. Dial owns conn, which may be a RebindConn. ctx bounds the handshake
// and the bind.
func Dial(ctx context.Context, conn net.PacketConn, server netip.AddrPort, cfg ClientConfig, r tunnel.Receiver) (*ClientLink, error) {
	if len(cfg.Token) != tsp.TokenLen {
		_ = conn.Close()
		return nil, fmt.Errorf("dtls: token is %d bytes, want %d", len(cfg.Token), tsp.TokenLen)
	}
	under := newDataConn(conn)
	serverAddr := net.UDPAddrFromAddrPort(server)
	dc, err := piondtls.ClientWithOptions(newHelloConn(under), serverAddr, clientOptions(cfg)...)
	if err != nil {
		_ = under.Close()
		return nil, fmt.Errorf("dtls: client conn: %w", err)
	}
	if err := dc.HandshakeContext(ctx); err != nil {
		_ = dc.Close()
		_ = under.Close()
		return nil, fmt.Errorf("dtls: handshake with %v: %w", server, err)
	}
	cl := newClientLink(dc, cfg.Token)
	cl.recv = r
	if !cfg.NoDataRecords {
		cl.data.remote.Store(&server)
		cl.data.batches = new(sync.Pool)
		var bw *udpmux.BatchWriter // sendmmsg and GSO on a plain UDP socket
		if u, ok := conn.(*net.UDPConn); ok {
			bw = udpmux.NewBatchWriter(u)
		}
		cl.data.writeBatch = func(bufs [][]byte, _ netip.AddrPort) error { return writeBatch(conn, bw, bufs, server) }
		if rc, ok := conn.(*RebindConn); ok { // follows the socket across rebinds
			cl.data.writeBatch = func(bufs [][]byte, _ netip.AddrPort) error { return rc.WriteBatch(bufs, server) }
		}
		maxVersion := cfg.dataVersion
		if maxVersion == 0 {
			maxVersion = dataV2
		}
		cl.onNegotiation = func(n negotiation) { cl.acceptData(n, maxVersion) }
		cl.data.markDirty = func(*link) {} // under flushes its one link at the end of a batch
		under.link.Store(cl.link)
	}
	go cl.run()
	if err := cl.awaitBind(ctx); err != nil {
		cl.finish(err)
		return nil, err
	}
	return cl, nil
}

func clientOptions(cfg ClientConfig) []piondtls.ClientOption {
	opts := []piondtls.ClientOption{
		piondtls.WithRootCAs(cfg.RootCAs),
		piondtls.WithServerName(cfg.ServerName),
		piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret),
		piondtls.WithCipherSuites(cipherSuites...),
		// Send the server's CID; the client needs none of its own.
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
		piondtls.WithLoggerFactory(pionLoggerFactory{log: cfg.Logger}),
	}
	if len(cfg.Certificates) > 0 {
		opts = append(opts, piondtls.WithCertificates(cfg.Certificates...))
	}
	if cfg.AltServerName != "" && cfg.AltServerName != cfg.ServerName {
		// pion checks one name; this checks the chain for either. pion still verifies the
		// server's key exchange signature with the certificate's key before calling it.
		opts = append(opts, piondtls.WithInsecureSkipVerify(true),
			piondtls.WithVerifyPeerCertificate(verifyServerNames(cfg.RootCAs, cfg.ServerName, cfg.AltServerName)))
	}
	if cfg.MTU > 0 {
		opts = append(opts, piondtls.WithMTU(cfg.MTU))
	}
	return opts
}

func newClientLink(dc *piondtls.Conn, token []byte) *ClientLink {
	cl := &ClientLink{
		link:  newLink(dc, append([]byte(nil), token...), 0, time.Now),
		bound: make(chan struct{}),
	}
	// Any record from the server proves the bind: the server sends
	// nothing before it.
	cl.onRecord = func() { cl.boundOnce.Do(func() { close(cl.bound) }) }
	return cl
}

// ErrBindRefused is returned by Dial when the server closed the link
// instead of acknowledging the token.
var ErrBindRefused = errors.New("dtls: server refused the session token")

// awaitBind sends the token, retransmitting with backoff, until the server
// acknowledges it, closes the link, or ctx ends.
func (cl *ClientLink) awaitBind(ctx context.Context) error {
	rto := tokenRTO
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-cl.bound:
			return nil
		case <-cl.done:
			if err := cl.Err(); err != nil {
				return fmt.Errorf("%w: %w", ErrBindRefused, err)
			}
			return ErrBindRefused
		case <-ctx.Done():
			return fmt.Errorf("dtls: waiting for token ack: %w", ctx.Err())
		case <-timer.C:
			if _, err := cl.conn.Load().Write(cl.token); err != nil {
				return fmt.Errorf("dtls: send token: %w", err)
			}
			timer.Reset(rto)
			rto = min(2*rto, tokenRTOMax)
		}
	}
}

// acceptData takes the server's data-record offer of a version up to maxVersion: packets go
// out as data records from now on, and the accept, of the offer's version, tells the server
// to do the same. A repeated offer is answered again; one of version 1 after version 2 was
// accepted is not (the server offers both).
func (cl *ClientLink) acceptData(n negotiation, maxVersion byte) {
	if n.kind != negOffer || n.version > maxVersion || n.version < dataV2 && cl.data.v2.Load() {
		return
	}
	if dp := cl.data.path.Load(); dp == nil {
		dp, err := newDataPath(cl.conn.Load(), n.suite, n.session, false)
		if err != nil {
			return // the link goes on with DTLS records
		}
		cl.data.path.Store(dp)
	} else if dp.session != n.session {
		return
	}
	n.kind = negAccept
	if n.version >= dataV2 {
		cl.data.v2.Store(true) // before the accept: the server may end the session by a close record at once
	}
	_, _ = cl.conn.Load().Write(n.marshal())
	cl.data.send.Store(true)
}

// verifyServerNames verifies the server's certificate chain up to roots, for server
// authentication, naming one of names (a DNS name or an IP address).
func verifyServerNames(roots *x509.CertPool, names ...string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("dtls: the server sent no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("dtls: server certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		var errs []error
		for _, n := range names {
			_, err := certs[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, DNSName: n, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return fmt.Errorf("dtls: server certificate: %w", errors.Join(errs...))
	}
}
