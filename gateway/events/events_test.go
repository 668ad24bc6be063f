package events

import (
	"fmt"
	"testing"
	"time"
)

func TestRing(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name        string
		perKind     int
		add         []Event
		n           int
		want        []string // Kind/Session, newest first
		wantDropped uint64
	}{
		{"empty", 4, nil, 0, nil, 0},
		{"newest first across kinds", 4, []Event{
			{Time: at(1), Kind: Granted, Session: "a"},
			{Time: at(3), Kind: Revoked, Session: "c"},
			{Time: at(2), Kind: Ended, Session: "b"},
		}, 0, []string{"revoked/c", "ended/b", "granted/a"}, 0},
		{"a full kind drops its oldest", 2, []Event{
			{Time: at(1), Kind: Granted, Session: "g1"},
			{Time: at(2), Kind: HandshakeFailed, Session: "f1"},
			{Time: at(3), Kind: HandshakeFailed, Session: "f2"},
			{Time: at(4), Kind: HandshakeFailed, Session: "f3"},
			{Time: at(5), Kind: HandshakeFailed, Session: "f4"},
		}, 0, []string{"handshake-failed/f4", "handshake-failed/f3", "granted/g1"}, 2},
		{"at most n", 4, []Event{
			{Time: at(1), Kind: Granted, Session: "a"},
			{Time: at(2), Kind: Granted, Session: "b"},
			{Time: at(3), Kind: Granted, Session: "c"},
		}, 2, []string{"granted/c", "granted/b"}, 0},
		{"wraps in order", 3, []Event{
			{Time: at(1), Kind: Ended, Session: "1"},
			{Time: at(2), Kind: Ended, Session: "2"},
			{Time: at(3), Kind: Ended, Session: "3"},
			{Time: at(4), Kind: Ended, Session: "4"},
			{Time: at(5), Kind: Ended, Session: "5"},
		}, 0, []string{"ended/5", "ended/4", "ended/3"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRing(tt.perKind)
			for _, e := range tt.add {
				r.Add(e)
			}
			var got []string
			for _, e := range r.List(tt.n) {
				got = append(got, fmt.Sprintf("%s/%s", e.Kind, e.Session))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("List = %v, want %v", got, tt.want)
			}
			if d := r.Dropped(); d != tt.wantDropped {
				t.Errorf("Dropped = %d, want %d", d, tt.wantDropped)
			}
		})
	}
}

func TestNilRing(t *testing.T) {
	var r *Ring
	r.Add(Event{Kind: Granted})
	if r.List(0) != nil || r.Dropped() != 0 {
		t.Fatal("a nil ring recorded something")
	}
}

func TestLastSeen(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLastSeen(2)
	l.Mark("1", t0)
	l.Mark("1", t0.Add(-time.Minute)) // older: kept as is
	l.Mark("2", t0.Add(time.Second))
	l.Mark("", t0) // no serial: nothing
	if got, ok := l.Get("1"); !ok || !got.Equal(t0) {
		t.Errorf("Get(1) = %v %v, want %v", got, ok, t0)
	}
	l.Mark("1", t0.Add(time.Hour))
	if got, _ := l.Get("1"); !got.Equal(t0.Add(time.Hour)) {
		t.Errorf("Get(1) after a later mark = %v", got)
	}
	l.Mark("3", t0) // full: "1", recorded first, goes
	if _, ok := l.Get("1"); ok {
		t.Error("serial 1 still remembered beyond the limit")
	}
	for _, s := range []string{"2", "3"} {
		if _, ok := l.Get(s); !ok {
			t.Errorf("serial %s forgotten", s)
		}
	}
	if _, ok := l.Get(""); ok {
		t.Error("empty serial remembered")
	}
}
