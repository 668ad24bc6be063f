package dtls

import (
	"bytes"
	"testing"
)

// FuzzInspectDatagram checks the demultiplexer's record walker on
// arbitrary input: it never panics, a CID it reports is the CID field of a
// complete tls12_cid record in the input, and a ClientHello it reports is
// a complete epoch-0 handshake record at the start.
func FuzzInspectDatagram(f *testing.F) {
	cid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	f.Add(record(22, 0, nil, []byte{1, 0, 0, 0}))
	f.Add(record(25, 1, cid, []byte{0xAA}))
	f.Add(append(record(20, 0, nil, []byte{1}), record(25, 1, cid, nil)...))
	f.Add([]byte{25, 0xfe, 0xfd, 0, 1})
	f.Add([]byte{22})
	f.Fuzz(func(t *testing.T, b []byte) {
		info := inspectDatagram(b)
		if info.clientHello {
			if len(b) <= headerLen || b[0] != contentHandshake || b[3] != 0 || b[4] != 0 || b[headerLen] != handshakeHello {
				t.Fatalf("false ClientHello in %x", b)
			}
		}
		if info.hasCID && !containsCIDRecord(b, info.cid[:]) {
			t.Fatalf("CID %x not from a complete record in %x", info.cid, b)
		}
	})
}

// containsCIDRecord walks records the slow way and looks for cid.
func containsCIDRecord(b, cid []byte) bool {
	for len(b) > 0 {
		hl := headerLen
		if b[0] == contentCID {
			hl = cidHeaderLen
		}
		if len(b) < hl {
			return false
		}
		n := hl + int(b[hl-2])<<8 + int(b[hl-1])
		if n > len(b) {
			return false
		}
		if b[0] == contentCID && bytes.Equal(b[11:11+CIDLen], cid) {
			return true
		}
		b = b[n:]
	}
	return false
}
