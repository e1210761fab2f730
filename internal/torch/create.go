package torch

/*
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
)

// Options say which dtype and device a new tensor gets; the zero value is
// f32 on the CPU. The package-level constructors use the zero value:
//
//	torch.Zeros(2, 3)
//	torch.Options{DType: torch.Float16, Device: torch.CUDA(0)}.Zeros(2, 3)
type Options struct {
	DType  DType
	Device Device
}

// OptionsOf gives the dtype and device of t.
func OptionsOf(t *Tensor) Options {
	i := t.info()
	return Options{DType: i.dtype, Device: i.device}
}

func (o Options) Zeros(shape ...int64) *Tensor { return o.Full(0, shape...) }
func (o Options) Ones(shape ...int64) *Tensor  { return o.Full(1, shape...) }

// Full is a tensor of the given shape with every element v.
func (o Options) Full(v float64, shape ...int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_full(shapePtr(shape), C.int(len(shape)), C.double(v), C.int(o.DType),
		C.int(o.Device.Type), C.int(o.Device.Index), &out); err != nil {
		fail(fmt.Sprintf("full %v", shape), err)
	}
	return wrap(out)
}

// Arange is start, start+step, ... up to but not including end.
func (o Options) Arange(start, end, step float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_arange(C.double(start), C.double(end), C.double(step), C.int(o.DType),
		C.int(o.Device.Type), C.int(o.Device.Index), &out); err != nil {
		fail("arange", err)
	}
	return wrap(out)
}

// Linspace is steps evenly spaced values from start to end inclusive.
func (o Options) Linspace(start, end float64, steps int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_linspace(C.double(start), C.double(end), C.int64_t(steps), C.int(o.DType),
		C.int(o.Device.Type), C.int(o.Device.Index), &out); err != nil {
		fail("linspace", err)
	}
	return wrap(out)
}

// Randn draws from N(0, 1); Rand from U[0, 1). A nil generator means
// libtorch's default one (see ManualSeed).
func (o Options) Randn(g *Generator, shape ...int64) *Tensor { return o.random(1, g, shape) }
func (o Options) Rand(g *Generator, shape ...int64) *Tensor  { return o.random(0, g, shape) }

func (o Options) random(normal C.int, g *Generator, shape []int64) *Tensor {
	var out C.lt_tensor
	var gh C.lt_generator
	if g != nil {
		gh = g.h
	}
	err := C.lt_random(normal, shapePtr(shape), C.int(len(shape)), C.int(o.DType),
		C.int(o.Device.Type), C.int(o.Device.Index), gh, &out)
	runtime.KeepAlive(g)
	if err != nil {
		fail(fmt.Sprintf("random %v", shape), err)
	}
	return wrap(out)
}

// Zeros, Ones, Full, Arange, Linspace, Randn and Rand make f32 CPU tensors.
func Zeros(shape ...int64) *Tensor                 { return Options{}.Zeros(shape...) }
func Ones(shape ...int64) *Tensor                  { return Options{}.Ones(shape...) }
func Full(v float64, shape ...int64) *Tensor       { return Options{}.Full(v, shape...) }
func Arange(start, end, step float64) *Tensor      { return Options{}.Arange(start, end, step) }
func Linspace(start, end float64, n int64) *Tensor { return Options{}.Linspace(start, end, n) }
func Randn(g *Generator, shape ...int64) *Tensor   { return Options{}.Randn(g, shape...) }
func Rand(g *Generator, shape ...int64) *Tensor    { return Options{}.Rand(g, shape...) }
func ZerosLike(t *Tensor) *Tensor                  { return OptionsOf(t).Zeros(t.Shape()...) }
func OnesLike(t *Tensor) *Tensor                   { return OptionsOf(t).Ones(t.Shape()...) }
func RandnLike(g *Generator, t *Tensor) *Tensor    { return OptionsOf(t).Randn(g, t.Shape()...) }

// Generator is a seeded CPU random generator, the same Mersenne Twister as
// torch.Generator(): torch.Generator().manual_seed(s) and NewGenerator(s)
// draw the same numbers. Tensors for other devices are drawn on the CPU and
// moved, so a seed gives the same noise on every device.
type Generator struct {
	h C.lt_generator
}

// NewGenerator makes a generator seeded with seed.
func NewGenerator(seed uint64) *Generator {
	var h C.lt_generator
	mustLib("generator", C.lt_generator_new(C.uint64_t(seed), &h))
	g := &Generator{h: h}
	runtime.SetFinalizer(g, (*Generator).Close)
	return g
}

// Close releases the generator.
func (g *Generator) Close() {
	if g.h != nil {
		C.lt_generator_free(g.h)
		g.h = nil
	}
}

// State is the generator's full state (a u8 tensor), to save in a checkpoint.
func (g *Generator) State() *Tensor {
	var out C.lt_tensor
	err := C.lt_generator_get_state(g.h, &out)
	runtime.KeepAlive(g)
	mustLib("generator_state", err)
	return wrap(out)
}

// SetState restores a state State returned.
func (g *Generator) SetState(state *Tensor) {
	err := C.lt_generator_set_state(g.h, state.c())
	runtime.KeepAlive(g)
	if err != nil {
		fail("generator_set_state", err, state)
	}
}
