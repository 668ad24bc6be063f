package auth

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstmgw/dstm/tsp/sasl"
)

func TestHA1KnownVector(t *testing.T) {
	// RFC 2617 section 3.5: Mufasa / testrealm@host.com / "Circle Of Life".
	h := sasl.HA1("Mufasa", "testrealm@host.com", "Circle Of Life")
	if got := hex.EncodeToString(h[:]); got != "939e7578ed9e3c518a452acee763bce9" {
		t.Fatalf("HA1 = %s", got)
	}
}

func TestReadDigest(t *testing.T) {
	alice := "alice:corp:" + hexHA1("alice", "corp", "secret")
	bob := "bob:corp:" + hexHA1("bob", "corp", "hunter2")
	tests := []struct {
		name    string
		content string
		users   int
		realm   string
		err     string
	}{
		{"two users", alice + "\n" + bob + "\n", 2, "corp", ""},
		{"CRLF, comments, blank lines, no final newline", "# users\r\n\r\n" + alice + "\r\n   \n" + bob, 2, "corp", ""},
		{"uppercase hex", "carol:corp:" + strings.ToUpper(hexHA1("carol", "corp", "x")), 1, "corp", ""},
		{"realm with spaces", "dave:My Realm:" + hexHA1("dave", "My Realm", "x"), 1, "My Realm", ""},
		{"empty", "", 0, "", ""},
		{"two fields", alice + "\nbob:corp\n", 0, "", "f:2: want user:realm:md5hex, got 2 colon-separated fields"},
		{"four fields", "a:b:c:d", 0, "", "f:1: want user:realm:md5hex, got 4"},
		{"short hash", "bob:corp:abcd", 0, "", `f:1: digest for "bob": want 32 hex digits, got 4 characters`},
		{"non-hex hash", "bob:corp:" + strings.Repeat("zz", 16), 0, "", `f:1: digest for "bob": encoding/hex: invalid byte`},
		{"empty user", ":corp:" + hexHA1("", "corp", "x"), 0, "", "f:1: user name: auth: invalid identity: empty"},
		{"user with space", "b b:corp:" + hexHA1("b b", "corp", "x"), 0, "", "f:1: user name:"},
		{"empty realm", "bob::" + hexHA1("bob", "", "x"), 0, "", `f:1: realm ""`},
		{"control char in realm", "bob:co\x01rp:" + hexHA1("bob", "co\x01rp", "x"), 0, "", "f:1: realm"},
		{"duplicate user", alice + "\n\n" + alice, 0, "", `f:3: user "alice" already defined on line 1`},
		{"two realms", alice + "\nbob:other:" + hexHA1("bob", "other", "x"), 0, "", `f:2: realm "other" differs from realm "corp" of line 1`},
		{"line too long", strings.Repeat("x", 5000), 0, "", "f:1: bufio.Scanner: token too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ReadDigest(strings.NewReader(tc.content), "f")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != tc.users || s.Realm() != tc.realm {
				t.Errorf("got %d users in realm %q, want %d in %q", s.Len(), s.Realm(), tc.users, tc.realm)
			}
		})
	}
}

func hexHA1(user, realm, pass string) string {
	h := sasl.HA1(user, realm, pass)
	return hex.EncodeToString(h[:])
}

func TestDigestStoreVerify(t *testing.T) {
	var content []byte
	for _, u := range [][2]string{{"alice", "secret"}, {"bob", ""}} {
		var err error
		if content, err = AppendDigestLine(content, u[0], "corp", u[1]); err != nil {
			t.Fatal(err)
		}
	}
	s, err := ReadDigest(strings.NewReader(string(content)), "mem")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, pass string
		want       bool
	}{
		{"alice", "secret", true},
		{"alice", "Secret", false},
		{"alice", "", false},
		{"bob", "", true},
		{"bob", "secret", false},
		{"mallory", "secret", false},
		{"", "", false},
	}
	for _, tc := range tests {
		if got := s.VerifyPlain(tc.user, tc.pass); got != tc.want {
			t.Errorf("VerifyPlain(%q, %q) = %v, want %v", tc.user, tc.pass, got, tc.want)
		}
	}
	if h, ok := s.DigestHA1("alice", "corp"); !ok || h != sasl.HA1("alice", "corp", "secret") {
		t.Errorf("DigestHA1(alice, corp) = %x, %v", h, ok)
	}
	if _, ok := s.DigestHA1("alice", "other"); ok {
		t.Error("DigestHA1 with the wrong realm succeeded")
	}
	if _, ok := s.DigestHA1("mallory", "corp"); ok {
		t.Error("DigestHA1 of an unknown user succeeded")
	}
}

func TestAppendDigestLineRejects(t *testing.T) {
	tests := []struct{ user, realm string }{
		{"a:b", "corp"}, {"#a", "corp"}, {"", "corp"}, {"a b", "corp"}, {"alice", "co:rp"}, {"alice", ""}, {"alice", "x\ny"},
	}
	for _, tc := range tests {
		dst := []byte("keep")
		out, err := AppendDigestLine(dst, tc.user, tc.realm, "pw")
		if err == nil || string(out) != "keep" {
			t.Errorf("AppendDigestLine(%q, %q) = %q, %v; want an error and dst unchanged", tc.user, tc.realm, out, err)
		}
	}
}

func TestLoadDigestFile(t *testing.T) {
	dir := t.TempDir()
	line, _ := AppendDigestLine(nil, "alice", "corp", "secret")
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, line, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		mode os.FileMode
		want error
	}{
		{"owner only", 0o600, nil},
		{"group readable", 0o640, nil},
		{"world readable", 0o644, ErrInsecureFile},
		{"world writable", 0o602, ErrInsecureFile},
	}
	for _, tc := range tests {
		s, err := LoadDigestFile(write(tc.name, tc.mode))
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && !s.VerifyPlain("alice", "secret") {
			t.Errorf("%s: loaded store does not verify alice", tc.name)
		}
	}
	if _, err := LoadDigestFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestSetDigestUser(t *testing.T) {
	p := filepath.Join(t.TempDir(), "htdigest")
	steps := []struct {
		user, realm, pass string
		wantErr           string
	}{
		{"alice", "corp", "one", ""},
		{"bob", "corp", "two", ""},
		{"alice", "corp", "three", ""},
		{"carol", "other", "x", `file realm is "corp", not "other"`},
		{"ca:rol", "corp", "x", "contains ':'"},
	}
	for _, s := range steps {
		err := SetDigestUser(p, s.user, s.realm, s.pass)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("SetDigestUser(%q, %q): err = %v, want %q", s.user, s.realm, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	store, err := LoadDigestFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if store.Len() != 2 || !store.VerifyPlain("alice", "three") || store.VerifyPlain("alice", "one") || !store.VerifyPlain("bob", "two") {
		t.Errorf("after updates: %d users, alice/three=%v alice/one=%v bob/two=%v", store.Len(),
			store.VerifyPlain("alice", "three"), store.VerifyPlain("alice", "one"), store.VerifyPlain("bob", "two"))
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func BenchmarkVerifyPlain(b *testing.B) {
	line, _ := AppendDigestLine(nil, "alice", "corp", "secret")
	s, err := ReadDigest(strings.NewReader(string(line)), "mem")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !s.VerifyPlain("alice", "secret") {
			b.Fatal("refused")
		}
	}
}
