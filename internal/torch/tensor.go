package torch

/*
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Tensor is a handle on a libtorch tensor. The zero value and a freed
// tensor are invalid: any operation on them is a *Error, never a crash.
type Tensor struct {
	ptr   C.lt_tensor
	scope *Scope // the scope that frees it, or nil
	slot  int    // its index in scope.tensors
}

// wrap takes ownership of a shim handle: the current scope frees it, or,
// outside any scope, the finaliser backstop does.
func wrap(h C.lt_tensor) *Tensor {
	t := &Tensor{ptr: h}
	if s := currentScope(); s != nil {
		s.adopt(t)
	} else {
		runtime.SetFinalizer(t, (*Tensor).Free)
	}
	return t
}

// c is the handle to pass to the shim; NULL for a nil or freed tensor,
// which the shim reports as an error.
func (t *Tensor) c() C.lt_tensor {
	if t == nil {
		return nil
	}
	return t.ptr
}

// Free releases the tensor now. It is safe to call twice. Views that share
// its storage stay valid: libtorch counts references to storages.
func (t *Tensor) Free() {
	if t == nil || t.ptr == nil {
		return
	}
	C.lt_free(t.ptr)
	t.ptr = nil
	if t.scope != nil {
		t.scope.forget(t)
	} else {
		// Dropping the finaliser keeps the runtime's per-span list of them
		// short; left in place, it makes every later SetFinalizer slower.
		runtime.SetFinalizer(t, nil)
	}
}

// Freed reports whether the tensor has been released.
func (t *Tensor) Freed() bool { return t == nil || t.ptr == nil }

type info struct {
	dtype        DType
	device       Device
	requiresGrad bool
	shape        []int64
}

func (t *Tensor) info() info {
	var dt, devType, devIndex, rg, nd C.int
	var dims [12]C.int64_t
	if err := C.lt_info(t.c(), &dt, &devType, &devIndex, &rg, &dims[0], C.int(len(dims)), &nd); err != nil {
		fail("info", err)
	}
	shape := make([]int64, int(nd))
	if int(nd) > len(dims) {
		panic(&Error{Op: "info", Msg: fmt.Sprintf("tensor has %d dimensions, at most %d are supported", nd, len(dims))})
	}
	for i := range shape {
		shape[i] = int64(dims[i])
	}
	return info{DType(dt), Device{DeviceType(devType), int(devIndex)}, rg != 0, shape}
}

// Shape is the tensor's size in every dimension.
func (t *Tensor) Shape() []int64 { return t.info().shape }

// Dim is the number of dimensions.
func (t *Tensor) Dim() int { return len(t.info().shape) }

// Size is the size of dimension d; negative d counts from the end.
func (t *Tensor) Size(d int) int64 {
	s := t.info().shape
	if d < 0 {
		d += len(s)
	}
	if d < 0 || d >= len(s) {
		panic(&Error{Op: "size", Inputs: t.describe(), Msg: fmt.Sprintf("dimension %d out of range", d)})
	}
	return s[d]
}

// Numel is the number of elements.
func (t *Tensor) Numel() int64 { return numel(t.info().shape) }

// DType is the element type.
func (t *Tensor) DType() DType { return t.info().dtype }

// Device is where the tensor lives.
func (t *Tensor) Device() Device { return t.info().device }

// RequiresGrad reports whether autograd records operations on the tensor.
func (t *Tensor) RequiresGrad() bool { return t.info().requiresGrad }

// String is a short description such as "Tensor[2 3] f32 cpu".
func (t *Tensor) String() string { return "Tensor" + t.describe() }

// describe names the tensor's shape, dtype and device for error messages.
func (t *Tensor) describe() string {
	if t.Freed() {
		return "<freed>"
	}
	var dt, devType, devIndex, rg, nd C.int
	var dims [12]C.int64_t
	if err := C.lt_info(t.ptr, &dt, &devType, &devIndex, &rg, &dims[0], C.int(len(dims)), &nd); err != nil {
		C.lt_error_free(err)
		return "<invalid>"
	}
	shape := make([]int64, min(int(nd), len(dims)))
	for i := range shape {
		shape[i] = int64(dims[i])
	}
	return fmt.Sprintf("%v %v %v", shape, DType(dt), Device{DeviceType(devType), int(devIndex)})
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, s := range shape {
		n *= s
	}
	return n
}

// shapePtr passes a shape to the shim; nil for an empty one.
func shapePtr(s []int64) *C.int64_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&s[0]))
}

// handles converts tensors to shim handles.
func handles(ts []*Tensor) []C.lt_tensor {
	hs := make([]C.lt_tensor, len(ts))
	for i, t := range ts {
		hs[i] = t.c()
	}
	return hs
}

// handleArray is handles(ts) and the pointer to its first element to pass
// as a C array, NULL when ts is empty.
func handleArray(ts []*Tensor) ([]C.lt_tensor, *C.lt_tensor) {
	hs := handles(ts)
	if len(hs) == 0 {
		return hs, nil
	}
	return hs, &hs[0]
}

// Element is a Go type that maps one to one to a tensor dtype.
type Element interface {
	~float32 | ~float64 | ~int64 | ~int32 | ~int16 | ~int8 | ~uint8 | ~bool
}

func dtypeOf[T Element]() DType {
	var z T
	switch any(z).(type) {
	case float32:
		return Float32
	case float64:
		return Float64
	case int64:
		return Int64
	case int32:
		return Int32
	case int16:
		return Int16
	case int8:
		return Int8
	case uint8:
		return Uint8
	case bool:
		return Bool
	}
	panic("unreachable")
}

// New copies data into a new CPU tensor of the given shape (a vector when
// no shape is given).
func New[T Element](data []T, shape ...int64) *Tensor {
	if len(shape) == 0 {
		shape = []int64{int64(len(data))}
	}
	var z T
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	return fromData(p, int64(len(data))*int64(unsafe.Sizeof(z)), dtypeOf[T](), shape)
}

// FromBytes copies raw little-endian element bytes into a new CPU tensor;
// it is how f16 and bf16 data, which Go has no type for, come in.
func FromBytes(b []byte, dtype DType, shape ...int64) *Tensor {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	return fromData(p, int64(len(b)), dtype, shape)
}

func fromData(p unsafe.Pointer, nbytes int64, dtype DType, shape []int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_from_data(p, C.int64_t(nbytes), shapePtr(shape), C.int(len(shape)), C.int(dtype), &out); err != nil {
		fail(fmt.Sprintf("new %v %v", dtype, shape), err)
	}
	return wrap(out)
}

// Data copies the tensor's elements, in row-major order, into a new slice.
// T must match the tensor's dtype; use To first to convert.
func Data[T Element](t *Tensor) []T {
	want := dtypeOf[T]()
	if got := t.DType(); got != want {
		panic(&Error{Op: "data", Inputs: t.describe(), Msg: fmt.Sprintf("tensor holds %v, asked for %v", got, want)})
	}
	out := make([]T, t.Numel())
	var z T
	copyToHost(t, unsafe.Pointer(unsafe.SliceData(out)), int64(len(out))*int64(unsafe.Sizeof(z)))
	return out
}

// Bytes copies the tensor's raw element bytes, in row-major order.
func (t *Tensor) Bytes() []byte {
	i := t.info()
	out := make([]byte, numel(i.shape)*int64(i.dtype.Size()))
	copyToHost(t, unsafe.Pointer(unsafe.SliceData(out)), int64(len(out)))
	return out
}

// Float32s converts the tensor to f32 on the CPU and copies its elements.
func (t *Tensor) Float32s() []float32 {
	if t.DType() == Float32 {
		return Data[float32](t)
	}
	f := t.To(Float32)
	defer f.Free()
	return Data[float32](f)
}

// Float64s converts the tensor to f64 on the CPU and copies its elements.
func (t *Tensor) Float64s() []float64 {
	if t.DType() == Float64 {
		return Data[float64](t)
	}
	f := t.To(Float64)
	defer f.Free()
	return Data[float64](f)
}

func copyToHost(t *Tensor, dst unsafe.Pointer, nbytes int64) {
	if nbytes == 0 {
		dst = nil
	}
	if err := C.lt_copy_to_host(t.c(), dst, C.int64_t(nbytes)); err != nil {
		fail("copy_to_host", err, t)
	}
}

// Item is the value of a one-element tensor.
func (t *Tensor) Item() float64 {
	var v C.double
	if err := C.lt_item(t.c(), &v); err != nil {
		fail("item", err, t)
	}
	return float64(v)
}

// To converts the tensor to another dtype (on the same device).
func (t *Tensor) To(dtype DType) *Tensor { return t.to("to", C.int(dtype), -1, 0) }

// ToDevice moves the tensor to another device (same dtype).
func (t *Tensor) ToDevice(d Device) *Tensor {
	return t.to("to_device", -1, C.int(d.Type), C.int(d.Index))
}

// ToOptions converts dtype and device at once.
func (t *Tensor) ToOptions(o Options) *Tensor {
	return t.to("to", C.int(o.DType), C.int(o.Device.Type), C.int(o.Device.Index))
}

func (t *Tensor) to(op string, dtype, devType, devIndex C.int) *Tensor {
	var out C.lt_tensor
	if err := C.lt_to(t.c(), dtype, devType, devIndex, &out); err != nil {
		fail(op, err, t)
	}
	return wrap(out)
}

// Clone copies the tensor into new memory (recorded by autograd).
func (t *Tensor) Clone() *Tensor {
	var out C.lt_tensor
	if err := C.lt_clone(t.c(), &out); err != nil {
		fail("clone", err, t)
	}
	return wrap(out)
}

// CopyFrom copies src's values into t in place (broadcasting src).
func (t *Tensor) CopyFrom(src *Tensor) {
	if err := C.lt_copy_(t.c(), src.c()); err != nil {
		fail("copy_", err, t, src)
	}
}

// Fill sets every element of t to v in place.
func (t *Tensor) Fill(v float64) {
	if err := C.lt_fill_(t.c(), C.double(v)); err != nil {
		fail("fill_", err, t)
	}
}
