package tsp

import (
	"bytes"
	"testing"
)

func TestSplitterRestHandsOverTheStream(t *testing.T) {
	sp := NewSplitter(0)
	_, _ = sp.Write([]byte("VERSION=2.0.2\r\n\x00\x14E"))
	msg, ok, err := sp.Next()
	if err != nil || !ok || string(msg) != "VERSION=2.0.2\r\n" {
		t.Fatalf("Next = %q %v %v", msg, ok, err)
	}
	if rest := sp.Rest(); !bytes.Equal(rest, []byte("\x00\x14E")) {
		t.Fatalf("Rest = %q", rest)
	}
	if sp.Buffered() != 0 {
		t.Fatal("Rest did not empty the splitter")
	}
}

func TestClientDeferAcceptRefusedOutOfState(t *testing.T) {
	c, err := NewClient(ClientConfig{Transport: TransportTLS, Mechanism: "EXTERNAL", DeferAccept: true,
		Request: &Tunnel{Type: TypeV4AnyV6}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Accept(TypeV4TLSV6); err == nil {
		t.Fatal("Accept before any offer succeeded")
	}
	if ClientOffered.String() != "offered" {
		t.Fatalf("state name %q", ClientOffered.String())
	}
}
