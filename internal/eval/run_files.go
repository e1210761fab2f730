package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
)

// writeJSONAtomic writes v as indented JSON.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}

// removeTempFiles deletes, under a run folder, the temporary files a
// killed atomic write leaves (atomicfile.IsTemp).
func removeTempFiles(dir string) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && atomicfile.IsTemp(d.Name()) {
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
