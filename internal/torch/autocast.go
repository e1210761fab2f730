package torch

/*
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
)

// Autocast runs f under libtorch's automatic mixed precision for devices of
// type d: matrix products and convolutions run in dtype (Float16 or
// BFloat16), while the operations that need the range, such as softmax,
// normalisations and losses, stay in float32 (libtorch's own lists, as
// torch.autocast in Python). Weights stay float32 and so do their
// gradients; the casts are part of the graph.
//
// Autocast, like grad mode, belongs to the OS thread, so the goroutine is
// pinned while f runs; goroutines f starts do not inherit it. Regions nest.
func Autocast(d DeviceType, dtype DType, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var prevOn, prevDType C.int
	if err := C.lt_autocast_enter(C.int(d), C.int(dtype), &prevOn, &prevDType); err != nil {
		fail(fmt.Sprintf("autocast(%v, %v)", Device{Type: d}, dtype), err)
	}
	defer func() {
		mustLib("autocast exit", C.lt_autocast_exit(C.int(d), prevOn, prevDType))
	}()
	f()
}
