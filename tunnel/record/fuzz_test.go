package record

import (
	"bytes"
	"testing"
)

// FuzzOpen feeds arbitrary datagrams to an Opener: none may panic, and none but a record
// sealed with the Opener's secret may open. Seeds: testdata/fuzz/FuzzOpen.
func FuzzOpen(f *testing.F) {
	s, _ := pair(f, AES256GCM)
	for _, n := range []int{20, 100} {
		rec, _ := s.Seal(nil, ipv4(n))
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, o := pair(t, AES256GCM)
		in := bytes.Clone(b)
		pkt, c, err := o.Open(b)
		if err != nil {
			return
		}
		// It opened: it must be what a Sealer with that counter makes of pkt.
		s, _ := pair(t, AES256GCM)
		s.counter.Store(c)
		again, err := s.Seal(nil, pkt)
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("a record opened that the Sealer does not make: %x", in)
		}
	})
}
