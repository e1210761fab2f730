// Package safetensors reads and writes the safetensors file format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON describing each tensor, then the raw
// tensor data.
//
// Callers memory-map files and slice tensors straight out of the mapping
// at the offsets this package returns, so Parse treats every header as
// hostile: a header it accepts never points outside the file, never lets
// two tensors share bytes, and always agrees with the dtype and shape it
// declares.
package safetensors

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
	"strings"
)

// DType is a safetensors dtype name as it appears in files: "F64", "F32",
// "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "U32",
// "U64", "F8_E4M3", "F8_E5M2".
type DType string

var dtypeSizes = map[DType]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1,
	"U64": 8, "U32": 4, "U16": 2, "U8": 1,
	"BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}

// Size is the number of bytes per element, or 0 for a dtype this package
// does not know (which Parse and Write reject).
func (d DType) Size() int { return dtypeSizes[d] }

// TensorInfo locates one tensor in a file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are absolute byte offsets in the file, End exclusive,
	// so a caller holding the whole file can slice it directly.
	Begin, End int64
}

// Header is the parsed header of a safetensors file.
type Header struct {
	Tensors   []TensorInfo      // sorted by name
	Metadata  map[string]string // nil if the file has no "__metadata__"
	DataStart int64             // offset of the data buffer: 8 + header length
}

// Lookup finds the tensor with the given name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	i, ok := slices.BinarySearchFunc(h.Tensors, name, func(t TensorInfo, name string) int {
		return strings.Compare(t.Name, name)
	})
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// Names lists the tensor names in sorted order.
func (h *Header) Names() []string {
	names := make([]string, len(h.Tensors))
	for i, t := range h.Tensors {
		names[i] = t.Name
	}
	return names
}

func sortByName(tensors []TensorInfo) {
	slices.SortFunc(tensors, func(a, b TensorInfo) int { return cmp.Compare(a.Name, b.Name) })
}

// byteSize is the number of bytes a tensor of the given shape and element
// size occupies; ok is false if a dim is negative or the size does not fit
// in an int64, which in a file can only mean corruption.
func byteSize(shape []int64, elemSize int) (n int64, ok bool) {
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		// An empty tensor holds no bytes however large its other dims are,
		// so it must not be rejected for an overflow in the product.
		if d == 0 {
			return 0, true
		}
	}
	size := uint64(elemSize)
	for _, d := range shape {
		hi, lo := bits.Mul64(size, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, false
		}
		size = lo
	}
	return int64(size), true
}
