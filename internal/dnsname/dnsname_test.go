package dnsname

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"corp.example", true},
		{"~corp.example", true},
		{"~.", true},
		{"example", true},
		{"_msdcs.corp.example", true},
		{"a-b.c1.EXAMPLE", true},
		{long + "." + long + "." + long + "." + strings.Repeat("b", 61), true}, // 253
		{long + "." + long + "." + long + "." + strings.Repeat("b", 62), false},
		{strings.Repeat("a", 64) + ".example", false},
		{".", false},
		{"", false},
		{"~", false},
		{"~~corp", false},
		{"corp.example.", false},
		{".corp.example", false},
		{"corp..example", false},
		{"-corp.example", false},
		{"corp-.example", false},
		{"corp example", false},
		{"corp.exämple", false},
		{"corp/example", false},
		{"<corp>", false},
	} {
		err := Check(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestSplit(t *testing.T) {
	if n, r := Split("~corp.example"); n != "corp.example" || !r {
		t.Fatalf("got %q %v", n, r)
	}
	if n, r := Split("corp.example"); n != "corp.example" || r {
		t.Fatalf("got %q %v", n, r)
	}
}

// FuzzCheck: an accepted entry is at most MaxLen bytes of the allowed characters, so it is
// safe in XML text and in a resolv.conf line.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"corp.example", "~.", "~corp.example", "a..b", "corp.example.", "x y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Check(s) != nil {
			return
		}
		if len(s) > MaxLen {
			t.Fatalf("%d bytes accepted", len(s))
		}
		name, _ := Split(s)
		if strings.ContainsAny(name, "~ \t\r\n<>&\"'#;") {
			t.Fatalf("%q accepted", s)
		}
	})
}
