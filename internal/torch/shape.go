package torch

/*
#include "lcptorch.h"
*/
import "C"

import "math"

// End stands for "to the end of the dimension" in Slice.
const End = math.MaxInt64

// Reshape returns a tensor with the same elements in the given shape (one
// size may be -1); a view when the memory layout allows it.
func (t *Tensor) Reshape(shape ...int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_reshape(t.c(), shapePtr(shape), C.int(len(shape)), &out); err != nil {
		fail("reshape", err, t)
	}
	return wrap(out)
}

// View is Reshape that refuses to copy.
func (t *Tensor) View(shape ...int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_view(t.c(), shapePtr(shape), C.int(len(shape)), &out); err != nil {
		fail("view", err, t)
	}
	return wrap(out)
}

// Permute reorders the dimensions.
func (t *Tensor) Permute(dims ...int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_permute(t.c(), shapePtr(dims), C.int(len(dims)), &out); err != nil {
		fail("permute", err, t)
	}
	return wrap(out)
}

// Transpose swaps two dimensions.
func (t *Tensor) Transpose(d0, d1 int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_transpose(t.c(), C.int64_t(d0), C.int64_t(d1), &out); err != nil {
		fail("transpose", err, t)
	}
	return wrap(out)
}

// Contiguous returns t laid out row-major in memory (t itself when it already is).
func (t *Tensor) Contiguous() *Tensor {
	var out C.lt_tensor
	if err := C.lt_contiguous(t.c(), &out); err != nil {
		fail("contiguous", err, t)
	}
	return wrap(out)
}

// Cat joins tensors along an existing dimension.
func Cat(ts []*Tensor, dim int64) *Tensor {
	var out C.lt_tensor
	hs := handles(ts)
	if len(hs) == 0 {
		hs = append(hs, nil)
	}
	if err := C.lt_cat(&hs[0], C.int(len(ts)), C.int64_t(dim), &out); err != nil {
		fail("cat", err, ts...)
	}
	return wrap(out)
}

// Stack joins tensors of one shape along a new dimension.
func Stack(ts []*Tensor, dim int64) *Tensor {
	var out C.lt_tensor
	hs := handles(ts)
	if len(hs) == 0 {
		hs = append(hs, nil)
	}
	if err := C.lt_stack(&hs[0], C.int(len(ts)), C.int64_t(dim), &out); err != nil {
		fail("stack", err, ts...)
	}
	return wrap(out)
}

// Chunk splits t into at most n views of equal size (the last may be smaller).
func (t *Tensor) Chunk(n int64, dim int64) []*Tensor {
	if n < 1 {
		panic(&Error{Op: "chunk", Inputs: t.describe(), Msg: "number of chunks must be at least 1"})
	}
	outs := make([]C.lt_tensor, n)
	var got C.int
	if err := C.lt_chunk(t.c(), C.int64_t(n), C.int64_t(dim), &outs[0], &got); err != nil {
		fail("chunk", err, t)
	}
	return wrapAll(outs[:got])
}

// Split cuts t into views of the given sizes along dim.
func (t *Tensor) Split(sizes []int64, dim int64) []*Tensor {
	if len(sizes) == 0 {
		panic(&Error{Op: "split", Inputs: t.describe(), Msg: "no sizes given"})
	}
	outs := make([]C.lt_tensor, len(sizes))
	if err := C.lt_split(t.c(), shapePtr(sizes), C.int(len(sizes)), C.int64_t(dim), &outs[0]); err != nil {
		fail("split", err, t)
	}
	return wrapAll(outs)
}

func wrapAll(hs []C.lt_tensor) []*Tensor {
	ts := make([]*Tensor, len(hs))
	for i, h := range hs {
		ts[i] = wrap(h)
	}
	return ts
}

// Narrow is the view of length elements from start along dim.
func (t *Tensor) Narrow(dim, start, length int64) *Tensor {
	return t.slice("narrow", dim, start, start+length, 1)
}

// Slice is the view t[start:end:step] along dim; End means to the end, and
// negative bounds count from the end, as in Python.
func (t *Tensor) Slice(dim, start, end, step int64) *Tensor {
	return t.slice("slice", dim, start, end, step)
}

func (t *Tensor) slice(op string, dim, start, end, step int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_slice(t.c(), C.int64_t(dim), C.int64_t(start), C.int64_t(end), C.int64_t(step), &out); err != nil {
		fail(op, err, t)
	}
	return wrap(out)
}

// Select is the view t[..., index, ...] at dim, which drops that dimension.
func (t *Tensor) Select(dim, index int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_select(t.c(), C.int64_t(dim), C.int64_t(index), &out); err != nil {
		fail("select", err, t)
	}
	return wrap(out)
}

// IndexSelect picks the entries at the i64 indices along dim.
func (t *Tensor) IndexSelect(dim int64, index *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_index_select(t.c(), C.int64_t(dim), index.c(), &out); err != nil {
		fail("index_select", err, t, index)
	}
	return wrap(out)
}

// Gather is out[i][j] = t[index[i][j]][j] for dim 0, and so on.
func (t *Tensor) Gather(dim int64, index *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_gather(t.c(), C.int64_t(dim), index.c(), &out); err != nil {
		fail("gather", err, t, index)
	}
	return wrap(out)
}

// Squeeze removes dimension dim if its size is 1.
func (t *Tensor) Squeeze(dim int64) *Tensor { return t.squeeze(dim, 0) }

// SqueezeAll removes every dimension of size 1.
func (t *Tensor) SqueezeAll() *Tensor { return t.squeeze(0, 1) }

func (t *Tensor) squeeze(dim int64, all C.int) *Tensor {
	var out C.lt_tensor
	if err := C.lt_squeeze(t.c(), C.int64_t(dim), all, &out); err != nil {
		fail("squeeze", err, t)
	}
	return wrap(out)
}

// Unsqueeze inserts a dimension of size 1 at dim.
func (t *Tensor) Unsqueeze(dim int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_unsqueeze(t.c(), C.int64_t(dim), &out); err != nil {
		fail("unsqueeze", err, t)
	}
	return wrap(out)
}

// Expand broadcasts size-1 dimensions to the given shape without copying
// (-1 keeps a size).
func (t *Tensor) Expand(shape ...int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_expand(t.c(), shapePtr(shape), C.int(len(shape)), &out); err != nil {
		fail("expand", err, t)
	}
	return wrap(out)
}

// Repeat tiles the tensor reps[i] times along dimension i (copying).
func (t *Tensor) Repeat(reps ...int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_repeat(t.c(), shapePtr(reps), C.int(len(reps)), &out); err != nil {
		fail("repeat", err, t)
	}
	return wrap(out)
}

// Flatten merges dimensions start..end (inclusive; negative counts from the end).
func (t *Tensor) Flatten(start, end int64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_flatten(t.c(), C.int64_t(start), C.int64_t(end), &out); err != nil {
		fail("flatten", err, t)
	}
	return wrap(out)
}
