package torch

/*
#include "lcptorch.h"
*/
import "C"

// SetRequiresGrad makes autograd record operations on a leaf tensor; it
// returns t for chaining.
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	v := C.int(0)
	if on {
		v = 1
	}
	if err := C.lt_set_requires_grad(t.c(), v); err != nil {
		fail("requires_grad_", err, t)
	}
	return t
}

// Detach is a tensor sharing t's storage, outside the autograd graph.
func (t *Tensor) Detach() *Tensor {
	var out C.lt_tensor
	if err := C.lt_detach(t.c(), &out); err != nil {
		fail("detach", err, t)
	}
	return wrap(out)
}

// Backward accumulates d t / d leaf into every leaf's Grad; t must be a scalar.
func (t *Tensor) Backward() { t.BackwardWith(nil, false) }

// BackwardWith back-propagates grad (nil for a scalar t), keeping the graph
// for another pass when retainGraph is true.
func (t *Tensor) BackwardWith(grad *Tensor, retainGraph bool) {
	r := C.int(0)
	if retainGraph {
		r = 1
	}
	if err := C.lt_backward(t.c(), grad.c(), r); err != nil {
		fail("backward", err, t, grad)
	}
}

// Grad is the gradient accumulated in a leaf, or nil when there is none.
// The returned tensor shares memory with the gradient libtorch keeps.
func (t *Tensor) Grad() *Tensor {
	var out C.lt_tensor
	if err := C.lt_grad(t.c(), &out); err != nil {
		fail("grad", err, t)
	}
	if out == nil {
		return nil
	}
	return wrap(out)
}

// ZeroGrad drops the accumulated gradient (set_to_none, as PyTorch 2.x).
func (t *Tensor) ZeroGrad() {
	if err := C.lt_zero_grad(t.c()); err != nil {
		fail("zero_grad", err, t)
	}
}

// GradOptions tune Grad.
type GradOptions struct {
	GradOutputs []*Tensor // weights of the outputs; nil for scalar outputs
	RetainGraph bool      // keep the graph for another backward pass
	CreateGraph bool      // make the gradients differentiable in turn
}

// Grad is torch.autograd.grad: the gradients of the outputs with respect to
// the inputs, without touching any leaf's Grad. An input the outputs do not
// depend on gets nil.
func Grad(outputs, inputs []*Tensor, o GradOptions) []*Tensor {
	if len(outputs) == 0 || len(inputs) == 0 {
		panic(&Error{Op: "autograd.grad", Msg: "needs at least one output and one input"})
	}
	outs := make([]C.lt_tensor, len(inputs))
	ho, hi := handles(outputs), handles(inputs)
	var hg *C.lt_tensor
	if o.GradOutputs != nil {
		if len(o.GradOutputs) != len(outputs) {
			panic(&Error{Op: "autograd.grad", Msg: "one grad output per output is needed"})
		}
		g := handles(o.GradOutputs)
		hg = &g[0]
	}
	r, c := C.int(0), C.int(0)
	if o.RetainGraph {
		r = 1
	}
	if o.CreateGraph {
		c = 1
	}
	if err := C.lt_autograd_grad(&ho[0], C.int(len(ho)), hg, &hi[0], C.int(len(hi)), r, c, &outs[0]); err != nil {
		fail("autograd.grad", err, append(outputs, inputs...)...)
	}
	grads := make([]*Tensor, len(outs))
	for i, h := range outs {
		if h != nil {
			grads[i] = wrap(h)
		}
	}
	return grads
}
