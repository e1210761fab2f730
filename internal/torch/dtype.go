package torch

/*
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"strconv"
	"strings"
)

// DType is a tensor's element type.
type DType int

const (
	Float32  DType = C.LT_F32
	Float16  DType = C.LT_F16
	BFloat16 DType = C.LT_BF16
	Float64  DType = C.LT_F64
	Int64    DType = C.LT_I64
	Int32    DType = C.LT_I32
	Bool     DType = C.LT_BOOL
	Uint8    DType = C.LT_U8
	Int8     DType = C.LT_I8
	Int16    DType = C.LT_I16
)

var dtypeNames = map[DType]string{
	Float32: "f32", Float16: "f16", BFloat16: "bf16", Float64: "f64", Int64: "i64",
	Int32: "i32", Bool: "bool", Uint8: "u8", Int8: "i8", Int16: "i16",
}

var dtypeSizes = map[DType]int{
	Float32: 4, Float16: 2, BFloat16: 2, Float64: 8, Int64: 8,
	Int32: 4, Bool: 1, Uint8: 1, Int8: 1, Int16: 2,
}

func (d DType) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return "dtype(" + strconv.Itoa(int(d)) + ")"
}

// Size is the size of one element in bytes.
func (d DType) Size() int { return dtypeSizes[d] }

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	return d == Float32 || d == Float16 || d == BFloat16 || d == Float64
}

// ParseDType reads the names users write: fp32, f32, float32, fp16, half, bf16, ...
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "fp32", "f32", "float32", "float":
		return Float32, nil
	case "fp16", "f16", "float16", "half":
		return Float16, nil
	case "bf16", "bfloat16":
		return BFloat16, nil
	case "fp64", "f64", "float64", "double":
		return Float64, nil
	case "i64", "int64", "long":
		return Int64, nil
	case "i32", "int32", "int":
		return Int32, nil
	case "bool":
		return Bool, nil
	case "u8", "uint8":
		return Uint8, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want fp32, fp16 or bf16)", s)
}

// DeviceType is the kind of device a tensor lives on.
type DeviceType int

const (
	CPUDevice  DeviceType = C.LT_CPU
	CUDADevice DeviceType = C.LT_CUDA
)

// Device is where a tensor lives; the zero value is the CPU.
type Device struct {
	Type  DeviceType
	Index int
}

// CPU is the host.
var CPU = Device{Type: CPUDevice}

// CUDA is the CUDA device with the given index.
func CUDA(index int) Device { return Device{Type: CUDADevice, Index: index} }

func (d Device) String() string {
	if d.Type == CUDADevice {
		return "cuda:" + strconv.Itoa(d.Index)
	}
	return "cpu"
}

// ParseDevice reads "cpu", "cuda" or "cuda:N". It checks the syntax only;
// a missing device is libtorch's error when a tensor first goes there.
func ParseDevice(s string) (Device, error) {
	switch {
	case s == "cpu":
		return CPU, nil
	case s == "cuda":
		return CUDA(0), nil
	case strings.HasPrefix(s, "cuda:"):
		i, err := strconv.Atoi(s[len("cuda:"):])
		if err == nil && i >= 0 {
			return CUDA(i), nil
		}
	}
	return Device{}, fmt.Errorf("unknown device %q (want cpu, cuda or cuda:N)", s)
}
