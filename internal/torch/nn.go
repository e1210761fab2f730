package torch

/*
#include "lcptorch.h"
*/
import "C"

import "runtime"

// Linear is x @ w^T + b; b may be nil.
func Linear(x, w, b *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_linear(x.c(), w.c(), b.c(), &out); err != nil {
		fail("linear", err, x, w, b)
	}
	return wrap(out)
}

// ConvOptions are conv2d's settings; zero values mean PyTorch's defaults
// (stride 1, padding 0, dilation 1, groups 1).
type ConvOptions struct {
	Stride, Padding, Dilation [2]int64
	Groups                    int64
}

// Conv2d is a 2-D convolution over (N, C, H, W); b may be nil.
func Conv2d(x, w, b *Tensor, o ConvOptions) *Tensor {
	stride, dilation := o.Stride, o.Dilation
	for i := range 2 {
		stride[i] = max(stride[i], 1)
		dilation[i] = max(dilation[i], 1)
	}
	padding := o.Padding
	groups := max(o.Groups, 1)
	var out C.lt_tensor
	err := C.lt_conv2d(x.c(), w.c(), b.c(), (*C.int64_t)(&stride[0]), (*C.int64_t)(&padding[0]),
		(*C.int64_t)(&dilation[0]), C.int64_t(groups), &out)
	if err != nil {
		fail("conv2d", err, x, w, b)
	}
	return wrap(out)
}

// Square2 is the [2]int64 of a square kernel, stride or padding.
func Square2(v int64) [2]int64 { return [2]int64{v, v} }

// GroupNorm normalises (N, C, ...) over groups of channels; w and b may be nil.
func GroupNorm(x *Tensor, groups int64, w, b *Tensor, eps float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_group_norm(x.c(), C.int64_t(groups), w.c(), b.c(), C.double(eps), &out); err != nil {
		fail("group_norm", err, x, w, b)
	}
	return wrap(out)
}

// LayerNorm normalises over the trailing dimensions given by shape; w and b may be nil.
func LayerNorm(x *Tensor, shape []int64, w, b *Tensor, eps float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_layer_norm(x.c(), shapePtr(shape), C.int(len(shape)), w.c(), b.c(), C.double(eps), &out); err != nil {
		fail("layer_norm", err, x, w, b)
	}
	return wrap(out)
}

// Softmax along dim.
func (t *Tensor) Softmax(dim int64) *Tensor { return t.softmax("softmax", dim, 0) }

// LogSoftmax along dim.
func (t *Tensor) LogSoftmax(dim int64) *Tensor { return t.softmax("log_softmax", dim, 1) }

func (t *Tensor) softmax(op string, dim int64, log C.int) *Tensor {
	var out C.lt_tensor
	if err := C.lt_softmax(t.c(), C.int64_t(dim), log, &out); err != nil {
		fail(op, err, t)
	}
	return wrap(out)
}

// Dropout zeroes elements with probability p and scales the rest by
// 1/(1-p) when train is true; it is the identity otherwise.
func Dropout(x *Tensor, p float64, train bool) *Tensor {
	tr := C.int(0)
	if train {
		tr = 1
	}
	var out C.lt_tensor
	if err := C.lt_dropout(x.c(), C.double(p), tr, &out); err != nil {
		fail("dropout", err, x)
	}
	return wrap(out)
}

// InterpolationMode is F.interpolate's mode.
type InterpolationMode int

const (
	Nearest      InterpolationMode = C.LT_NEAREST
	Bilinear     InterpolationMode = C.LT_BILINEAR
	Bicubic      InterpolationMode = C.LT_BICUBIC
	NearestExact InterpolationMode = C.LT_NEAREST_EXACT
)

// InterpolateOptions give either Size (output height, width) or Scale
// (factors for height, width), as F.interpolate takes size or scale_factor.
type InterpolateOptions struct {
	Mode         InterpolationMode
	Size         [2]int64
	Scale        [2]float64
	AlignCorners bool
	Antialias    bool
}

// Interpolate resizes (N, C, H, W) as torch.nn.functional.interpolate does.
func Interpolate(x *Tensor, o InterpolateOptions) *Tensor {
	var size *C.int64_t
	var scale *C.double
	size2, scale2 := o.Size, o.Scale
	if size2 != [2]int64{} {
		size = (*C.int64_t)(&size2[0])
	}
	if scale2 != [2]float64{} {
		scale = (*C.double)(&scale2[0])
	}
	ac, aa := C.int(0), C.int(0)
	if o.AlignCorners {
		ac = 1
	}
	if o.Antialias {
		aa = 1
	}
	var out C.lt_tensor
	err := C.lt_interpolate(x.c(), C.int(o.Mode), size, scale, ac, aa, &out)
	runtime.KeepAlive(&size2)
	runtime.KeepAlive(&scale2)
	if err != nil {
		fail("interpolate", err, x)
	}
	return wrap(out)
}

// AvgPool2d averages kernel-sized windows of (N, C, H, W); a zero stride means the kernel size.
func AvgPool2d(x *Tensor, kernel, stride, padding [2]int64) *Tensor {
	if stride == [2]int64{} {
		stride = kernel
	}
	var out C.lt_tensor
	err := C.lt_avg_pool2d(x.c(), (*C.int64_t)(&kernel[0]), (*C.int64_t)(&stride[0]), (*C.int64_t)(&padding[0]), &out)
	if err != nil {
		fail("avg_pool2d", err, x)
	}
	return wrap(out)
}

// Attention is softmax(q k^T * scale + mask) v over (..., L, E) queries and
// (..., S, E) keys and values. mask may be nil, additive (float) or boolean
// (true = attend) and broadcasts to (..., L, S); scale <= 0 means 1/sqrt(E).
// On libtorch 2.1 and later it runs the fused kernel.
func Attention(q, k, v, mask *Tensor, scale float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_attention(q.c(), k.c(), v.c(), mask.c(), C.double(scale), &out); err != nil {
		fail("attention", err, q, k, v, mask)
	}
	return wrap(out)
}

// AttentionProbs is Attention that also returns the attention probabilities
// softmax(q k^T * scale + mask), in the autograd graph (the box guidance
// differentiates a loss on them).
func AttentionProbs(q, k, v, mask *Tensor, scale float64) (out, probs *Tensor) {
	var o, p C.lt_tensor
	if err := C.lt_attention_probs(q.c(), k.c(), v.c(), mask.c(), C.double(scale), &o, &p); err != nil {
		fail("attention_probs", err, q, k, v, mask)
	}
	return wrap(o), wrap(p)
}
