// Package atomicfile writes a file so that a crash never leaves it half-written: the bytes go to
// a temporary file in the same directory, which is synced and renamed over the path.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes b to path with mode perm, atomically: a reader sees the old file or the new one,
// never part of it. The error is the failing step's, for the caller to wrap with what it wrote.
func Write(path string, b []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
