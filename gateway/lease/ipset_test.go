package lease

import (
	"math/rand/v2"
	"sort"
	"testing"
)

func TestSubtract(t *testing.T) {
	for _, tc := range []struct {
		a, b, want []span
	}{
		{[]span{{0, 10}}, nil, []span{{0, 10}}},
		{[]span{{0, 10}}, []span{{0, 0}, {10, 10}}, []span{{1, 9}}},
		{[]span{{0, 10}, {20, 30}}, []span{{5, 25}}, []span{{0, 4}, {26, 30}}},
		{[]span{{0, 10}}, []span{{0, 10}}, nil},
		{[]span{{0, ^uint32(0)}}, []span{{^uint32(0), ^uint32(0)}}, []span{{0, ^uint32(0) - 1}}},
		{[]span{{5, 6}}, []span{{0, 1}, {3, 5}, {8, 9}}, []span{{6, 6}}},
	} {
		got := subtract(tc.a, tc.b)
		if len(got) != len(tc.want) {
			t.Fatalf("subtract(%v,%v) = %v want %v", tc.a, tc.b, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("subtract(%v,%v) = %v want %v", tc.a, tc.b, got, tc.want)
			}
		}
	}
}

// TestIPSetDifferential compares the interval set with a map under random
// adds, removes and cursor takes.
func TestIPSetDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newIPSet([]span{{100, 200}, {300, 310}})
	ref := map[uint32]bool{}
	for v := uint32(100); v <= 200; v++ {
		ref[v] = true
	}
	for v := uint32(300); v <= 310; v++ {
		ref[v] = true
	}
	cursor := uint32(0)
	for i := range 20000 {
		v := uint32(90 + rng.IntN(230))
		switch rng.IntN(3) {
		case 0:
			if got := s.add(v); got == ref[v] {
				t.Fatalf("op %d add(%d) = %v", i, v, got)
			}
			ref[v] = true
		case 1:
			if got := s.remove(v); got != ref[v] {
				t.Fatalf("op %d remove(%d) = %v", i, v, got)
			}
			delete(ref, v)
		default:
			got, ok := s.nextFrom(cursor)
			want, wok := refNext(ref, cursor)
			if ok != wok || got != want {
				t.Fatalf("op %d nextFrom(%d) = %d %v want %d %v", i, cursor, got, ok, want, wok)
			}
			if ok {
				s.remove(got)
				delete(ref, got)
				cursor = got + 1
			}
		}
		if s.len() != uint64(len(ref)) {
			t.Fatalf("op %d len %d want %d", i, s.len(), len(ref))
		}
		for j := 1; j < len(s.spans); j++ {
			if s.spans[j].lo <= s.spans[j-1].hi+1 || s.spans[j].lo > s.spans[j].hi {
				t.Fatalf("op %d spans not normalized: %v", i, s.spans)
			}
		}
	}
}

func refNext(ref map[uint32]bool, cursor uint32) (uint32, bool) {
	var keys []uint32
	for k := range ref {
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return 0, false
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		if k >= cursor {
			return k, true
		}
	}
	return keys[0], true
}
