package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func f32s(vals ...float32) []byte {
	b := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// rawFile builds a file from a hand-written header and dataLen bytes of
// data, so tests can say exactly what another writer might produce.
func rawFile(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	for i := range dataLen {
		b = append(b, byte(i))
	}
	return b
}

func sampleEntries() []Entry {
	return []Entry{
		{Name: "unet.conv_in.weight", DType: "F32", Shape: []int64{2, 3}, Data: f32s(1, 2, 3, 4, 5, 6)},
		{Name: "bias", DType: "F16", Shape: []int64{3}, Data: []byte{1, 2, 3, 4, 5, 6}},
		{Name: "step", DType: "I64", Shape: []int64{}, Data: []byte{7, 0, 0, 0, 0, 0, 0, 0}},
		{Name: "empty", DType: "BF16", Shape: []int64{0, 4}, Data: nil},
		{Name: "mask", DType: "BOOL", Shape: []int64{1, 1, 5}, Data: []byte{1, 0, 1, 0, 1}},
		{Name: "quant", DType: "F8_E4M3", Shape: []int64{3}, Data: []byte{9, 8, 7}},
	}
}

func TestRoundTrip(t *testing.T) {
	entries := sampleEntries()
	meta := map[string]string{"format": "pt", "note": `quotes " and <tags> & unicode é`}
	var buf bytes.Buffer
	if err := Write(&buf, entries, meta); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()

	h, err := Parse(file, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if h.DataStart%8 != 0 {
		t.Errorf("DataStart = %d, want a multiple of 8", h.DataStart)
	}
	if !reflect.DeepEqual(h.Metadata, meta) {
		t.Errorf("Metadata = %v, want %v", h.Metadata, meta)
	}
	want := []string{"bias", "empty", "mask", "quant", "step", "unet.conv_in.weight"}
	if got := h.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	// Data is laid out contiguously in name order right after the header.
	next := h.DataStart
	for _, ti := range h.Tensors {
		if ti.Begin != next {
			t.Errorf("%s: Begin = %d, want %d", ti.Name, ti.Begin, next)
		}
		next = ti.End
	}
	if next != int64(len(file)) {
		t.Errorf("last tensor ends at %d, file has %d bytes", next, len(file))
	}
	for _, e := range entries {
		ti, ok := h.Lookup(e.Name)
		if !ok {
			t.Errorf("Lookup(%q) failed", e.Name)
			continue
		}
		if ti.DType != e.DType || !slices.Equal(ti.Shape, e.Shape) {
			t.Errorf("%s: got %s %v, want %s %v", e.Name, ti.DType, ti.Shape, e.DType, e.Shape)
		}
		if got := file[ti.Begin:ti.End]; !bytes.Equal(got, e.Data) {
			t.Errorf("%s: data = %v, want %v", e.Name, got, e.Data)
		}
	}
	if ti, _ := h.Lookup("step"); ti.Shape == nil {
		t.Error("scalar shape decoded as nil, want empty")
	}

	// The header alone is enough, and reading through a ReaderAt agrees.
	fromPrefix, err := Parse(file[:h.DataStart], int64(len(file)))
	if err != nil {
		t.Fatalf("Parse(header only): %v", err)
	}
	if !reflect.DeepEqual(fromPrefix, h) {
		t.Errorf("Parse(header only) = %+v, want %+v", fromPrefix, h)
	}
	fromReader, err := ReadHeader(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	if !reflect.DeepEqual(fromReader, h) {
		t.Errorf("ReadHeader = %+v, want %+v", fromReader, h)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	entries := sampleEntries()
	reversed := slices.Clone(entries)
	slices.Reverse(reversed)
	meta := map[string]string{"a": "1", "b": "2", "c": "3"}
	var b1, b2 bytes.Buffer
	if err := Write(&b1, entries, meta); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b2, reversed, meta); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Error("input order changed the output")
	}
	if entries[0].Name != "unet.conv_in.weight" {
		t.Error("Write reordered the caller's slice")
	}
}

func TestWriteWithoutMetadata(t *testing.T) {
	for _, meta := range []map[string]string{nil, {}} {
		var buf bytes.Buffer
		if err := Write(&buf, sampleEntries(), meta); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(buf.Bytes(), []byte(metadataKey)) {
			t.Errorf("metadata %v: header mentions %s", meta, metadataKey)
		}
		h, err := Parse(buf.Bytes(), int64(buf.Len()))
		if err != nil {
			t.Fatal(err)
		}
		if h.Metadata != nil {
			t.Errorf("Metadata = %v, want nil", h.Metadata)
		}
	}
}

func TestWriteNoTensors(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, nil, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	h, err := Parse(buf.Bytes(), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != 0 || h.DataStart != int64(buf.Len()) || h.Metadata["k"] != "v" {
		t.Errorf("got %+v", h)
	}
}

// TestParseForeignFile parses bytes laid out by hand the way other writers
// (the Python library among them) produce them: no padding, metadata first.
func TestParseForeignFile(t *testing.T) {
	header := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	file = append(file, header...)
	file = append(file, f32s(1.5, -2)...)

	h, err := Parse(file, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	start := int64(8 + len(header))
	want := &Header{
		Tensors:   []TensorInfo{{Name: "a", DType: "F32", Shape: []int64{2}, Begin: start, End: start + 8}},
		Metadata:  map[string]string{"format": "pt"},
		DataStart: start,
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %+v, want %+v", h, want)
	}
	a, _ := h.Lookup("a")
	if got := file[a.Begin:a.End]; !bytes.Equal(got, f32s(1.5, -2)) {
		t.Errorf("data = %v", got)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		dataLen int
	}{
		{"empty object", `{}`, 0},
		{"padding spaces", `{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}      `, 2},
		{"whitespace everywhere", "\n{ \"a\" :\t{\"shape\": [ 2 ], \"dtype\":\"U8\",\"data_offsets\":[0, 2]} }\r\n", 2},
		{"null metadata", `{"__metadata__":null}`, 0},
		{"gap between tensors", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}`, 8},
		{"empty tensors share offsets", `{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"c":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]}}`, 4},
		{"empty tensor with huge dims", `{"a":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}}`, 0},
		{"escaped name", `{"a\"b\u00e9":{"dtype":"I8","shape":[],"data_offsets":[0,1]}}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := rawFile(tt.header, tt.dataLen)
			if _, err := Parse(file, int64(len(file))); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tensor := func(name, body string) string { return `{"` + name + `":` + body + `}` }
	lenOnly := func(n uint64) []byte { return binary.LittleEndian.AppendUint64(nil, n) }
	tests := []struct {
		name string
		file []byte
		size int64 // file size if not len(file)
		want string
	}{
		{"empty file", nil, 0, "truncated: no header length"},
		{"short length field", []byte{1, 2, 3}, 0, "truncated: no header length"},
		{"header over the limit", append(lenOnly(100_000_001), make([]byte, 16)...), 200_000_000, "header length too large"},
		{"header past end of file", append(lenOnly(50), `{}`...), 0, "header length too large"},
		{"prefix shorter than header", append(lenOnly(2), '{'), 100, "truncated"},
		{"empty header", rawFile("", 0), 0, "bad JSON"},
		{"syntax error", rawFile(`{"a":`, 0), 0, "bad JSON"},
		{"array", rawFile(`[]`, 0), 0, "bad JSON header: not an object"},
		{"string", rawFile(`"x"`, 0), 0, "bad JSON header: not an object"},
		{"invalid UTF-8", rawFile("{\"\xff\":{}}", 0), 0, "bad JSON header: not valid UTF-8"},
		{"trailing garbage", rawFile(`{} x`, 0), 0, "bad JSON"},
		{"second object", rawFile(`{}{}`, 0), 0, "bad JSON"},
		{"NUL padding", rawFile("{}\x00\x00", 0), 0, "bad JSON"},
		{"entry not an object", rawFile(tensor("a", `[1]`), 0), 0, `tensor "a": entry is not an object`},
		{"missing field", rawFile(tensor("a", `{"dtype":"F32","shape":[1]}`), 4), 0, `tensor "a": missing field "data_offsets"`},
		{"unknown field", rawFile(tensor("a", `{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}`), 4), 0, `unknown field "x"`},
		{"duplicate field", rawFile(tensor("a", `{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}`), 4), 0, `duplicate field "dtype"`},
		{"dtype not a string", rawFile(tensor("a", `{"dtype":4,"shape":[1],"data_offsets":[0,4]}`), 4), 0, `"dtype" is not a string`},
		{"unknown dtype", rawFile(tensor("a", `{"dtype":"F33","shape":[1],"data_offsets":[0,4]}`), 4), 0, `tensor "a": unknown dtype "F33"`},
		{"lowercase dtype", rawFile(tensor("a", `{"dtype":"f32","shape":[1],"data_offsets":[0,4]}`), 4), 0, "unknown dtype"},
		{"negative dim", rawFile(tensor("a", `{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}`), 4), 0, `tensor "a": negative dim -1`},
		{"fractional dim", rawFile(tensor("a", `{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}`), 4), 0, "bad shape"},
		{"dim beyond int64", rawFile(tensor("a", `{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}`), 4), 0, "bad shape"},
		{"shape not an array", rawFile(tensor("a", `{"dtype":"F32","shape":3,"data_offsets":[0,4]}`), 4), 0, "bad shape: not an array"},
		{"dim not a number", rawFile(tensor("a", `{"dtype":"F32","shape":["3"],"data_offsets":[0,4]}`), 4), 0, "bad shape"},
		{"size overflow", rawFile(tensor("a", `{"dtype":"F32","shape":[4611686018427387904,2],"data_offsets":[0,4]}`), 4), 0, "overflows"},
		{"one offset", rawFile(tensor("a", `{"dtype":"F32","shape":[1],"data_offsets":[4]}`), 4), 0, "bad data_offsets"},
		{"three offsets", rawFile(tensor("a", `{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}`), 8), 0, "bad data_offsets"},
		{"negative offset", rawFile(tensor("a", `{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}`), 4), 0, "offsets out of range"},
		{"begin after end", rawFile(tensor("a", `{"dtype":"F32","shape":[1],"data_offsets":[4,0]}`), 4), 0, "offsets out of range"},
		{"end past data", rawFile(tensor("a", `{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`), 4), 0, `tensor "a": offsets out of range`},
		{"end far past data", rawFile(tensor("a", `{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775806,9223372036854775807]}`), 4), 0, "offsets out of range"},
		{"size mismatch", rawFile(tensor("unet.conv_in.weight", `{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}`), 24), 0,
			`tensor "unet.conv_in.weight": size mismatch: data_offsets [0, 12] hold 12 bytes, shape [2 3] of F32 needs 24`},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), 0,
			`tensors "a" [0, 8] and "b" [4, 8] overlap`},
		{"identical ranges", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, 4), 0, "overlap"},
		{"overlap with an earlier long tensor", rawFile(`{"a":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"c":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 10), 0, "overlap"},
		{"duplicate name", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), 0, `duplicate name "a"`},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, 0), 0, "duplicate name"},
		{"metadata not an object", rawFile(`{"__metadata__":["pt"]}`, 0), 0, "bad metadata"},
		{"metadata value not a string", rawFile(`{"__metadata__":{"epoch":3}}`, 0), 0, `bad metadata: value of "epoch" is not a string`},
		{"metadata nested object", rawFile(`{"__metadata__":{"x":{}}}`, 0), 0, "bad metadata"},
		{"metadata duplicate key", rawFile(`{"__metadata__":{"k":"1","k":"2"}}`, 0), 0, `bad metadata: duplicate key "k"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.size
			if size == 0 {
				size = int64(len(tt.file))
			}
			h, err := Parse(tt.file, size)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", h)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
		})
	}
}

