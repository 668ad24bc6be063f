package dtls

import "encoding/binary"

// The plaintext hello messages of the cookie exchange (RFC 6347 §4.2.1, §4.2.2, §4.3.2),
// read and written in place, without allocating.
const (
	hsHeaderLen = 12 // msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)

	handshakeHelloVerify = 3 // hello_verify_request

	randomLen    = 32
	maxSessionID = 32

	versionDTLS10 = 0xfeff
	versionDTLS12 = 0xfefd

	// helloBodyAt is where a handshake message's body starts in a datagram whose first
	// record carries it.
	helloBodyAt = headerLen + hsHeaderLen

	cookieMACLen = 16
	// cookieLen is the length of every cookie the gateway issues (cookie.go): the generation
	// of its secret (one byte) and a MAC. Its client recognises the gateway's
	// HelloVerifyRequest by it (parseHelloVerify).
	cookieLen = 1 + cookieMACLen

	// helloVerifyRecordLen is the length of the gateway's HelloVerifyRequest record.
	helloVerifyRecordLen = helloBodyAt + 3 + cookieLen
)

// clientHello locates the fields of a ClientHello in a datagram. The datagram's first record
// is a plaintext epoch-0 handshake record that holds exactly one ClientHello, unfragmented;
// more records may follow it.
type clientHello struct {
	recSeq   uint64 // the record's sequence number (48 bits)
	msgSeq   uint16 // message_seq
	cookieAt int    // offset of the cookie's length byte in the datagram
	cookie   []byte
	// head and tail are what RFC 6347 §4.2.1 requires a client to repeat after a
	// HelloVerifyRequest: client_version, random and session_id (head), cipher_suites and
	// compression_methods (tail). The cookie lies between them; extensions follow.
	head, tail []byte
}

// parseClientHello reports whether b starts with a complete, unfragmented ClientHello as
// clientHello describes, with well-formed length fields throughout the message.
func parseClientHello(b []byte) (clientHello, bool) {
	var h clientHello
	if len(b) < helloBodyAt || b[0] != contentHandshake || be16(b[3:5]) != 0 {
		return h, false
	}
	if v := be16(b[1:3]); v != versionDTLS10 && v != versionDTLS12 {
		return h, false
	}
	recEnd := headerLen + int(be16(b[11:13]))
	if recEnd > len(b) || recEnd < helloBodyAt || b[headerLen] != handshakeHello {
		return h, false
	}
	hs := b[headerLen:recEnd]
	msgLen := be24(hs[1:4])
	if be24(hs[6:9]) != 0 || be24(hs[9:12]) != msgLen || hsHeaderLen+msgLen != len(hs) {
		return h, false
	}
	cookieAt, ok := h.parseBody(hs[hsHeaderLen:])
	if !ok {
		return clientHello{}, false
	}
	h.recSeq = be48(b[5:11])
	h.msgSeq = be16(hs[4:6])
	h.cookieAt = helloBodyAt + cookieAt
	return h, true
}

// parseBody walks a ClientHello body and returns the offset of the cookie's length byte.
func (h *clientHello) parseBody(body []byte) (int, bool) {
	p := 2 + randomLen // client_version, random
	if len(body) <= p {
		return 0, false
	}
	sid := int(body[p])
	p++
	if sid > maxSessionID || p+sid >= len(body) { // the cookie's length byte follows
		return 0, false
	}
	p += sid
	cookieAt := p
	h.head = body[:p]
	p++
	if p+int(body[cookieAt]) > len(body) {
		return 0, false
	}
	h.cookie = body[p : p+int(body[cookieAt])]
	p += len(h.cookie)
	tailAt := p
	if p+2 > len(body) {
		return 0, false
	}
	suites := int(be16(body[p:]))
	p += 2
	if suites < 2 || suites%2 != 0 || p+suites >= len(body) { // compression_methods follow
		return 0, false
	}
	p += suites
	methods := int(body[p])
	p++
	if methods < 1 || p+methods > len(body) {
		return 0, false
	}
	p += methods
	h.tail = body[tailAt:p]
	// Extensions, if any, are one block whose length covers the rest of the body.
	if p < len(body) && (p+2 > len(body) || p+2+int(be16(body[p:])) != len(body)) {
		return 0, false
	}
	return cookieAt, true
}

