package client

import (
	"testing"

	"github.com/dstmgw/dstm/internal/packet"
)

func TestEchoRequestIsValidICMP(t *testing.T) {
	b := echoRequest([4]byte{100, 64, 0, 2}, [4]byte{100, 64, 0, 1}, 7, 9)
	if err := packet.Check(b); err != nil {
		t.Fatal(err)
	}
	if !packet.HeaderChecksumValid(b) {
		t.Fatal("bad IPv4 header checksum")
	}
	if packet.Checksum(b[20:], 0) != 0 {
		t.Fatal("bad ICMP checksum")
	}
	if packet.Proto(b) != 1 || b[20] != 8 || packet.Src(b).String() != "100.64.0.2" || packet.Dst(b).String() != "100.64.0.1" {
		t.Fatalf("wrong fields: % x", b)
	}
}
