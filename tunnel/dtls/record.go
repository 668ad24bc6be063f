package dtls

import "encoding/binary"

// DTLS record layer constants (RFC 6347 §4.1, RFC 9146 §4).
const (
	// CIDLen is the length of every connection ID the server issues, which
	// lets the demultiplexer find the CID in a record header without state.
	CIDLen = 8

	headerLen    = 13 // type(1) version(2) epoch(2) seq(6) length(2)
	cidHeaderLen = 11 + CIDLen + 2

	contentHandshake = 22
	contentCID       = 25 // tls12_cid
	handshakeHello   = 1  // client_hello
)

type datagramInfo struct {
	cid         [CIDLen]byte
	hasCID      bool // some record is a tls12_cid record
	clientHello bool // the first record is an epoch-0 ClientHello
}

// inspectDatagram walks the records of a DTLS datagram without allocating.
// It stops at the first malformed or truncated record; what it found
// before that still counts (the DTLS engine discards the rest).
func inspectDatagram(b []byte) datagramInfo {
	var info datagramInfo
	for first := true; len(b) > 0; first = false {
		n, ok := recordLen(b)
		if !ok {
			break
		}
		rec := b[:n]
		b = b[n:]
		switch {
		case rec[0] == contentCID && !info.hasCID:
			copy(info.cid[:], rec[11:11+CIDLen])
			info.hasCID = true
		case first && isClientHello(rec):
			info.clientHello = true
		}
	}
	return info
}

func recordLen(b []byte) (int, bool) {
	hl := headerLen
	if b[0] == contentCID {
		hl = cidHeaderLen
	}
	if len(b) < hl {
		return 0, false
	}
	n := hl + int(binary.BigEndian.Uint16(b[hl-2:hl]))
	if n > len(b) {
		return 0, false
	}
	return n, true
}

// isClientHello reports whether a complete plaintext record carries (the
// first fragment of) a ClientHello in epoch 0.
func isClientHello(rec []byte) bool {
	return rec[0] == contentHandshake &&
		binary.BigEndian.Uint16(rec[3:5]) == 0 &&
		len(rec) > headerLen && rec[headerLen] == handshakeHello
}
