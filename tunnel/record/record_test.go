package record

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

func testSecrets() Secrets {
	var exported [ExporterLen]byte
	for i := range exported {
		exported[i] = byte(i)
	}
	s, err := SplitSecrets(exported[:])
	if err != nil {
		panic(err)
	}
	return s
}

func pair(t testing.TB, suite Suite) (*Sealer, *Opener) {
	t.Helper()
	sec := testSecrets()
	s, err := NewSealer(suite, sec.ClientToServer, 0x01020304)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(suite, sec.ClientToServer, 0x01020304)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

func ipv4(n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	for i := 20; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	for _, suite := range []Suite{AES256GCM, ChaCha20Poly1305} {
		t.Run(suite.String(), func(t *testing.T) {
			s, o := pair(t, suite)
			for i, n := range []int{20, 576, 1400, 1500, 9000} {
				pkt := ipv4(n)
				rec, err := s.Seal(nil, pkt)
				if err != nil {
					t.Fatal(err)
				}
				if len(rec) != n+Overhead {
					t.Fatalf("record of %d bytes for %d", len(rec), n)
				}
				if sid, ok := Session(rec); !ok || sid != 0x01020304 {
					t.Fatalf("Session: %x %v", sid, ok)
				}
				got, c, err := o.Open(rec)
				if err != nil || c != uint64(i) || !bytes.Equal(got, pkt) {
					t.Fatalf("Open: %v counter %d equal %v", err, c, bytes.Equal(got, pkt))
				}
			}
		})
	}
}

// Every way a record can be bad is dropped with its own reason, and leaves the Opener able
// to open the next good record.
func TestBadRecords(t *testing.T) {
	sec := testSecrets()
	good := func(s *Sealer) []byte {
		rec, err := s.Seal(nil, ipv4(100))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	tests := []struct {
		name   string
		mangle func(s *Sealer, o *Opener) []byte
		want   error
	}{
		{"empty", func(*Sealer, *Opener) []byte { return nil }, ErrShort},
		{"truncated", func(s *Sealer, _ *Opener) []byte { return good(s)[:Overhead-1] }, ErrShort},
		{"truncated payload", func(s *Sealer, _ *Opener) []byte { return good(s)[:Overhead+10] }, ErrAuth},
		{"not a record", func(s *Sealer, _ *Opener) []byte { r := good(s); r[0] = 23; return r }, ErrNotRecord},
		{"other session", func(s *Sealer, _ *Opener) []byte { r := good(s); r[4] ^= 1; return r }, ErrSession},
		{"flipped ciphertext", func(s *Sealer, _ *Opener) []byte { r := good(s); r[HeaderLen+3] ^= 1; return r }, ErrAuth},
		{"flipped tag", func(s *Sealer, _ *Opener) []byte { r := good(s); r[len(r)-1] ^= 1; return r }, ErrAuth},
		{"counter changed", func(s *Sealer, _ *Opener) []byte { r := good(s); r[12] ^= 1; return r }, ErrAuth},
		{"wrong direction's key", func(_ *Sealer, _ *Opener) []byte {
			other, _ := NewSealer(AES256GCM, sec.ServerToClient, 0x01020304)
			return good(other)
		}, ErrAuth},
		{"replayed", func(s *Sealer, o *Opener) []byte {
			r := good(s)
			if _, _, err := o.Open(bytes.Clone(r)); err != nil {
				t.Fatal(err)
			}
			return r
		}, ErrReplay},
		{"behind the window", func(s *Sealer, o *Opener) []byte {
			old := good(s)
			s.counter.Add(10000)
			if _, _, err := o.Open(good(s)); err != nil {
				t.Fatal(err)
			}
			return old
		}, ErrReplay},
		{"an epoch left behind", func(s *Sealer, o *Opener) []byte {
			s.counter.Store(3 * EpochPackets) // the receiver jumps to epoch 3
			if _, _, err := o.Open(good(s)); err != nil {
				t.Fatal(err)
			}
			old, _ := NewSealer(AES256GCM, sec.ClientToServer, 0x01020304)
			old.counter.Store(EpochPackets) // epoch 1
			return good(old)
		}, ErrEpoch},
		{"counter at the limit", func(_ *Sealer, _ *Opener) []byte {
			r := good(func() *Sealer { s, _ := NewSealer(AES256GCM, sec.ClientToServer, 0x01020304); return s }())
			for i := 5; i < 13; i++ {
				r[i] = 0xff
			}
			return r
		}, ErrReplay},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, o := pair(t, AES256GCM)
			rec := tc.mangle(s, o)
			if _, _, err := o.Open(rec); !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			if _, _, err := o.Open(good(s)); err != nil {
				t.Fatalf("the next good record: %v", err)
			}
		})
	}
}

