// Package atomicfile writes outputs so that a crash or a kill leaves the
// old file or the new one, never half of either: the data goes to a synced
// temporary file in the same folder, which is renamed into place.
package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
)

// WriteFile writes data to path atomically, readable by all (0644) like
// any other output, and syncs the folder so the rename is durable. The
// temporary file is ".NAME.*.tmp" beside path (see IsTemp).
func WriteFile(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file private.
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the entries of dir (files renamed into it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// IsTemp reports whether a file name is one of WriteFile's temporaries,
// which a killed write leaves behind.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp")
}
