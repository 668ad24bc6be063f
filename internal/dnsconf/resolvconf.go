package dnsconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dstmgw/dstm/internal/dnsname"
	"github.com/dstmgw/dstm/internal/fsutil"
)

// DefaultResolvConf is the resolver configuration file of the host.
const DefaultResolvConf = "/etc/resolv.conf"

// SavedFile is the name, in the state directory, of the saved original of resolv.conf.
const SavedFile = "resolv.conf.saved"

// maxNameservers is how many nameserver lines the resolver reads (glibc's MAXNS).
const maxNameservers = 3

// ResolvConf manages a resolv.conf file: the first Set saves the original (its bytes and
// mode, the target of a symlink, or its absence) to SavedFile under StateDir, then writes
// ours atomically; Restore puts the original back exactly and removes the saved copy. The
// saved copy outlives a crash: Restore at the next start puts the original back. Not safe
// for concurrent use.
type ResolvConf struct {
	Path     string // the file managed (DefaultResolvConf)
	StateDir string // where the original is saved
}

var _ Manager = (*ResolvConf)(nil)

// Method implements Manager.
func (r *ResolvConf) Method() string { return MethodResolvConf }

// original is what was at Path before the first Set.
type original struct {
	Path   string      `json:"path"`
	Kind   string      `json:"kind"` // file, symlink or absent
	Data   []byte      `json:"data,omitempty"`
	Mode   fs.FileMode `json:"mode,omitempty"`
	Target string      `json:"target,omitempty"`
}

// Kinds of original.
const (
	kindFile    = "file"
	kindSymlink = "symlink"
	kindAbsent  = "absent"
)

func (r *ResolvConf) savedPath() string { return filepath.Join(r.StateDir, SavedFile) }

// Set writes c as the resolv.conf, saving the original first unless it is saved already.
func (r *ResolvConf) Set(c Config) error {
	if len(c.Servers) == 0 {
		return errors.New("resolv.conf: no DNS servers to write")
	}
	if _, err := os.Stat(r.savedPath()); errors.Is(err, fs.ErrNotExist) {
		if err := r.save(); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("resolv.conf: saved original: %w", err)
	}
	data := Render(c)
	if cur, err := os.ReadFile(r.Path); err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Lstat(r.Path); err == nil && fi.Mode().IsRegular() {
			return nil // ours already (a reconnect with the same settings)
		}
	}
	return replaceFile(r.Path, data, 0o644)
}

// save records the original of Path under StateDir.
func (r *ResolvConf) save() error {
	o := original{Path: r.Path}
	fi, err := os.Lstat(r.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		o.Kind = kindAbsent
	case err != nil:
		return fmt.Errorf("resolv.conf: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		o.Kind = kindSymlink
		if o.Target, err = os.Readlink(r.Path); err != nil {
			return fmt.Errorf("resolv.conf: %w", err)
		}
	case fi.Mode().IsRegular():
		o.Kind, o.Mode = kindFile, fi.Mode().Perm()
		if o.Data, err = os.ReadFile(r.Path); err != nil {
			return fmt.Errorf("resolv.conf: %w", err)
		}
	default:
		return fmt.Errorf("resolv.conf: %s is neither a file nor a symlink", r.Path)
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := fsutil.EnsureDir(r.StateDir); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(r.savedPath(), b, fsutil.KeyPerm); err != nil {
		return fmt.Errorf("resolv.conf: save the original: %w", err)
	}
	return nil
}

// Restore puts the saved original back and removes the saved copy; without one it does
// nothing. It reports whether there was one.
func (r *ResolvConf) Restore() error {
	_, err := r.RestoreSaved()
	return err
}

// RestoreSaved is Restore, reporting whether an original was saved (at the start of `up`:
// one left by a run that crashed).
func (r *ResolvConf) RestoreSaved() (bool, error) {
	b, err := os.ReadFile(r.savedPath())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("resolv.conf: saved original: %w", err)
	}
	var o original
	if err := json.Unmarshal(b, &o); err != nil {
		return true, fmt.Errorf("resolv.conf: saved original %s: %w", r.savedPath(), err)
	}
	if o.Path != r.Path {
		return true, fmt.Errorf("resolv.conf: the saved original is of %s, not %s", o.Path, r.Path)
	}
	if err := putBack(o); err != nil {
		return true, err
	}
	if err := os.Remove(r.savedPath()); err != nil {
		return true, fmt.Errorf("resolv.conf: %w", err)
	}
	return true, nil
}

func putBack(o original) error {
	var err error
	switch o.Kind {
	case kindFile:
		err = replaceFile(o.Path, o.Data, o.Mode)
	case kindSymlink:
		err = replaceSymlink(o.Path, o.Target)
	case kindAbsent:
		if err = os.Remove(o.Path); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	default:
		err = fmt.Errorf("unknown kind %q", o.Kind)
	}
	if err != nil {
		return fmt.Errorf("resolv.conf: restore %s: %w", o.Path, err)
	}
	return nil
}

// replaceFile writes data to path atomically (a rename). A path that is a mount point (a
// bind-mounted resolv.conf, as in containers and `ip netns exec`) cannot be renamed over:
// it is rewritten in place.
func replaceFile(path string, data []byte, mode fs.FileMode) error {
	err := fsutil.WriteFileAtomic(path, data, mode)
	if errors.Is(err, syscall.EBUSY) {
		return writeInPlace(path, data, mode)
	}
	return err
}

func writeInPlace(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	return errors.Join(werr, f.Chmod(mode), f.Sync(), f.Close())
}

// replaceSymlink makes path a symlink to target, atomically.
func replaceSymlink(path, target string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".dstm-link")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// Render is the resolv.conf for c: its first three servers (the resolver reads no more) and
// its search domains. Routing-only domains cannot be said in resolv.conf: every name goes to
// the tunnel's servers.
func Render(c Config) []byte {
	var b strings.Builder
	b.WriteString("# Written by dstm-client up: the DNS servers of the tunnel.\n")
	b.WriteString("# The original is put back when the tunnel ends.\n")
	for i, s := range c.Servers {
		if i == maxNameservers {
			break
		}
		fmt.Fprintf(&b, "nameserver %s\n", s.WithZone(""))
	}
	var search []string
	for _, d := range c.Domains {
		if name, routeOnly := dnsname.Split(d); !routeOnly && dnsname.Check(d) == nil {
			search = append(search, name)
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return []byte(b.String())
}
