// Package fsutil holds the small file helpers shared by the CA and the
// enrollment client: private directories, atomic writes and PEM encoding.
package fsutil

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DirPerm is the mode of every state directory.
const DirPerm os.FileMode = 0o700

// KeyPerm is the mode of every file holding a private key.
const KeyPerm os.FileMode = 0o600

// EnsureDir creates dir with mode 0700 if needed and tightens the mode of an
// existing directory that is readable by group or others.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, DirPerm); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, DirPerm); err != nil {
			return fmt.Errorf("restrict state directory: %w", err)
		}
	}
	return nil
}

// WriteFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path, so readers see the old or the new
// content, never a mix. The directory is synced afterwards.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = writeAndSync(f, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func writeAndSync(f *os.File, data []byte, perm os.FileMode) error {
	_, werr := f.Write(data)
	cerr := f.Chmod(perm)
	serr := f.Sync()
	clerr := f.Close()
	return errors.Join(werr, cerr, serr, clerr)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// EncodePEM returns the PEM encoding of each DER block with the given type.
func EncodePEM(typ string, ders ...[]byte) []byte {
	var out []byte
	for _, der := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})...)
	}
	return out
}

// DecodePEM returns the DER bytes of every block of the given type in data.
// It fails if data holds no such block.
func DecodePEM(data []byte, typ string) ([][]byte, error) {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == typ {
			out = append(out, b.Bytes)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM block of type %q", typ)
	}
	return out, nil
}

// Exists reports whether path exists (any error other than "not exist"
// counts as existing, so callers refuse rather than overwrite).
func Exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, os.ErrNotExist)
}