// appendWithCookie appends b to dst with the ClientHello's cookie replaced by cookie (an
// empty one removes it), its record, message and fragment lengths adjusted; the records after
// the first are copied unchanged. It reports false, appending nothing, when the record would
// exceed its 16-bit length or the cookie its 8-bit one.
func appendWithCookie(dst, b []byte, h clientHello, cookie []byte) ([]byte, bool) {
	delta := len(cookie) - len(h.cookie)
	recLen := int(be16(b[11:13])) + delta
	if len(cookie) > 255 || recLen > 0xffff {
		return dst, false
	}
	start := len(dst)
	dst = append(dst, b[:h.cookieAt]...)
	dst = append(dst, byte(len(cookie)))
	dst = append(dst, cookie...)
	dst = append(dst, b[h.cookieAt+1+len(h.cookie):]...)
	out := dst[start:]
	binary.BigEndian.PutUint16(out[11:13], uint16(recLen))
	msgLen := recLen - hsHeaderLen
	put24(out[headerLen+1:], msgLen) // length
	put24(out[headerLen+9:], msgLen) // fragment_length
	return dst, true
}

// appendHelloVerify appends the HelloVerifyRequest that answers h: one record that echoes
// the ClientHello's record sequence number and message_seq (RFC 6347 §4.2.1), and says DTLS
// 1.0 in the record and as server_version, as §4.2.1 recommends.
func appendHelloVerify(dst []byte, h clientHello, cookie []byte) []byte {
	msgLen := 3 + len(cookie)
	dst = append(dst, contentHandshake, 0xfe, 0xff, 0, 0)
	dst = append48(dst, h.recSeq)
	dst = binary.BigEndian.AppendUint16(dst, uint16(hsHeaderLen+msgLen))
	dst = append(dst, handshakeHelloVerify)
	dst = append24(dst, msgLen)
	dst = binary.BigEndian.AppendUint16(dst, h.msgSeq)
	dst = append24(dst, 0)
	dst = append24(dst, msgLen)
	dst = append(dst, 0xfe, 0xff, byte(len(cookie)))
	return append(dst, cookie...)
}

// parseHelloVerify returns the cookie of a datagram that is one of this server's
// HelloVerifyRequests: a single epoch-0 record as appendHelloVerify writes it, with a cookie
// of cookieLen bytes. A HelloVerifyRequest of any other form (pion's own says DTLS 1.2 and
// carries 20 bytes) is not one.
func parseHelloVerify(b []byte) ([]byte, bool) {
	const msgLen = 3 + cookieLen
	if len(b) != helloVerifyRecordLen || b[0] != contentHandshake ||
		be16(b[1:3]) != versionDTLS10 || be16(b[3:5]) != 0 ||
		int(be16(b[11:13])) != hsHeaderLen+msgLen || b[headerLen] != handshakeHelloVerify {
		return nil, false
	}
	hs := b[headerLen:]
	if be24(hs[1:4]) != msgLen || be24(hs[6:9]) != 0 || be24(hs[9:12]) != msgLen ||
		be16(hs[12:14]) != versionDTLS10 || hs[14] != cookieLen {
		return nil, false
	}
	return hs[15:], true
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

func be24(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

func be48(b []byte) uint64 {
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(binary.BigEndian.Uint32(b[2:6]))
}

func put24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

func append24(b []byte, v int) []byte { return append(b, byte(v>>16), byte(v>>8), byte(v)) }

func append48(b []byte, v uint64) []byte {
	return append(b, byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
