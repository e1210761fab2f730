package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"unicode/utf8"
)

// maxHeaderLen is the reference implementation's limit. Anything larger is
// corruption or an attack, and we would have to allocate it to find out.
const maxHeaderLen = 100_000_000

const metadataKey = "__metadata__"

var errNoHeaderLen = errors.New("truncated: no header length")

// Parse reads the header from the first bytes of a file whose total size
// is fileSize. prefix holds at least the first 8+N bytes, where N is the
// header length; it may hold the whole file.
//
// Errors are one line and do not name the file: callers add the path.
func Parse(prefix []byte, fileSize int64) (*Header, error) {
	n, err := headerLen(prefix, fileSize)
	if err != nil {
		return nil, err
	}
	if int64(len(prefix)) < 8+n {
		return nil, fmt.Errorf("truncated: header needs %d bytes, have %d", 8+n, len(prefix))
	}
	h := &Header{DataStart: 8 + n}
	if err := h.decode(prefix[8 : 8+n]); err != nil {
		return nil, err
	}
	dataLen := fileSize - h.DataStart
	for i := range h.Tensors {
		if err := checkTensor(&h.Tensors[i], dataLen); err != nil {
			return nil, err
		}
	}
	if err := checkOverlap(h.Tensors); err != nil {
		return nil, err
	}
	for i := range h.Tensors {
		h.Tensors[i].Begin += h.DataStart
		h.Tensors[i].End += h.DataStart
	}
	sortByName(h.Tensors)
	return h, nil
}

// ReadHeader reads and parses the header of a file of the given size
// through r, reading only the header.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, errNoHeaderLen
	}
	var lenField [8]byte
	if err := readAt(r, lenField[:], 0); err != nil {
		return nil, err
	}
	// Validate the length before allocating a buffer of that size.
	n, err := headerLen(lenField[:], size)
	if err != nil {
		return nil, err
	}
	prefix := make([]byte, 8+n)
	copy(prefix, lenField[:])
	if err := readAt(r, prefix[8:], 8); err != nil {
		return nil, err
	}
	return Parse(prefix, size)
}

// ReadFileHeader reads the header of the named file. Its errors name the
// file: "safetensors: <path>: ...".
func ReadFileHeader(path string) (*Header, error) {
	h, err := readFileHeader(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return h, nil
}

func readFileHeader(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, withoutPath(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, withoutPath(err)
	}
	return ReadHeader(f, st.Size())
}

// withoutPath drops the path an os error carries, since our wrapper
// already names the file; errors.Is still sees the underlying cause.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	// ReaderAt may report io.EOF alongside a complete read at the end of
	// the file; only a short read is a failure.
	if n == len(p) {
		return nil
	}
	if err == io.EOF || err == nil {
		return fmt.Errorf("truncated: file ends inside the header at byte %d", off+int64(n))
	}
	return fmt.Errorf("reading header: %w", err)
}

// headerLen decodes the header length and checks it against the file
// before anyone allocates or slices with it.
func headerLen(prefix []byte, fileSize int64) (int64, error) {
	if len(prefix) < 8 || fileSize < 8 {
		return 0, errNoHeaderLen
	}
	n := binary.LittleEndian.Uint64(prefix)
	if n > maxHeaderLen {
		return 0, fmt.Errorf("header length too large: %d bytes, limit is %d", n, maxHeaderLen)
	}
	if n > uint64(fileSize-8) {
		return 0, fmt.Errorf("header length too large: %d bytes, but only %d bytes follow the length field", n, fileSize-8)
	}
	return int64(n), nil
}

// decode fills h from the header JSON. Tensor offsets are left relative to
// the data buffer and unchecked; see check.
//
// It walks tokens instead of unmarshalling into a map because a map would
// silently keep the last of two entries with the same name, and the
// dropped entry's bytes might be what a different reader uses.
func (h *Header) decode(js []byte) error {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD, making
	// names that cannot round-trip.
	if !utf8.Valid(js) {
		return errors.New("bad JSON header: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return badJSON(err)
	}
	if tok != json.Delim('{') {
		return errors.New("bad JSON header: not an object")
	}
	seen := make(map[string]bool)
	for dec.More() {
		name, err := stringToken(dec)
		if err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("duplicate name %q in header", name)
		}
		seen[name] = true
		if name == metadataKey {
			if h.Metadata, err = decodeMetadata(dec); err != nil {
				return err
			}
			continue
		}
		t, err := decodeTensor(dec)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		t.Name = name
		h.Tensors = append(h.Tensors, t)
	}
	if _, err := dec.Token(); err != nil {
		return badJSON(err)
	}
	// Writers pad the header with spaces, which the decoder skips; anything
	// else after the object is a second value or garbage.
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("bad JSON header: data after the top-level object")
	}
	return nil
}

func decodeMetadata(dec *json.Decoder) (map[string]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, badJSON(err)
	}
	// The reference reader accepts null as "no metadata".
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, errors.New("bad metadata: not an object")
	}
	meta := make(map[string]string)
	for dec.More() {
		key, err := stringToken(dec)
		if err != nil {
			return nil, err
		}
		if _, dup := meta[key]; dup {
			return nil, fmt.Errorf("bad metadata: duplicate key %q", key)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, badJSON(err)
		}
		val, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("bad metadata: value of %q is not a string", key)
		}
		meta[key] = val
	}
	if _, err := dec.Token(); err != nil {
		return nil, badJSON(err)
	}
	return meta, nil
}

