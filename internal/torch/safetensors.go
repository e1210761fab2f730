package torch

/*
#include <stdlib.h>
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/lcpdiff/lcpdiff/internal/safetensors"
)

var fromSafetensors = map[safetensors.DType]DType{
	"F32": Float32, "F16": Float16, "BF16": BFloat16, "F64": Float64, "I64": Int64,
	"I32": Int32, "I16": Int16, "I8": Int8, "U8": Uint8, "BOOL": Bool,
}

var toSafetensors = map[DType]safetensors.DType{
	Float32: "F32", Float16: "F16", BFloat16: "BF16", Float64: "F64", Int64: "I64",
	Int32: "I32", Int16: "I16", Int8: "I8", Uint8: "U8", Bool: "BOOL",
}

// SafetensorsFile is a memory-mapped safetensors file. Its tensors are CPU
// tensors over the mapped bytes, read lazily by the OS and never copied
// (unless the file misaligns them); each keeps the mapping alive, so Close
// may come before the tensors are freed.
type SafetensorsFile struct {
	Path   string
	Header *safetensors.Header
	m      C.lt_mapping
}

// OpenSafetensors maps a file and validates its header.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var m C.lt_mapping
	var data unsafe.Pointer
	var size C.int64_t
	if err := C.lt_mapping_open(cpath, &m, &data, &size); err != nil {
		msg := C.GoString(err)
		C.lt_error_free(err)
		return nil, fmt.Errorf("safetensors: %s", msg)
	}
	var bytes []byte
	if size > 0 {
		bytes = unsafe.Slice((*byte)(data), int64(size))
	}
	h, err := safetensors.Parse(bytes, int64(size))
	if err != nil {
		C.lt_mapping_free(m)
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	f := &SafetensorsFile{Path: path, Header: h, m: m}
	runtime.SetFinalizer(f, (*SafetensorsFile).Close)
	return f, nil
}

// Close drops the file's own reference to the mapping.
func (f *SafetensorsFile) Close() {
	if f.m != nil {
		C.lt_mapping_free(f.m)
		f.m = nil
	}
}

// Tensor is the named tensor, without copying its bytes.
func (f *SafetensorsFile) Tensor(name string) (*Tensor, error) {
	info, ok := f.Header.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: no tensor %q", f.Path, name)
	}
	dt, ok := fromSafetensors[info.DType]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: tensor %q has dtype %s, which lcpdiff does not support", f.Path, name, info.DType)
	}
	if f.m == nil {
		return nil, fmt.Errorf("safetensors: %s: file is closed", f.Path)
	}
	var out C.lt_tensor
	err := C.lt_mapping_tensor(f.m, C.int64_t(info.Begin), C.int64_t(info.End-info.Begin),
		shapePtr(info.Shape), C.int(len(info.Shape)), C.int(dt), &out)
	runtime.KeepAlive(f)
	if err != nil {
		msg := C.GoString(err)
		C.lt_error_free(err)
		return nil, fmt.Errorf("safetensors: %s: tensor %q: %s", f.Path, name, msg)
	}
	return wrap(out), nil
}

// SaveSafetensors writes tensors (any device and layout) and metadata to
// path through a temporary file renamed into place, so an interrupted write
// never leaves a half file under the real name.
func SaveSafetensors(path string, tensors map[string]*Tensor, metadata map[string]string) (err error) {
	defer Recover(&err)
	entries := make([]safetensors.Entry, 0, len(tensors))
	for name, t := range tensors {
		i := t.info()
		dt, ok := toSafetensors[i.dtype]
		if !ok {
			return fmt.Errorf("safetensors: %s: tensor %q has dtype %v, which safetensors cannot hold", path, name, i.dtype)
		}
		entries = append(entries, safetensors.Entry{Name: name, DType: dt, Shape: i.shape, Data: t.Bytes()})
	}
	return safetensors.WriteFile(path, entries, metadata)
}
