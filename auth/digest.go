package auth

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// maxDigestLine bounds one line of a digest file; a valid line is at most
// 255 + 1 + 255 + 1 + 32 bytes.
const maxDigestLine = 1024

// ErrInsecureFile is returned (wrapped) by LoadDigestFile when the file can
// be read or written by users other than its owner and group.
var ErrInsecureFile = errors.New("auth: digest file is accessible to other users")

// DigestStore holds the HA1 digests of one realm from an htdigest file. It
// is immutable; reload by loading a new store.
type DigestStore struct {
	realm string
	users map[string][16]byte
}

// LoadDigestFile reads an htdigest file whose entries share one realm. A
// file accessible to "other" users is refused with ErrInsecureFile.
func LoadDigestFile(path string) (*DigestStore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: digest file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth: digest file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o, want no permissions for others (chmod o-rwx)", ErrInsecureFile, path, perm)
	}
	return ReadDigest(f, path)
}

// ReadDigest parses htdigest content from r; name is used in error messages.
func ReadDigest(r io.Reader, name string) (*DigestStore, error) {
	s := &DigestStore{users: make(map[string][16]byte)}
	firstLine := make(map[string]int)
	realmLine := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxDigestLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseDigestLine(line)
		if err != nil {
			return nil, fmt.Errorf("auth: %s:%d: %w", name, n, err)
		}
		if realmLine == 0 {
			s.realm, realmLine = e.realm, n
		} else if e.realm != s.realm {
			return nil, fmt.Errorf("auth: %s:%d: realm %q differs from realm %q of line %d; use one realm per file", name, n, e.realm, s.realm, realmLine)
		}
		if first, dup := firstLine[e.user]; dup {
			return nil, fmt.Errorf("auth: %s:%d: user %q already defined on line %d", name, n, e.user, first)
		}
		firstLine[e.user] = n
		s.users[e.user] = e.ha1
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: %s:%d: %w", name, n+1, err)
	}
	return s, nil
}

type digestEntry struct {
	user, realm string
	ha1         [16]byte
}

func parseDigestLine(line string) (digestEntry, error) {
	parts := strings.Split(line, ":")
	if len(parts) != 3 {
		return digestEntry{}, fmt.Errorf("want user:realm:md5hex, got %d colon-separated fields", len(parts))
	}
	e := digestEntry{user: parts[0], realm: parts[1]}
	if err := validDigestUser(e.user); err != nil {
		return digestEntry{}, err
	}
	if err := validRealm(e.realm); err != nil {
		return digestEntry{}, err
	}
	h := parts[2]
	if len(h) != 2*len(e.ha1) {
		return digestEntry{}, fmt.Errorf("digest for %q: want %d hex digits, got %d characters", e.user, 2*len(e.ha1), len(h))
	}
	if _, err := hex.Decode(e.ha1[:], []byte(h)); err != nil {
		return digestEntry{}, fmt.Errorf("digest for %q: %w", e.user, err)
	}
	return e, nil
}

func validDigestUser(user string) error {
	if err := ValidIdentity(user); err != nil {
		return fmt.Errorf("user name: %w", err)
	}
	if strings.Contains(user, ":") {
		return fmt.Errorf("%w: user name %q contains ':'", ErrBadIdentity, user)
	}
	if strings.HasPrefix(user, "#") {
		return fmt.Errorf("%w: user name %q starts with '#', which marks a comment line", ErrBadIdentity, user)
	}
	return nil
}

// validRealm allows printable UTF-8 including spaces (Apache realms often
// have them), but no ':' and no control characters.
func validRealm(realm string) error {
	if realm == "" || len(realm) > MaxIdentityLen || !utf8.ValidString(realm) {
		return fmt.Errorf("realm %q: want 1-%d bytes of UTF-8", realm, MaxIdentityLen)
	}
	for _, r := range realm {
		if r == ':' || !unicode.IsPrint(r) {
			return fmt.Errorf("realm %q: ':' and non-printable characters are not allowed", realm)
		}
	}
	return nil
}

// Realm returns the realm of the store's entries ("" for an empty store).
func (s *DigestStore) Realm() string { return s.realm }

// Len returns the number of users.
func (s *DigestStore) Len() int { return len(s.users) }

// VerifyPlain reports whether pass is user's password, in constant time: an
// unknown user costs the same as a known one.
func (s *DigestStore) VerifyPlain(user, pass string) bool {
	want, ok := s.users[user]
	got := sasl.HA1(user, s.realm, pass)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok
}

// DigestHA1 returns user's HA1 for DIGEST-MD5 if user exists in realm.
func (s *DigestStore) DigestHA1(user, realm string) ([16]byte, bool) {
	if realm != s.realm {
		return [16]byte{}, false
	}
	h, ok := s.users[user]
	return h, ok
}

// AppendDigestLine appends the htdigest line for user, realm and pass,
// newline included, to dst.
func AppendDigestLine(dst []byte, user, realm, pass string) ([]byte, error) {
	if err := validDigestUser(user); err != nil {
		return dst, err
	}
	if err := validRealm(realm); err != nil {
		return dst, err
	}
	h := sasl.HA1(user, realm, pass)
	dst = append(dst, user...)
	dst = append(dst, ':')
	dst = append(dst, realm...)
	dst = append(dst, ':')
	dst = hex.AppendEncode(dst, h[:])
	return append(dst, '\n'), nil
}

// SetDigestUser sets user's password in the htdigest file at path, which it
// creates if missing or replaces atomically, with mode 0600. The file's realm
// must be realm.
func SetDigestUser(path, user, realm, pass string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("auth: digest file: %w", err)
	}
	st, err := ReadDigest(bytes.NewReader(old), path)
	if err != nil {
		return err
	}
	if st.Len() > 0 && st.realm != realm {
		return fmt.Errorf("auth: %s: file realm is %q, not %q", path, st.realm, realm)
	}
	line, err := AppendDigestLine(nil, user, realm, pass)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return writeFileAtomic(path, replaceUserLine(old, user, line))
}

func replaceUserLine(content []byte, user string, line []byte) []byte {
	var out []byte
	replaced := false
	for l := range bytes.Lines(content) {
		if bytes.HasPrefix(l, []byte(user+":")) && !replaced {
			out, replaced = append(out, line...), true
			continue
		}
		out = append(out, l...)
	}
	if !replaced {
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, line...)
	}
	return out
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("auth: digest file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("auth: digest file: %w", err)
	}
	return nil
}
