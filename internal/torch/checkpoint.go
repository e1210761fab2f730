package torch

/*
#include <stdlib.h>
#include "lcptorch.h"
extern char *lcpCheckpointRun(uintptr_t handle, lt_tensor *inputs, int n, void *outputs);
extern void lcpCheckpointRelease(uintptr_t handle);
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// maxCheckpointOutputs bounds how many tensors a checkpointed function
// returns.
const maxCheckpointOutputs = 16

// Checkpoint computes f(inputs) without keeping f's intermediate results
// for backward (gradient checkpointing, torch.utils.checkpoint): when
// backward reaches f's outputs, f runs again with autograd on, under the
// autocast state it first ran with, and the gradients flow through that
// recomputation to f's inputs and to every parameter f uses. Memory then
// holds f's inputs and outputs rather than everything in between, for the
// price of a second forward.
//
// f must compute the same thing both times: no random draws, no state it
// changes. Tensors it uses without receiving them (weights, conditioning
// held by attention processors) need not be inputs: gradients reach them
// too, through graphs kept until the outer backward frees them. With
// autograd off Checkpoint is just f.
func Checkpoint(f func(in []*Tensor) []*Tensor, inputs ...*Tensor) []*Tensor {
	registerCheckpoint()
	h := cgo.NewHandle(f) // released by the shim, exactly once
	hs, in := handleArray(inputs)
	var out [maxCheckpointOutputs]C.lt_tensor
	var n C.int
	if err := C.lt_checkpoint(C.uintptr_t(h), in, C.int(len(hs)), &out[0], C.int(len(out)), &n); err != nil {
		fail("checkpoint", err, inputs...)
	}
	runtime.KeepAlive(inputs)
	return wrapAll(out[:n])
}

var registerCheckpoint = sync.OnceFunc(func() {
	mustLib("checkpoint callbacks", C.lt_checkpoint_callbacks(
		C.lt_checkpoint_run(C.lcpCheckpointRun), C.lt_checkpoint_release(C.lcpCheckpointRelease)))
})

// lcpCheckpointRun is the shim's way back into a checkpointed function:
// it owns the input handles, pushes the results, and turns a panic into
// the error line the shim raises in its place.
//
//export lcpCheckpointRun
func lcpCheckpointRun(handle C.uintptr_t, inputs *C.lt_tensor, n C.int, outputs unsafe.Pointer) (cerr *C.char) {
	s := NewScope()
	defer s.Close()
	in := wrapAll(unsafe.Slice(inputs, int(n)))
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint(r)
			if e, ok := r.(error); ok {
				msg = e.Error()
			}
			cerr = C.CString("checkpointed function: " + msg)
		}
	}()
	f := cgo.Handle(handle).Value().(func([]*Tensor) []*Tensor)
	for _, y := range f(in) {
		mustLib("checkpoint output", C.lt_outputs_push(outputs, y.c()))
	}
	return nil
}

//export lcpCheckpointRelease
func lcpCheckpointRelease(handle C.uintptr_t) { cgo.Handle(handle).Delete() }
