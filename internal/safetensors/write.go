package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Entry is one tensor to write.
type Entry struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte // raw little-endian elements, len = numel * DType.Size()
}

// Write writes entries (in any order; they are stored sorted by name) and
// metadata to w. Every entry is validated before anything is written.
func Write(w io.Writer, entries []Entry, metadata map[string]string) error {
	prefix, sorted, err := encode(entries, metadata)
	if err != nil {
		return err
	}
	return emit(w, prefix, sorted)
}

// WriteFile writes a safetensors file at path. It writes to a temporary
// file in the same directory, syncs it and renames it over path, so an
// interrupted write never leaves a partial file under the real name; the
// temporary file is removed on any error.
func WriteFile(path string, entries []Entry, metadata map[string]string) error {
	if err := writeFile(path, entries, metadata); err != nil {
		return fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return nil
}

func writeFile(path string, entries []Entry, metadata map[string]string) (err error) {
	// Validate first so that bad input never creates a file at all.
	prefix, sorted, err := encode(entries, metadata)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return withoutPath(err)
	}
	defer func() {
		if err != nil {
			f.Close() // may already be closed; the write error is what matters
			os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file private (0600); a checkpoint should be as
	// readable as one written with os.Create.
	if err := f.Chmod(0o644); err != nil {
		return withoutPath(err)
	}
	if err := emit(f, prefix, sorted); err != nil {
		return withoutPath(err)
	}
	if err := f.Sync(); err != nil {
		return withoutPath(err)
	}
	if err := f.Close(); err != nil {
		return withoutPath(err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename durable across a crash. It is best effort: the
// file is already complete under its name, and some systems cannot sync a
// directory at all.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}

func emit(w io.Writer, prefix []byte, sorted []Entry) error {
	if _, err := w.Write(prefix); err != nil {
		return err
	}
	for _, e := range sorted {
		if _, err := w.Write(e.Data); err != nil {
			return err
		}
	}
	return nil
}

// encode validates the entries and builds the length field and header
// JSON. It returns the entries in the order their data must follow.
func encode(entries []Entry, metadata map[string]string) (prefix []byte, sorted []Entry, err error) {
	sorted = slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b Entry) int { return cmp.Compare(a.Name, b.Name) })
	for i, e := range sorted {
		if err := validate(e); err != nil {
			return nil, nil, err
		}
		if i > 0 && sorted[i-1].Name == e.Name {
			return nil, nil, fmt.Errorf("duplicate name %q", e.Name)
		}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("bad metadata: %q: not valid UTF-8", k)
		}
	}

	var b bytes.Buffer
	b.Write(make([]byte, 8)) // the length field, filled in below
	enc := json.NewEncoder(&b)
	// Keep names like "a<b" readable in the header; HTML escaping buys
	// nothing in a binary file.
	enc.SetEscapeHTML(false)
	str := func(s string) {
		enc.Encode(s)           // cannot fail for a valid UTF-8 string
		b.Truncate(b.Len() - 1) // Encode appends a newline
	}

	b.WriteByte('{')
	sep := ""
	if len(metadata) > 0 {
		str(metadataKey)
		b.WriteString(":{")
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				b.WriteByte(',')
			}
			str(k)
			b.WriteByte(':')
			str(metadata[k])
		}
		b.WriteByte('}')
		sep = ","
	}
	var offset int64
	for _, e := range sorted {
		b.WriteString(sep)
		sep = ","
		str(e.Name)
		b.WriteString(`:{"dtype":`)
		str(string(e.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range e.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		end := offset + int64(len(e.Data))
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	b.WriteByte('}')
	// The reference writer pads so the data starts 8-byte aligned, which
	// lets readers view a mapped file as typed slices.
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	prefix = b.Bytes()
	n := len(prefix) - 8
	if n > maxHeaderLen {
		return nil, nil, fmt.Errorf("header length too large: %d bytes, limit is %d", n, maxHeaderLen)
	}
	binary.LittleEndian.PutUint64(prefix, uint64(n))
	return prefix, sorted, nil
}

func validate(e Entry) error {
	switch {
	case e.Name == "":
		return errors.New("tensor with an empty name")
	case e.Name == metadataKey:
		return fmt.Errorf("tensor name %q is reserved for metadata", e.Name)
	case !utf8.ValidString(e.Name):
		return fmt.Errorf("tensor %q: name is not valid UTF-8", e.Name)
	}
	need, err := tensorBytes(e.Name, e.DType, e.Shape)
	if err != nil {
		return err
	}
	if int64(len(e.Data)) != need {
		return fmt.Errorf("tensor %q: size mismatch: %d bytes of data, shape %v of %s needs %d",
			e.Name, len(e.Data), e.Shape, e.DType, need)
	}
	return nil
}
