package torch

/*
#include "lcptorch.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// AdamWOptions are torch.optim.AdamW's hyper-parameters.
type AdamWOptions struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	AMSGrad                            bool
}

// DefaultAdamW is PyTorch's AdamW defaults with the given learning rate.
func DefaultAdamW(lr float64) AdamWOptions {
	return AdamWOptions{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
}

// AdamW is libtorch's own AdamW over a fixed list of parameters.
type AdamW struct {
	h C.lt_optimizer
}

// NewAdamW makes an optimizer for params (leaf tensors that require grad).
func NewAdamW(params []*Tensor, o AdamWOptions) *AdamW {
	if len(params) == 0 {
		panic(&Error{Op: "adamw", Msg: "no parameters to optimise"})
	}
	hs := handles(params)
	ams := C.int(0)
	if o.AMSGrad {
		ams = 1
	}
	var h C.lt_optimizer
	err := C.lt_adamw_new(&hs[0], C.int(len(hs)), C.double(o.LR), C.double(o.Beta1), C.double(o.Beta2),
		C.double(o.Eps), C.double(o.WeightDecay), ams, &h)
	if err != nil {
		fail("adamw", err, params...)
	}
	a := &AdamW{h: h}
	runtime.SetFinalizer(a, (*AdamW).Close)
	return a
}

// Close releases the optimizer and its state.
func (a *AdamW) Close() {
	if a.h != nil {
		C.lt_optimizer_free(a.h)
		a.h = nil
	}
}

// Step updates every parameter from its gradient.
func (a *AdamW) Step() {
	err := C.lt_optimizer_step(a.h)
	runtime.KeepAlive(a)
	mustLib("adamw.step", err)
}

// ZeroGrad drops every parameter's gradient.
func (a *AdamW) ZeroGrad() {
	err := C.lt_optimizer_zero_grad(a.h)
	runtime.KeepAlive(a)
	mustLib("adamw.zero_grad", err)
}

// SetLR changes the learning rate of every parameter group.
func (a *AdamW) SetLR(lr float64) {
	err := C.lt_optimizer_set_lr(a.h, C.double(lr))
	runtime.KeepAlive(a)
	mustLib("adamw.set_lr", err)
}

// State is the optimizer's state (step counts and moments) in libtorch's
// archive format, for a training checkpoint.
func (a *AdamW) State() []byte {
	var data unsafe.Pointer
	var size C.int64_t
	err := C.lt_optimizer_save(a.h, &data, &size)
	runtime.KeepAlive(a)
	mustLib("adamw.save", err)
	defer C.lt_buffer_free(data)
	return C.GoBytes(data, C.int(size))
}

// LoadState restores what State saved, for the same parameter list.
func (a *AdamW) LoadState(b []byte) error {
	if len(b) == 0 {
		return &Error{Op: "adamw.load", Msg: "empty optimizer state"}
	}
	return Try(func() {
		err := C.lt_optimizer_load(a.h, unsafe.Pointer(&b[0]), C.int64_t(len(b)))
		runtime.KeepAlive(a)
		mustLib("adamw.load", err)
	})
}