func TestReadHeaderShortReader(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, sampleEntries(), nil); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()
	// The reader is cut inside the header but claims the full size.
	_, err := ReadHeader(bytes.NewReader(file[:20]), int64(len(file)))
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("got %v, want a truncation error", err)
	}
	// A huge length field must be refused before anything is allocated.
	huge := binary.LittleEndian.AppendUint64(nil, math.MaxUint64)
	_, err = ReadHeader(bytes.NewReader(huge), 1<<62)
	if err == nil || !strings.Contains(err.Error(), "header length too large") {
		t.Errorf("got %v, want header length too large", err)
	}
}

func TestLookupMissing(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, sampleEntries(), nil); err != nil {
		t.Fatal(err)
	}
	h, err := Parse(buf.Bytes(), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "a", "zzz", "unet"} {
		if _, ok := h.Lookup(name); ok {
			t.Errorf("Lookup(%q) found a tensor", name)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		meta    map[string]string
		want    string
	}{
		{"empty name", []Entry{{DType: "U8", Shape: []int64{1}, Data: []byte{1}}}, nil, "empty name"},
		{"reserved name", []Entry{{Name: metadataKey, DType: "U8", Shape: []int64{1}, Data: []byte{1}}}, nil, "reserved"},
		{"invalid UTF-8 name", []Entry{{Name: "\xff", DType: "U8", Shape: []int64{1}, Data: []byte{1}}}, nil, "UTF-8"},
		{"unknown dtype", []Entry{{Name: "a", DType: "F12", Shape: []int64{1}, Data: []byte{1}}}, nil, `tensor "a": unknown dtype "F12"`},
		{"negative dim", []Entry{{Name: "a", DType: "U8", Shape: []int64{-1}}}, nil, "negative dim"},
		{"overflow", []Entry{{Name: "a", DType: "F64", Shape: []int64{1 << 62, 4}}}, nil, "overflows"},
		{"size mismatch", []Entry{{Name: "a", DType: "F32", Shape: []int64{2}, Data: []byte{1, 2, 3, 4}}}, nil,
			`tensor "a": size mismatch: 4 bytes of data, shape [2] of F32 needs 8`},
		{"duplicate name", []Entry{
			{Name: "a", DType: "U8", Shape: []int64{1}, Data: []byte{1}},
			{Name: "b", DType: "U8", Shape: []int64{1}, Data: []byte{1}},
			{Name: "a", DType: "U8", Shape: []int64{1}, Data: []byte{2}},
		}, nil, `duplicate name "a"`},
		{"bad metadata", nil, map[string]string{"k": "\xff"}, "bad metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tt.entries, tt.meta)
			if err == nil {
				t.Fatal("Write succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	meta := map[string]string{"format": "pt"}
	if err := WriteFile(path, sampleEntries(), meta); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"model.safetensors"}) {
		t.Errorf("directory holds %v, want only the file", got)
	}
	h, err := ReadFileHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != len(sampleEntries()) || h.Metadata["format"] != "pt" {
		t.Errorf("read back %+v", h)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o044 == 0 {
		t.Errorf("file mode %v is private", st.Mode())
	}

	// Overwriting an existing file works.
	if err := WriteFile(path, sampleEntries()[:1], nil); err != nil {
		t.Fatal(err)
	}
	if h, err := ReadFileHeader(path); err != nil || len(h.Tensors) != 1 {
		t.Errorf("after overwrite: %v, %v", h, err)
	}
}

func TestWriteFileFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := WriteFile(path, sampleEntries(), nil); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := append(sampleEntries(), Entry{Name: "bad", DType: "F32", Shape: []int64{3}, Data: []byte{1}})
	err = WriteFile(path, bad, nil)
	if err == nil {
		t.Fatal("WriteFile succeeded with an invalid entry")
	}
	if !strings.HasPrefix(err.Error(), "safetensors: "+path+": ") || !strings.Contains(err.Error(), "size mismatch") {
		t.Errorf("error %q should name the file and the problem", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("failed WriteFile changed the existing file")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"model.safetensors"}) {
		t.Errorf("directory holds %v after a failed write", got)
	}
}

func TestWriteFileInvalidLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.safetensors")
	bad := []Entry{{Name: "a", DType: "NOPE", Shape: []int64{1}, Data: []byte{1}}}
	if err := WriteFile(path, bad, nil); err == nil {
		t.Fatal("WriteFile succeeded with an invalid entry")
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("directory holds %v after a failed write", got)
	}
}

// TestWriteFileRenameFailure fails after the temporary file is written:
// the target is a non-empty directory, which a file cannot replace.
func TestWriteFileRenameFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := os.MkdirAll(filepath.Join(path, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, sampleEntries(), nil); err == nil {
		t.Fatal("WriteFile replaced a directory")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"model.safetensors"}) {
		t.Errorf("directory holds %v after a failed write", got)
	}
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		t.Errorf("target directory was disturbed: %v, %v", st, err)
	}
}

func TestReadFileHeaderErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.safetensors")
	_, err := ReadFileHeader(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}
	if err != nil && strings.Count(err.Error(), missing) != 1 {
		t.Errorf("error %q should name the file once", err)
	}

	corrupt := filepath.Join(dir, "corrupt.safetensors")
	if err := os.WriteFile(corrupt, []byte{1, 2}, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadFileHeader(corrupt)
	want := "safetensors: " + corrupt + ": truncated: no header length"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}
