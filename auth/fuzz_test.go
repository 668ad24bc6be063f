package auth

import (
	"encoding/hex"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Seeds live in testdata/fuzz/FuzzParseDigestLine.
func FuzzParseDigestLine(f *testing.F) {
	f.Add("alice:corp:" + hexHA1("alice", "corp", "secret"))
	f.Fuzz(func(t *testing.T, line string) {
		e, err := parseDigestLine(line)
		if err != nil {
			return
		}
		if err := ValidIdentity(e.user); err != nil || strings.Contains(e.user, ":") {
			t.Fatalf("accepted user %q: %v", e.user, err)
		}
		if validRealm(e.realm) != nil {
			t.Fatalf("accepted realm %q", e.realm)
		}
		i := strings.LastIndexByte(line, ':')
		canonical := line[:i+1] + strings.ToLower(line[i+1:])
		if got := e.user + ":" + e.realm + ":" + hex.EncodeToString(e.ha1[:]); got != canonical {
			t.Fatalf("re-encoded %q as %q", line, got)
		}
		s, err := ReadDigest(strings.NewReader(line+"\n"), "fuzz")
		if err != nil || s.Len() != 1 {
			t.Fatalf("a line parseDigestLine accepts is refused by ReadDigest: %v", err)
		}
	})
}

// Seeds live in testdata/fuzz/FuzzValidIdentity.
func FuzzValidIdentity(f *testing.F) {
	f.Add("alice@corp")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidIdentity(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxIdentityLen || !utf8.ValidString(s) {
			t.Fatalf("accepted %q (%d bytes)", s, len(s))
		}
		for _, r := range s {
			if r <= ' ' || r == 0x7f || unicode.IsSpace(r) || unicode.IsControl(r) {
				t.Fatalf("accepted %q with rune %U", s, r)
			}
		}
		if id, err := SASLIdentity(MechPlain, s); err != nil || id.Name != s {
			t.Fatalf("SASLIdentity disagrees with ValidIdentity on %q: %v", s, err)
		}
	})
}
