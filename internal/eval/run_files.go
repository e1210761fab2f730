package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// writeFileAtomic writes data to path through a synced temporary file in
// the same folder renamed into place: a kill leaves the old file or the
// new one, never half of either.
func writeFileAtomic(path string, data []byte) (err error) {
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
	// CreateTemp makes the file private; outputs should read like any other.
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
	return syncDir(filepath.Dir(path))
}

// writeJSONAtomic writes v as indented JSON.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// syncDir makes the entries of dir (files renamed into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeTempFiles deletes, under a run folder, the temporary files a
// killed atomic write leaves (".NAME.*.tmp", as writeFileAtomic and
// pipeline.WritePNG name them).
func removeTempFiles(dir string) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasPrefix(d.Name(), ".") && strings.HasSuffix(d.Name(), ".tmp") {
			os.Remove(path)
		}
		return nil
	})
}

// checkSettings writes the run's settings to path on its first start and,
// on a resume, refuses settings that differ from the recorded ones, naming
// the first that does.
func checkSettings(path string, settings map[string]string) error {
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return writeJSONAtomic(path, settings)
	}
	if err != nil {
		return err
	}
	var old map[string]string
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&old); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	keys := slices.Sorted(maps.Keys(settings))
	for k := range old {
		if _, ok := settings[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if old[k] != settings[k] {
			return fmt.Errorf("%s: this folder holds a run with %s=%q, this run has %s=%q: resume with the same settings or give another --out",
				filepath.Dir(path), k, old[k], k, settings[k])
		}
	}
	return nil
}