// decodeTensor reads one tensor entry. Its Begin and End are the raw
// data_offsets.
func decodeTensor(dec *json.Decoder) (TensorInfo, error) {
	var t TensorInfo
	tok, err := dec.Token()
	if err != nil {
		return t, badJSON(err)
	}
	if tok != json.Delim('{') {
		return t, errors.New("entry is not an object")
	}
	seen := make(map[string]bool, 3)
	for dec.More() {
		key, err := stringToken(dec)
		if err != nil {
			return t, err
		}
		if seen[key] {
			return t, fmt.Errorf("duplicate field %q", key)
		}
		seen[key] = true
		switch key {
		case "dtype":
			tok, err := dec.Token()
			if err != nil {
				return t, badJSON(err)
			}
			s, ok := tok.(string)
			if !ok {
				return t, errors.New(`"dtype" is not a string`)
			}
			t.DType = DType(s)
		case "shape":
			if t.Shape, err = intArray(dec, key); err != nil {
				return t, err
			}
			if t.Shape == nil {
				t.Shape = []int64{} // a scalar; keep it distinct from "missing"
			}
		case "data_offsets":
			offsets, err := intArray(dec, key)
			if err != nil {
				return t, err
			}
			if len(offsets) != 2 {
				return t, fmt.Errorf("bad data_offsets: want [begin, end], got %d numbers", len(offsets))
			}
			t.Begin, t.End = offsets[0], offsets[1]
		default:
			return t, fmt.Errorf("unknown field %q", key)
		}
	}
	if _, err := dec.Token(); err != nil {
		return t, badJSON(err)
	}
	for _, field := range []string{"dtype", "shape", "data_offsets"} {
		if !seen[field] {
			return t, fmt.Errorf("missing field %q", field)
		}
	}
	return t, nil
}

// intArray reads a JSON array of integers. Negative values are returned so
// that the caller can say which rule they break.
func intArray(dec *json.Decoder, field string) ([]int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, badJSON(err)
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("bad %s: not an array", field)
	}
	var vals []int64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badJSON(err)
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("bad %s: %v is not a number", field, tok)
		}
		// ParseInt also rejects fractions and exponents, which JSON allows.
		v, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad %s: %s is not a 64-bit integer", field, num)
		}
		vals = append(vals, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, badJSON(err)
	}
	return vals, nil
}

func stringToken(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", badJSON(err)
	}
	s, ok := tok.(string)
	if !ok {
		// The decoder only hands out strings in key position, but a
		// wrong guess here must not become a panic.
		return "", fmt.Errorf("bad JSON header: expected a string, got %v", tok)
	}
	return s, nil
}

func badJSON(err error) error {
	if err == io.EOF {
		return errors.New("bad JSON header: unexpected end")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("bad JSON header: %v at byte %d", se, se.Offset)
	}
	return fmt.Errorf("bad JSON header: %w", err)
}

// tensorBytes is the byte size of a tensor of dtype and shape, or why it
// has none (an unknown dtype, a negative dimension, an overflow).
func tensorBytes(name string, dtype DType, shape []int64) (int64, error) {
	size := dtype.Size()
	if size == 0 {
		return 0, fmt.Errorf("tensor %q: unknown dtype %q", name, dtype)
	}
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("tensor %q: negative dim %d in shape %v", name, d, shape)
		}
	}
	need, ok := byteSize(shape, size)
	if !ok {
		return 0, fmt.Errorf("tensor %q: shape %v of %s is too large: byte size overflows int64", name, shape, dtype)
	}
	return need, nil
}

// checkTensor validates a tensor whose Begin and End are still relative to the
// data buffer of length dataLen.
func checkTensor(t *TensorInfo, dataLen int64) error {
	need, err := tensorBytes(t.Name, t.DType, t.Shape)
	if err != nil {
		return err
	}
	if t.Begin < 0 || t.End < 0 {
		return fmt.Errorf("tensor %q: offsets out of range: data_offsets [%d, %d] are negative", t.Name, t.Begin, t.End)
	}
	if t.Begin > t.End {
		return fmt.Errorf("tensor %q: offsets out of range: data_offsets [%d, %d] begin after they end", t.Name, t.Begin, t.End)
	}
	if t.End > dataLen {
		return fmt.Errorf("tensor %q: offsets out of range: data_offsets [%d, %d] end past the %d-byte data buffer", t.Name, t.Begin, t.End, dataLen)
	}
	if t.End-t.Begin != need {
		return fmt.Errorf("tensor %q: size mismatch: data_offsets [%d, %d] hold %d bytes, shape %v of %s needs %d",
			t.Name, t.Begin, t.End, t.End-t.Begin, t.Shape, t.DType, need)
	}
	return nil
}

// checkOverlap rejects tensors that share bytes: writing through one would
// silently change the other. Empty tensors hold no bytes and may sit
// anywhere.
func checkOverlap(tensors []TensorInfo) error {
	ranges := make([]*TensorInfo, 0, len(tensors))
	for i := range tensors {
		if tensors[i].Begin < tensors[i].End {
			ranges = append(ranges, &tensors[i])
		}
	}
	slices.SortFunc(ranges, func(a, b *TensorInfo) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), cmp.Compare(a.Name, b.Name))
	})
	// With no overlap so far, the previous range ends furthest right, so
	// comparing neighbours is enough.
	for i := 1; i < len(ranges); i++ {
		prev, cur := ranges[i-1], ranges[i]
		if cur.Begin < prev.End {
			return fmt.Errorf("tensors %q [%d, %d] and %q [%d, %d] overlap",
				prev.Name, prev.Begin, prev.End, cur.Name, cur.Begin, cur.End)
		}
	}
	return nil
}
