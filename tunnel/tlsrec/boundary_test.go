package tlsrec

import (
	"bytes"
	"testing"
)

// TestBoundaryConn: with reads of any size, no read crosses the end of a TLS record (a
// zero-length one included); after PassThrough one read takes what is there.
func TestBoundaryConn(t *testing.T) {
	recs := [][]byte{
		{23, 3, 3, 0, 3, 'a', 'b', 'c'},
		{23, 3, 3, 0, 0},
		{22, 3, 3, 0, 1, 'x'},
	}
	wire := bytes.Join(recs, nil)
	trailer := []byte("stream records")
	for _, step := range []int{1, 2, 4, 100} {
		bc := NewBoundaryConn(&streamReader{r: bytes.NewReader(append(bytes.Clone(wire), trailer...)), step: step})
		var ends []int // offsets where records end
		off := 0
		for _, r := range recs {
			off += len(r)
			ends = append(ends, off)
		}
		pos := 0
		buf := make([]byte, 100)
		for pos < len(wire) {
			n, err := bc.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ends {
				if pos < e && pos+n > e {
					t.Fatalf("step %d: a read of %d bytes at %d crosses the record end at %d", step, n, pos, e)
				}
			}
			pos += n
		}
		if !bc.atBoundary() {
			t.Fatalf("step %d: not at a boundary after the last record", step)
		}
		bc.PassThrough()
		n, _ := bc.Read(buf)
		if want := min(step, len(trailer)); n != want {
			t.Fatalf("step %d: after PassThrough a read took %d bytes, want %d", step, n, want)
		}
	}
}
