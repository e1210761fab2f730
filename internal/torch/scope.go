package torch

/*
#include "lcptorch.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petermattis/goid"
)

// Scope frees, when it closes, every tensor created on its goroutine while it
// was the innermost open scope, except those it keeps. Scopes nest; a scope
// belongs to the goroutine that opened it. The usual shape is
//
//	s := torch.NewScope()
//	defer s.Close()
//	...
//	return s.Keep(result)
//
// or torch.Scoped(func() *torch.Tensor { ... }).
type Scope struct {
	parent  *Scope
	gid     int64
	tensors []*Tensor
	freed   int // nil slots in tensors
	closed  bool
}

var (
	// innermost open scope per goroutine id
	scopes sync.Map
	// open scopes in the process: lets ops skip the lookup when there are none
	openScopes atomic.Int64
)

// NewScope opens a scope on the calling goroutine.
func NewScope() *Scope {
	s := &Scope{gid: goid.Get()}
	if p, ok := scopes.Load(s.gid); ok {
		s.parent = p.(*Scope)
	}
	scopes.Store(s.gid, s)
	openScopes.Add(1)
	return s
}

func currentScope() *Scope {
	if openScopes.Load() == 0 {
		return nil
	}
	if s, ok := scopes.Load(goid.Get()); ok {
		return s.(*Scope)
	}
	return nil
}

func (s *Scope) adopt(t *Tensor) {
	t.scope = s
	t.slot = len(s.tensors)
	s.tensors = append(s.tensors, t)
}

// forget drops a tensor freed before the scope closed. Long loops free as
// they go, so the slot list is compacted once it is mostly empty.
func (s *Scope) forget(t *Tensor) {
	s.tensors[t.slot] = nil
	t.scope = nil
	s.freed++
	if s.freed > 64 && s.freed > len(s.tensors)/2 {
		live := s.tensors[:0]
		for _, x := range s.tensors {
			if x != nil {
				x.slot = len(live)
				live = append(live, x)
			}
		}
		clear(s.tensors[len(live):])
		s.tensors = live
		s.freed = 0
	}
}

// Keep hands t to the enclosing scope (or, at the outermost scope, to the
// caller, with the finaliser as backstop) so that it survives Close. A tensor
// this scope does not own is returned unchanged.
func (s *Scope) Keep(t *Tensor) *Tensor {
	if t == nil || t.scope != s || s.closed {
		return t
	}
	s.release(t)
	if s.parent != nil {
		s.parent.adopt(t)
	} else {
		runtime.SetFinalizer(t, (*Tensor).Free)
	}
	return t
}

// Persist takes t out of whatever scope owns it: it then lives until Free
// (or, as a backstop, until the collector finds it unreachable), as a
// module's parameters do.
func Persist(t *Tensor) *Tensor {
	if t == nil || t.scope == nil {
		return t
	}
	t.scope.release(t)
	runtime.SetFinalizer(t, (*Tensor).Free)
	return t
}

// release drops t from the scope without freeing it.
func (s *Scope) release(t *Tensor) {
	s.tensors[t.slot] = nil
	s.freed++
	t.scope = nil
}

// Close frees the scope's tensors and any inner scope left open. Closing
// twice is harmless.
func (s *Scope) Close() {
	if s.closed {
		return
	}
	for {
		cur, ok := scopes.Load(s.gid)
		if !ok || cur.(*Scope) == s || !cur.(*Scope).within(s) {
			break
		}
		cur.(*Scope).Close()
	}
	for _, t := range s.tensors {
		if t != nil && t.ptr != nil {
			C.lt_free(t.ptr)
			t.ptr = nil
			t.scope = nil
		}
	}
	s.tensors = nil
	s.closed = true
	if s.parent != nil {
		scopes.Store(s.gid, s.parent)
	} else {
		scopes.Delete(s.gid)
	}
	openScopes.Add(-1)
}

// within reports whether s is nested inside outer.
func (s *Scope) within(outer *Scope) bool {
	for p := s.parent; p != nil; p = p.parent {
		if p == outer {
			return true
		}
	}
	return false
}

// Scoped runs f in a new scope and keeps only the tensor it returns.
func Scoped(f func() *Tensor) *Tensor {
	s := NewScope()
	defer s.Close()
	return s.Keep(f())
}

// NoGrad runs f with autograd off. Grad mode is per OS thread in libtorch,
// so the goroutine is pinned to its thread while f runs; goroutines f starts
// do not inherit the mode.
func NoGrad(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := setGradEnabled(false)
	defer setGradEnabled(prev)
	f()
}

// WithGrad runs f with autograd on, inside a NoGrad region too (box
// guidance differentiates through the UNet in the middle of generation).
// Like NoGrad, it pins the goroutine to its thread while f runs.
func WithGrad(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := setGradEnabled(true)
	defer setGradEnabled(prev)
	f()
}

// GradEnabled reports whether autograd records operations on this goroutine's thread.
func GradEnabled() bool {
	var e C.int
	mustLib("is_grad_enabled", C.lt_is_grad_enabled(&e))
	return e != 0
}

func setGradEnabled(on bool) (previous bool) {
	var prev C.int
	v := C.int(0)
	if on {
		v = 1
	}
	mustLib("set_grad_enabled", C.lt_set_grad_enabled(v, &prev))
	return prev != 0
}

// Settle runs the garbage collector until finalisers free no more
// tensors, so that LiveTensors then counts only what is referenced: a test
// of constant memory takes its baseline after it, and unrelated garbage
// freed later cannot make the count move.
func Settle() {
	for prev := int64(-1); ; {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		n := LiveTensors()
		if n == prev {
			return
		}
		prev = n
	}
}

// Replace frees old and returns next, the tensor computed from it: a chain
// of large activations (h = torch.Replace(h, f(h))) then holds one at a
// time instead of all of them until its scope closes. old must be the
// caller's own, not an input it was handed.
func Replace(old, next *Tensor) *Tensor {
	old.Free()
	return next
}
