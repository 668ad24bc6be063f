package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureDirTightensMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDir(dir); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != DirPerm {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), KeyPerm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read %q %v", b, err)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != KeyPerm {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestDecodePEM(t *testing.T) {
	p := append(EncodePEM("A", []byte{1}), EncodePEM("B", []byte{2}, []byte{3})...)
	if got, err := DecodePEM(p, "B"); err != nil || len(got) != 2 || got[1][0] != 3 {
		t.Errorf("DecodePEM B: %v %v", got, err)
	}
	if _, err := DecodePEM(p, "C"); err == nil {
		t.Error("DecodePEM found a missing type")
	}
}