// Out of order within the window is accepted once each.
func TestReorder(t *testing.T) {
	s, o := pair(t, AES256GCM)
	var recs [][]byte
	for range 100 {
		r, _ := s.Seal(nil, ipv4(40))
		recs = append(recs, r)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		if _, c, err := o.Open(bytes.Clone(recs[i])); err != nil || c != uint64(i) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for i := range recs {
		if _, _, err := o.Open(recs[i]); !errors.Is(err, ErrReplay) {
			t.Fatalf("record %d again: %v", i, err)
		}
	}
}

// Keys change at every EpochPackets packets; the packets of the epoch before still open
// after the first of the next one.
func TestEpochs(t *testing.T) {
	s, o := pair(t, ChaCha20Poly1305)
	s.counter.Store(EpochPackets - 2)
	var recs [][]byte
	for range 4 {
		r, err := s.Seal(nil, ipv4(60))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if bytes.Equal(recs[1][HeaderLen:], recs[2][HeaderLen:]) {
		t.Fatal("the same ciphertext")
	}
	for _, i := range []int{2, 0, 3, 1} {
		if _, c, err := o.Open(recs[i]); err != nil || c != EpochPackets-2+uint64(i) {
			t.Fatalf("record %d: counter %d, %v", i, c, err)
		}
	}
	// A jump of epochs (packets lost in a row) is followed; what is then two epochs behind is
	// not.
	s2, _ := pair(t, ChaCha20Poly1305)
	s2.counter.Store(5 * EpochPackets)
	r, _ := s2.Seal(nil, ipv4(60))
	if _, c, err := o.Open(r); err != nil || c != 5*EpochPackets {
		t.Fatalf("four epochs ahead: %d %v", c, err)
	}
	s2.counter.Store(5*EpochPackets - 3) // epoch 4, in the window
	r, _ = s2.Seal(nil, ipv4(60))
	if _, _, err := o.Open(r); err != nil {
		t.Fatalf("the epoch before the new newest: %v", err)
	}
	s2.counter.Store(3*EpochPackets + 5)
	r, _ = s2.Seal(nil, ipv4(60))
	if _, _, err := o.Open(r); !errors.Is(err, ErrEpoch) {
		t.Fatalf("two epochs behind: %v", err)
	}
}

func TestExhausted(t *testing.T) {
	s, _ := pair(t, AES256GCM)
	s.counter.Store(maxCounter)
	if _, err := s.Seal(nil, ipv4(20)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Seal at the limit: %v", err)
	}
}

// TestVectors checks the records in testdata/vectors.txt: secrets as from testSecrets, session
// 0x01020304, the packet ipv4(n). Run with -update to rewrite them after a deliberate change
// of the format (which needs a new version: see docs/protocol.md).
func TestVectors(t *testing.T) {
	const path = "testdata/vectors.txt"
	type vector struct {
		suite   Suite
		dir     string
		counter uint64
		n       int
	}
	vectors := []vector{
		{AES256GCM, "c2s", 0, 20}, {AES256GCM, "c2s", 1, 64}, {AES256GCM, "s2c", EpochPackets, 40},
		{ChaCha20Poly1305, "c2s", 0, 20}, {ChaCha20Poly1305, "s2c", 3*EpochPackets + 7, 40},
	}
	sec := testSecrets()
	var out strings.Builder
	out.WriteString("# suite direction counter packet-length record (hex); see record_test.go\n")
	for _, v := range vectors {
		secret := sec.ClientToServer
		if v.dir == "s2c" {
			secret = sec.ServerToClient
		}
		s, err := NewSealer(v.suite, secret, 0x01020304)
		if err != nil {
			t.Fatal(err)
		}
		s.counter.Store(v.counter)
		rec, err := s.Seal(nil, ipv4(v.n))
		if err != nil {
			t.Fatal(err)
		}
		o, _ := NewOpener(v.suite, secret, 0x01020304)
		o.newest = v.counter >> epochShift
		if _, _, err := o.Open(bytes.Clone(rec)); err != nil {
			t.Fatalf("%+v: %v", v, err)
		}
		out.WriteString(v.suite.String() + " " + v.dir + " " + strconv.FormatUint(v.counter, 10) + " " + strconv.Itoa(v.n) + " " + hex.EncodeToString(rec) + "\n")
	}
	if os.Getenv("UPDATE_VECTORS") != "" {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("records differ from %s:\n%s", path, out.String())
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, suite := range []Suite{AES256GCM, ChaCha20Poly1305} {
		b.Run(suite.String(), func(b *testing.B) {
			s, _ := pair(b, suite)
			pkt := ipv4(1400)
			buf := make([]byte, 0, 1500)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Seal(buf[:0], pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, suite := range []Suite{AES256GCM, ChaCha20Poly1305} {
		b.Run(suite.String(), func(b *testing.B) {
			s, o := pair(b, suite)
			pkt := ipv4(1400)
			recs := make([][]byte, 1024)
			for i := range recs {
				recs[i], _ = s.Seal(nil, pkt)
			}
			buf := make([]byte, 1500)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == len(recs) { // fresh counters for the replay window, not timed
					b.StopTimer()
					for j := range recs {
						recs[j], _ = s.Seal(recs[j][:0], pkt)
					}
					b.StartTimer()
					i = 0
				}
				n := copy(buf, recs[i])
				if _, _, err := o.Open(buf[:n]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// TestStreamOpener: a stream's records open only in the order sealed; a replayed, skipped or
// forged one is refused and leaves the next expected counter where it was.
func TestStreamOpener(t *testing.T) {
	sec := testSecrets()
	s, _ := NewSealer(ChaCha20Poly1305, sec.ServerToClient, 0)
	o, err := NewStreamOpener(ChaCha20Poly1305, sec.ServerToClient, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := make([][]byte, 4)
	for i := range recs {
		recs[i], _ = s.Seal(nil, ipv4(20+i))
	}
	forged := bytes.Clone(recs[1])
	forged[len(forged)-1] ^= 1
	for i, step := range []struct {
		rec  []byte
		want error
	}{
		{recs[0], nil},
		{recs[0], ErrOrder}, // replayed
		{recs[2], ErrOrder}, // skips record 1
		{forged, ErrAuth},   // record 1, tampered
		{recs[1], nil},      // the real record 1 still opens
		{recs[2], nil},
	} {
		if _, _, err := o.Open(bytes.Clone(step.rec)); !errors.Is(err, step.want) {
			t.Fatalf("step %d: %v, want %v", i, err, step.want)
		}
	}
}
