package packet

import (
	"encoding/binary"
	"testing"
)

func TestAppendTCPReset(t *testing.T) {
	syn := buildTCP(addrA, addrB, tcpFlagSYN, mssOpt(1460), nil)
	ack := buildTCP(addrA, addrB, tcpACK|0x08, nil, []byte("GET / HTTP/1.1\r\n"))
	binary.BigEndian.PutUint32(ack[HeaderLen+8:], 777)
	setTCPChecksum(ack)
	for _, tt := range []struct {
		name        string
		orig        []byte
		flags       byte
		seq, ackNum uint32
	}{
		{"to a SYN", syn, tcpRST | tcpACK, 0, 12346},
		{"to a segment with ACK", ack, tcpRST, 777, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := AppendTCPReset(make([]byte, 0, MaxTCPResetLen), tt.orig)
			if err != nil {
				t.Fatal(err)
			}
			if Check(out) != nil || !HeaderChecksumValid(out) || !tcpChecksumValid(out) || len(out) != MaxTCPResetLen {
				t.Fatal("bad reset packet")
			}
			if Src(out) != addrB || Dst(out) != addrA {
				t.Fatalf("addresses %v -> %v", Src(out), Dst(out))
			}
			tcp := out[HeaderLen:]
			if binary.BigEndian.Uint16(tcp) != 80 || binary.BigEndian.Uint16(tcp[2:]) != 40000 {
				t.Fatal("ports not swapped")
			}
			if tcp[13] != tt.flags || binary.BigEndian.Uint32(tcp[4:]) != tt.seq || binary.BigEndian.Uint32(tcp[8:]) != tt.ackNum {
				t.Fatalf("flags %#x seq %d ack %d", tcp[13], binary.BigEndian.Uint32(tcp[4:]), binary.BigEndian.Uint32(tcp[8:]))
			}
		})
	}
	rst := buildTCP(addrA, addrB, tcpRST, nil, nil)
	udp := buildIPv4(addrA, addrB, ProtoUDP, false, make([]byte, 8))
	for _, p := range [][]byte{rst, udp} {
		if _, err := AppendTCPReset(nil, p); err != ErrNotEligible {
			t.Errorf("reset to %x: %v", p, err)
		}
	}
	buf := make([]byte, 0, MaxTCPResetLen)
	if n := testing.AllocsPerRun(100, func() { _, _ = AppendTCPReset(buf, syn) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
