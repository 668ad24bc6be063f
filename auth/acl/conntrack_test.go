package acl

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
)

const lease = "100.64.0.2"

func webOnly(t *testing.T) *Set {
	t.Helper()
	s, err := Compile("policy.default.access", &Access{
		Outbound: []Rule{
			{To: pfx("10.0.0.0/8"), Proto: ProtoTCP, Ports: []PortRange{{80, 80}}},
			{To: pfx("10.0.0.0/8"), Proto: ProtoUDP, Ports: []PortRange{{53, 53}}},
			{To: pfx("10.0.0.0/8"), Proto: ProtoICMP},
		},
		Inbound: []Rule{{From: pfx("192.0.2.0/24"), Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDecideRepliesAndTimeouts(t *testing.T) {
	s := webOnly(t)
	var ev atomic.Uint64
	ct := NewTable(TrackConfig{}, &ev)
	now := time.Unix(1000, 0).UnixNano()
	dec := func(d Dir, f *Flow, at int64) Verdict { v, _ := s.Decide(d, f, ct, 1, at); return v }

	// Inbound before anything went out: denied.
	if v := dec(Inbound, flow(ipTCP, "10.1.1.1", lease, 80, 40000), now); v != Deny {
		t.Fatalf("unsolicited inbound: %v", v)
	}
	if v := dec(Outbound, flow(ipTCP, lease, "10.1.1.1", 40000, 80), now); v != AllowRule {
		t.Fatalf("allowed outbound: %v", v)
	}
	if v := dec(Inbound, flow(ipTCP, "10.1.1.1", lease, 80, 40000), now); v != AllowReply {
		t.Fatalf("reply: %v", v)
	}
	// Another port of the same host is no reply.
	if v := dec(Inbound, flow(ipTCP, "10.1.1.1", lease, 80, 40001), now); v != Deny {
		t.Fatalf("other client port: %v", v)
	}
	// UDP replies live 3 minutes after the last packet.
	dec(Outbound, flow(ipUDP, lease, "10.2.2.2", 5353, 53), now)
	at := now + int64(DefaultUDP) - 1
	if v := dec(Inbound, flow(ipUDP, "10.2.2.2", lease, 53, 5353), at); v != AllowReply {
		t.Fatalf("udp reply before timeout: %v", v)
	}
	if v := dec(Inbound, flow(ipUDP, "10.2.2.2", lease, 53, 5353), at+int64(DefaultUDP)); v != Deny {
		t.Fatalf("udp reply after timeout: %v", v)
	}
	// ICMP echo: the reply passes, an echo request with the same id does not.
	dec(Outbound, flow(ipICMP, lease, "10.3.3.3", icmpEcho, 77), now)
	if v := dec(Inbound, flow(ipICMP, "10.3.3.3", lease, icmpEcho, 77), now); v != Deny {
		t.Fatalf("inbound echo request: %v", v)
	}
	if v := dec(Inbound, flow(ipICMP, "10.3.3.3", lease, icmpEchoReply, 77), now); v != AllowReply {
		t.Fatalf("echo reply: %v", v)
	}
	if v := dec(Inbound, flow(ipICMP, "10.3.3.3", lease, icmpEchoReply, 78), now); v != Deny {
		t.Fatalf("echo reply, other id: %v", v)
	}
	// Inbound rule: the client's answer is a reply.
	if v := dec(Inbound, flow(ipTCP, "192.0.2.9", lease, 50000, 22), now); v != AllowRule {
		t.Fatalf("inbound ssh: %v", v)
	}
	if v := dec(Outbound, flow(ipTCP, lease, "192.0.2.9", 22, 50000), now); v != AllowReply {
		t.Fatalf("ssh answer: %v", v)
	}
	// A FIN shortens the flow's life.
	fin := &Flow{}
	Classify(pkt(ipTCP, lease, "10.1.1.1", 40000, 80, tcpFIN), fin)
	dec(Outbound, fin, now)
	if v := dec(Inbound, flow(ipTCP, "10.1.1.1", lease, 80, 40000), now+int64(DefaultTCPClosing)+1); v != Deny {
		t.Fatalf("reply after FIN + closing timeout: %v", v)
	}
	if ev.Load() != 0 {
		t.Fatalf("evictions: %d", ev.Load())
	}
}

func TestDecideNewRulesRecheckFlows(t *testing.T) {
	wide, err := Compile("a", &Access{Outbound: []Rule{{To: pfx("0.0.0.0/0")}}})
	if err != nil {
		t.Fatal(err)
	}
	narrow := webOnly(t)
	ct := NewTable(TrackConfig{}, nil)
	now := int64(1)
	out := flow(ipTCP, lease, "10.1.1.1", 40000, 8080)
	back := flow(ipTCP, "10.1.1.1", lease, 8080, 40000)
	web := flow(ipTCP, lease, "10.1.1.1", 40001, 80)
	webBack := flow(ipTCP, "10.1.1.1", lease, 80, 40001)
	wide.Decide(Outbound, out, ct, 1, now)
	wide.Decide(Outbound, web, ct, 1, now)
	if v, _ := wide.Decide(Inbound, back, ct, 1, now); v != AllowReply {
		t.Fatalf("reply under wide rules: %v", v)
	}
	// Generation 2 narrows: the 8080 flow's replies stop, port 80's go on.
	if v, _ := narrow.Decide(Inbound, back, ct, 2, now); v != Deny {
		t.Fatalf("reply of a flow the new rules deny: %v", v)
	}
	if v, _ := narrow.Decide(Outbound, out, ct, 2, now); v != Deny {
		t.Fatalf("outbound the new rules deny: %v", v)
	}
	if v, _ := narrow.Decide(Inbound, webBack, ct, 2, now); v != AllowReply {
		t.Fatalf("reply of a flow the new rules allow: %v", v)
	}
}

func TestDecideRelatedICMPAndFragments(t *testing.T) {
	s := webOnly(t)
	ct := NewTable(TrackConfig{}, nil)
	orig := pkt(ipTCP, lease, "10.1.1.1", 40000, 80, tcpSYN)
	s.Decide(Outbound, flow(ipTCP, lease, "10.1.1.1", 40000, 80), ct, 1, 1)
	// Fragmentation needed from a router outside every rule, quoting the SYN.
	icmp := pkt(ipICMP, "203.0.113.1", lease, 3, 0, 0)
	icmp = append(icmp[:28], orig[:28]...)
	binary.BigEndian.PutUint16(icmp[2:], uint16(len(icmp)))
	icmp[21] = 4
	f := &Flow{}
	if !Classify(icmp, f) || !f.Quoted {
		t.Fatalf("not classified as a quoting ICMP error: %+v", f)
	}
	if v, _ := s.Decide(Inbound, f, ct, 1, 1); v != AllowRelated {
		t.Fatalf("ICMP error about a tracked flow: %v", v)
	}
	other := append([]byte(nil), icmp...)
	other[28+22+1] = 81 // quoted destination port 81: not tracked
	if Classify(other, f); f.Quoted {
		if v, _ := s.Decide(Inbound, f, ct, 1, 1); v != Deny {
			t.Fatalf("ICMP error about an untracked flow: %v", v)
		}
	}
	frag := pkt(ipUDP, "203.0.113.1", lease, 1, 2, 0)
	frag[7] = 100 // offset 800
	if !Classify(frag, f) || !f.Fragment {
		t.Fatal("fragment not classified")
	}
	if v, _ := s.Decide(Inbound, f, ct, 1, 1); v != AllowFragment {
		t.Fatalf("non-first fragment: %v", v)
	}
}

func TestClassifyRefuses(t *testing.T) {
	f := &Flow{}
	tiny := pkt(ipTCP, lease, "10.1.1.1", 1, 2, 0)[:20+12]
	tiny[3] = 32
	if Classify(tiny, f) {
		t.Error("TCP without flags classified")
	}
	overlap := pkt(ipTCP, lease, "10.1.1.1", 1, 2, 0)
	overlap[7] = 1 // offset 8 bytes: RFC 1858
	if Classify(overlap, f) {
		t.Error("TCP fragment at offset 8 classified")
	}
	shortICMP := pkt(ipICMP, lease, "10.1.1.1", 8, 1, 0)[:24]
	shortICMP[3] = 24
	if Classify(shortICMP, f) {
		t.Error("4-byte ICMP classified")
	}
}

func TestTableGrowsThenEvicts(t *testing.T) {
	var ev atomic.Uint64
	ct := NewTable(TrackConfig{MaxFlows: 64}, &ev)
	s, err := Compile("a", &Access{Outbound: []Rule{{To: pfx("0.0.0.0/0")}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1, 0)
	f := &Flow{}
	for i := range 64 {
		Classify(pkt(ipUDP, lease, "10.0.0.1", uint16(1000+i), 53, 0), f)
		s.Decide(Outbound, f, ct, 1, now.UnixNano())
	}
	if len(ct.buckets) > 16 {
		t.Fatalf("%d buckets for 64 flows", len(ct.buckets))
	}
	n := ct.Len(now)
	if n < 48 { // a full bucket evicts before the table is full
		t.Fatalf("only %d of 64 flows kept", n)
	}
	if uint64(64-n) != ev.Load() {
		t.Fatalf("%d flows lost, %d evictions counted", 64-n, ev.Load())
	}
	for i := range 1000 {
		Classify(pkt(ipUDP, lease, "10.0.0.2", uint16(1000+i), 53, 0), f)
		s.Decide(Outbound, f, ct, 1, now.UnixNano())
	}
	if n := ct.Len(now); n > 64 {
		t.Fatalf("%d flows in a table of 64", n)
	}
	if ev.Load() < 1000-64 {
		t.Fatalf("evictions %d", ev.Load())
	}
	// Expired flows make room without evictions.
	before := ev.Load()
	later := now.Add(DefaultUDP + time.Second)
	for i := range 64 {
		Classify(pkt(ipUDP, lease, "10.0.0.3", uint16(1000+i), 53, 0), f)
		s.Decide(Outbound, f, ct, 1, later.UnixNano())
	}
	if ev.Load() > before+16 {
		t.Fatalf("expired slots not reused: %d evictions", ev.Load()-before)
	}
}

func TestDecideNoAllocs(t *testing.T) {
	s := webOnly(t)
	ct := NewTable(TrackConfig{}, nil)
	out, back := flow(ipTCP, lease, "10.1.1.1", 40000, 80), flow(ipTCP, "10.1.1.1", lease, 80, 40000)
	s.Decide(Outbound, out, ct, 1, 1) // first use allocates the table
	if n := testing.AllocsPerRun(1000, func() {
		s.Decide(Outbound, out, ct, 1, 2)
		s.Decide(Inbound, back, ct, 1, 2)
		s.Decide(Inbound, flow2, ct, 1, 2)
	}); n != 0 {
		t.Fatalf("Decide allocates %v times", n)
	}
}

var flow2 = &Flow{Proto: ipTCP, Src: [4]byte{8, 8, 8, 8}, DstPort: 9}
