package certs_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/certs/enroll"
)

// BenchmarkEnroll measures one in-process enrollment: token, CSR check,
// smallstep Authorize (single-use record in bbolt) and Sign, index write.
// Reports "ms" per enrollment.
func BenchmarkEnroll(b *testing.B) {
	ca, _ := newCA(b, newClock())
	const id = "bench@corp.example"
	key := certstest.NewKey(b)
	csr := csrFor(b, key, id, id)
	b.ResetTimer()
	for b.Loop() {
		tok, err := ca.Token(id, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ca.Enroll(b.Context(), tok, csr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms")
}

// BenchmarkEnrollOverTLS measures a full client enrollment over loopback
// TLS: root fetch and pin, key generation, sign call, files written.
// Reports "ms" per enrollment.
func BenchmarkEnrollOverTLS(b *testing.B) {
	ca, _ := newCA(b, newClock())
	gw := serve(b, ca, "tcp4", "127.0.0.1:0")
	dir := b.TempDir()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		b.StopTimer()
		tok, err := ca.Token("bench@corp.example", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		i++
		state := filepath.Join(dir, "c", string(rune('a'+i%26)))
		b.StartTimer()
		if _, err := enroll.Enroll(b.Context(), enroll.Options{Gateway: gw.addr, Token: tok, StateDir: state}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms")
}
