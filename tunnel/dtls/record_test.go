package dtls

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// dtlsRecord builds a DTLS record; cid non-nil makes it a tls12_cid record.
func dtlsRecord(typ byte, epoch uint16, cid, body []byte) []byte {
	b := []byte{typ, 0xfe, 0xfd}
	b = binary.BigEndian.AppendUint16(b, epoch)
	b = append(b, 0, 0, 0, 0, 0, 1)
	b = append(b, cid...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func TestInspectDatagram(t *testing.T) {
	cid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	hello := dtlsRecord(22, 0, nil, []byte{1, 0, 0, 0})
	tests := []struct {
		name    string
		b       []byte
		hasCID  bool
		isHello bool
	}{
		{"client hello", hello, false, true},
		{"client hello epoch 1", dtlsRecord(22, 1, nil, []byte{1}), false, false},
		{"server hello", dtlsRecord(22, 0, nil, []byte{2}), false, false},
		{"empty handshake", dtlsRecord(22, 0, nil, nil), false, false},
		{"cid record", dtlsRecord(25, 1, cid, []byte{0xAA, 0xBB}), true, false},
		{"hello then cid", append(bytes.Clone(hello), dtlsRecord(25, 1, cid, []byte{9})...), true, true},
		{"ccs then cid", append(dtlsRecord(20, 0, nil, []byte{1}), dtlsRecord(25, 1, cid, nil)...), true, false},
		{"truncated cid header", dtlsRecord(25, 1, cid, nil)[:15], false, false},
		{"cid length past end", dtlsRecord(25, 1, cid, make([]byte, 10))[:25], false, false},
		{"truncated hello", hello[:len(hello)-1], false, false},
		{"app data", dtlsRecord(23, 1, nil, []byte{1, 2, 3}), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := inspectDatagram(tt.b)
			if info.hasCID != tt.hasCID || info.clientHello != tt.isHello {
				t.Fatalf("got %+v", info)
			}
			if info.hasCID && !bytes.Equal(info.cid[:], cid) {
				t.Fatalf("cid %x", info.cid)
			}
		})
	}
}

func TestRebindConn(t *testing.T) {
	a, b, peer := listenUDP(t), listenUDP(t), listenUDP(t)
	defer peer.Close()
	rc := NewRebindConn(a)
	defer rc.Close()
	to := peer.LocalAddr()

	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 16)
		n, _, err := rc.ReadFrom(buf) // blocked on a while Rebind runs
		if err != nil {
			got <- nil
			return
		}
		got <- buf[:n]
	}()
	if err := rc.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	if err := rc.Rebind(b); err != nil {
		t.Fatal(err)
	}
	if rc.LocalAddr().String() != b.LocalAddr().String() {
		t.Fatalf("LocalAddr %v, want %v", rc.LocalAddr(), b.LocalAddr())
	}
	if _, err := rc.WriteTo([]byte("hi"), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = peer.SetReadDeadline(time.Now().Add(testTimeout))
	_, from, err := peer.ReadFrom(buf)
	if err != nil || from.String() != b.LocalAddr().String() {
		t.Fatalf("peer read from %v, %v", from, err)
	}
	if _, err := peer.WriteTo([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if string(p) != "back" {
			t.Fatalf("ReadFrom got %q", p)
		}
	case <-time.After(testTimeout):
		t.Fatal("read did not continue on the new socket")
	}
	if _, err := a.WriteTo([]byte("x"), to); err == nil {
		t.Fatal("old socket not closed by Rebind")
	}
	_ = rc.Close()
	if _, _, err := rc.ReadFrom(buf); err != net.ErrClosed {
		t.Fatalf("ReadFrom after Close = %v", err)
	}
	if err := rc.Rebind(listenUDP(t)); err != net.ErrClosed {
		t.Fatalf("Rebind after Close = %v", err)
	}
}
