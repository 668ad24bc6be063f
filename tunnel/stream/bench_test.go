package stream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// selfSigned returns a throw-away ECDSA P-256 certificate for name.
func selfSigned(b testing.TB, name string) tls.Certificate {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsPair returns both ends of a TLS 1.3 connection over loopback TCP.
func tlsPair(b testing.TB) (client, server *tls.Conn) {
	b.Helper()
	cert := selfSigned(b, "gw.test")
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			accepted <- nil
			return
		}
		accepted <- tc
	}()
	client, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs: pool, ServerName: "gw.test", Certificates: []tls.Certificate{cert},
		MinVersion: tls.VersionTLS13,
	})
	if err != nil {
		b.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		b.Fatal("server handshake failed")
	}
	return client, server
}

type countReceiver struct{ n atomic.Int64 }

func (r *countReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		r.receive(p)
	}
}

func (r *countReceiver) receive([]byte) { r.n.Add(1) }

// waitCount polls until want packets arrived.
func (r *countReceiver) waitCount(b *testing.B, want int64) {
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(100 * time.Microsecond)
	defer tick.Stop()
	for r.n.Load() < want {
		select {
		case <-tick.C:
		case <-deadline:
			b.Fatalf("%d of %d queued packets arrived", r.n.Load(), want)
		}
	}
}

// BenchmarkStreamLink measures one direction of a stream Link over TLS 1.3
// on loopback TCP: 1400-byte packets written in batches of 16, as the
// gateway's TUN reader would, with a bounded window in flight.
func BenchmarkStreamLink(b *testing.B) {
	cc, sc := tlsPair(b)
	recv := &countReceiver{}
	tx := New(cc, &countReceiver{}, Options{QueueBytes: 2 << 20})
	rx := New(sc, recv, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = tx.Run(ctx) }()
	go func() { _ = rx.Run(ctx) }()

	const batch, window = 16, 1024
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = ipv4Packet(1400, byte(i))
	}
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; sent += batch {
		// Keep at most window packets in flight so that the bounded
		// queue never tail-drops: this measures the link, not the drop.
		for int64(sent)-recv.n.Load() > window {
			runtime.Gosched()
		}
		if err := tx.WritePackets(pkts[:min(batch, b.N-sent)]); err != nil {
			b.Fatal(err)
		}
	}
	recv.waitCount(b, int64(tx.Stats().PacketsOut))
	el := time.Since(start)
	b.StopTimer()
	got := float64(recv.n.Load())
	b.ReportMetric(got/el.Seconds(), "pkts/s")
	b.ReportMetric(got*1400/el.Seconds()/1e6, "MB/s")
	b.ReportMetric(100*float64(tx.Stats().DroppedQueueFull)/float64(b.N), "drop%")
}
