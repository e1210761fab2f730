package torch

/*
#include <stdlib.h>
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"strings"
)

// Error is what a tensor operation panics with when libtorch refuses it.
// It names the operation and its inputs, so the message alone tells which
// call failed and with what.
type Error struct {
	Op     string // the operation, as this package names it
	Inputs string // shape, dtype and device of each tensor input
	Msg    string // libtorch's own message, on one line
}

func (e *Error) Error() string {
	if e.Inputs == "" {
		return fmt.Sprintf("torch: %s: %s", e.Op, e.Msg)
	}
	return fmt.Sprintf("torch: %s(%s): %s", e.Op, e.Inputs, e.Msg)
}

// fail panics with an *Error built from a shim error, which it frees.
// It is kept out of line so that the success path of every op stays small.
//
//go:noinline
func fail(op string, err C.lt_error, inputs ...*Tensor) {
	msg := C.GoString(err)
	C.lt_error_free(err)
	parts := make([]string, len(inputs))
	for i, t := range inputs {
		parts[i] = t.describe()
	}
	panic(&Error{Op: op, Inputs: strings.Join(parts, ", "), Msg: msg})
}

// Recover turns a panic with a *Error into *errp; other panics continue.
// Jobs use it at their boundary:
//
//	func Generate(...) (err error) {
//		defer torch.Recover(&err)
//		...
//	}
func Recover(errp *error) {
	r := recover()
	if r == nil {
		return
	}
	if e, ok := r.(*Error); ok {
		*errp = e
		return
	}
	panic(r)
}

// Try runs f and returns the *Error it panicked with, if any.
func Try(f func()) (err error) {
	defer Recover(&err)
	f()
	return nil
}
