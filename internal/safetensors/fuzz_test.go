package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math"
	"reflect"
	"slices"
	"testing"
)

func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	write := func(entries []Entry, meta map[string]string) {
		var buf bytes.Buffer
		if err := Write(&buf, entries, meta); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	write(nil, nil)
	write(sampleEntries(), map[string]string{"format": "pt"})
	write(sampleEntries()[:2], nil)
	write([]Entry{{Name: "w", DType: "U16", Shape: []int64{2, 2}, Data: make([]byte, 8)}}, map[string]string{"a": "b", "c": ""})

	seeds = append(seeds,
		rawFile(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8),
		rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}  `, 8),
		rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4),
		rawFile(`{"a":{"dtype":"F32","shape":[4611686018427387904,2],"data_offsets":[0,4]}}`, 4),
		binary.LittleEndian.AppendUint64(nil, 1<<40),
		[]byte{3, 0, 0},
	)
	return seeds
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		size := int64(len(file))
		h, err := Parse(file, size)
		if err != nil {
			if h != nil {
				t.Fatalf("Parse returned a header with error %v", err)
			}
			return
		}
		if h.DataStart < 8 || h.DataStart > size {
			t.Fatalf("DataStart %d outside [8, %d]", h.DataStart, size)
		}
		ranges := slices.Clone(h.Tensors)
		for i, ti := range h.Tensors {
			if i > 0 && h.Tensors[i-1].Name >= ti.Name {
				t.Fatalf("tensors not sorted by name: %q then %q", h.Tensors[i-1].Name, ti.Name)
			}
			if ti.Begin < h.DataStart || ti.Begin > ti.End || ti.End > size {
				t.Fatalf("%q: [%d, %d) outside [%d, %d]", ti.Name, ti.Begin, ti.End, h.DataStart, size)
			}
			n := int64(ti.DType.Size())
			if n == 0 {
				t.Fatalf("%q: unknown dtype %q accepted", ti.Name, ti.DType)
			}
			if slices.Contains(ti.Shape, 0) {
				n = 0
			}
			for _, d := range ti.Shape {
				if d < 0 {
					t.Fatalf("%q: negative dim in %v", ti.Name, ti.Shape)
				}
				if n != 0 && n > math.MaxInt64/d {
					t.Fatalf("%q: byte size of shape %v overflows", ti.Name, ti.Shape)
				}
				n *= d
			}
			if ti.End-ti.Begin != n {
				t.Fatalf("%q: %d bytes for shape %v of %s", ti.Name, ti.End-ti.Begin, ti.Shape, ti.DType)
			}
			_ = file[ti.Begin:ti.End]
		}
		slices.SortFunc(ranges, func(a, b TensorInfo) int { return cmp.Compare(a.Begin, b.Begin) })
		var last TensorInfo
		for _, r := range ranges {
			if r.Begin == r.End {
				continue
			}
			if r.Begin < last.End {
				t.Fatalf("%q [%d, %d) overlaps %q [%d, %d)", r.Name, r.Begin, r.End, last.Name, last.Begin, last.End)
			}
			last = r
		}

		// Reading through a ReaderAt, or from the header bytes alone, must
		// give the same answer.
		viaReader, err := ReadHeader(bytes.NewReader(file), size)
		if err != nil || !reflect.DeepEqual(viaReader, h) {
			t.Fatalf("ReadHeader = %+v, %v; Parse = %+v", viaReader, err, h)
		}
		viaPrefix, err := Parse(file[:h.DataStart], size)
		if err != nil || !reflect.DeepEqual(viaPrefix, h) {
			t.Fatalf("Parse(prefix) = %+v, %v; Parse = %+v", viaPrefix, err, h)
		}

		// Whatever parses must survive a rewrite.
		entries := make([]Entry, len(h.Tensors))
		for i, ti := range h.Tensors {
			entries[i] = Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: file[ti.Begin:ti.End]}
		}
		var buf bytes.Buffer
		if err := Write(&buf, entries, h.Metadata); err != nil {
			// Write is stricter about names than Parse.
			if slices.ContainsFunc(entries, func(e Entry) bool { return e.Name == "" }) {
				return
			}
			t.Fatalf("Write of a parsed file: %v", err)
		}
		again, err := Parse(buf.Bytes(), int64(buf.Len()))
		if err != nil {
			t.Fatalf("Parse of rewritten file: %v", err)
		}
		for i, ti := range again.Tensors {
			if ti.Name != entries[i].Name || !bytes.Equal(buf.Bytes()[ti.Begin:ti.End], entries[i].Data) {
				t.Fatalf("rewrite changed tensor %q", entries[i].Name)
			}
		}
	})
}
