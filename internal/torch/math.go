package torch

/*
#include "lcptorch.h"
*/
import "C"

// Elementwise operations broadcast as PyTorch does.

func (t *Tensor) unary(op string, code C.int) *Tensor {
	var out C.lt_tensor
	if err := C.lt_unary(code, t.c(), &out); err != nil {
		fail(op, err, t)
	}
	return wrap(out)
}

func (t *Tensor) Neg() *Tensor        { return t.unary("neg", C.LT_NEG) }
func (t *Tensor) Abs() *Tensor        { return t.unary("abs", C.LT_ABS) }
func (t *Tensor) Sqrt() *Tensor       { return t.unary("sqrt", C.LT_SQRT) }
func (t *Tensor) Rsqrt() *Tensor      { return t.unary("rsqrt", C.LT_RSQRT) }
func (t *Tensor) Exp() *Tensor        { return t.unary("exp", C.LT_EXP) }
func (t *Tensor) Log() *Tensor        { return t.unary("log", C.LT_LOG) }
func (t *Tensor) Sin() *Tensor        { return t.unary("sin", C.LT_SIN) }
func (t *Tensor) Cos() *Tensor        { return t.unary("cos", C.LT_COS) }
func (t *Tensor) Sigmoid() *Tensor    { return t.unary("sigmoid", C.LT_SIGMOID) }
func (t *Tensor) Tanh() *Tensor       { return t.unary("tanh", C.LT_TANH) }
func (t *Tensor) SiLU() *Tensor       { return t.unary("silu", C.LT_SILU) }
func (t *Tensor) ReLU() *Tensor       { return t.unary("relu", C.LT_RELU) }
func (t *Tensor) Square() *Tensor     { return t.unary("square", C.LT_SQUARE) }
func (t *Tensor) Floor() *Tensor      { return t.unary("floor", C.LT_FLOOR) }
func (t *Tensor) Ceil() *Tensor       { return t.unary("ceil", C.LT_CEIL) }
func (t *Tensor) Round() *Tensor      { return t.unary("round", C.LT_ROUND) }
func (t *Tensor) LogicalNot() *Tensor { return t.unary("logical_not", C.LT_LOGICAL_NOT) }
func (t *Tensor) Reciprocal() *Tensor { return t.unary("reciprocal", C.LT_RECIPROCAL) }
func (t *Tensor) Erf() *Tensor        { return t.unary("erf", C.LT_ERF) }

// GELU is the exact, erf-based GELU.
func (t *Tensor) GELU() *Tensor { return t.unary("gelu", C.LT_GELU) }

// GELUTanh is GELU with the tanh approximation (approximate="tanh").
func (t *Tensor) GELUTanh() *Tensor { return t.unary("gelu_tanh", C.LT_GELU_TANH) }

// QuickGELU is x*sigmoid(1.702x), the activation of OpenAI's CLIP.
func (t *Tensor) QuickGELU() *Tensor { return t.unary("quick_gelu", C.LT_QUICK_GELU) }

func (t *Tensor) binary(op string, code C.int, o *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_binary(code, t.c(), o.c(), &out); err != nil {
		fail(op, err, t, o)
	}
	return wrap(out)
}

func (t *Tensor) Add(o *Tensor) *Tensor        { return t.binary("add", C.LT_ADD, o) }
func (t *Tensor) Sub(o *Tensor) *Tensor        { return t.binary("sub", C.LT_SUB, o) }
func (t *Tensor) Mul(o *Tensor) *Tensor        { return t.binary("mul", C.LT_MUL, o) }
func (t *Tensor) Div(o *Tensor) *Tensor        { return t.binary("div", C.LT_DIV, o) }
func (t *Tensor) Pow(o *Tensor) *Tensor        { return t.binary("pow", C.LT_POW, o) }
func (t *Tensor) Maximum(o *Tensor) *Tensor    { return t.binary("maximum", C.LT_MAXIMUM, o) }
func (t *Tensor) Minimum(o *Tensor) *Tensor    { return t.binary("minimum", C.LT_MINIMUM, o) }
func (t *Tensor) Eq(o *Tensor) *Tensor         { return t.binary("eq", C.LT_EQ, o) }
func (t *Tensor) Ne(o *Tensor) *Tensor         { return t.binary("ne", C.LT_NE, o) }
func (t *Tensor) Lt(o *Tensor) *Tensor         { return t.binary("lt", C.LT_LT, o) }
func (t *Tensor) Le(o *Tensor) *Tensor         { return t.binary("le", C.LT_LE, o) }
func (t *Tensor) Gt(o *Tensor) *Tensor         { return t.binary("gt", C.LT_GT, o) }
func (t *Tensor) Ge(o *Tensor) *Tensor         { return t.binary("ge", C.LT_GE, o) }
func (t *Tensor) LogicalAnd(o *Tensor) *Tensor { return t.binary("logical_and", C.LT_LOGICAL_AND, o) }
func (t *Tensor) LogicalOr(o *Tensor) *Tensor  { return t.binary("logical_or", C.LT_LOGICAL_OR, o) }
func (t *Tensor) Atan2(o *Tensor) *Tensor      { return t.binary("atan2", C.LT_ATAN2, o) }
func (t *Tensor) Remainder(o *Tensor) *Tensor  { return t.binary("remainder", C.LT_REMAINDER, o) }

func (t *Tensor) scalar(op string, code C.int, s float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_binary_scalar(code, t.c(), C.double(s), &out); err != nil {
		fail(op, err, t)
	}
	return wrap(out)
}

// The ...Scalar forms take a Python number; the result keeps t's dtype.
func (t *Tensor) AddScalar(s float64) *Tensor { return t.scalar("add", C.LT_ADD, s) }
func (t *Tensor) SubScalar(s float64) *Tensor { return t.scalar("sub", C.LT_SUB, s) }
func (t *Tensor) MulScalar(s float64) *Tensor { return t.scalar("mul", C.LT_MUL, s) }
func (t *Tensor) DivScalar(s float64) *Tensor { return t.scalar("div", C.LT_DIV, s) }
func (t *Tensor) PowScalar(s float64) *Tensor { return t.scalar("pow", C.LT_POW, s) }
func (t *Tensor) EqScalar(s float64) *Tensor  { return t.scalar("eq", C.LT_EQ, s) }
func (t *Tensor) NeScalar(s float64) *Tensor  { return t.scalar("ne", C.LT_NE, s) }
func (t *Tensor) LtScalar(s float64) *Tensor  { return t.scalar("lt", C.LT_LT, s) }
func (t *Tensor) LeScalar(s float64) *Tensor  { return t.scalar("le", C.LT_LE, s) }
func (t *Tensor) GtScalar(s float64) *Tensor  { return t.scalar("gt", C.LT_GT, s) }
func (t *Tensor) GeScalar(s float64) *Tensor  { return t.scalar("ge", C.LT_GE, s) }

// Rsub is s - t, Rdiv s / t and Rpow s ** t.
func (t *Tensor) Rsub(s float64) *Tensor { return t.scalar("rsub", C.LT_RSUB, s) }
func (t *Tensor) Rdiv(s float64) *Tensor { return t.scalar("rdiv", C.LT_RDIV, s) }
func (t *Tensor) Rpow(s float64) *Tensor { return t.scalar("rpow", C.LT_RPOW, s) }

// AddScaled is t + alpha*o in one kernel (torch.add(t, o, alpha=alpha)).
func (t *Tensor) AddScaled(o *Tensor, alpha float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_add_scaled(t.c(), o.c(), C.double(alpha), &out); err != nil {
		fail("add_scaled", err, t, o)
	}
	return wrap(out)
}

// Where picks a where cond is true and b elsewhere.
func Where(cond, a, b *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_where(cond.c(), a.c(), b.c(), &out); err != nil {
		fail("where", err, cond, a, b)
	}
	return wrap(out)
}

// Clamp limits every element to [lo, hi].
func (t *Tensor) Clamp(lo, hi float64) *Tensor { return t.clamp(lo, hi, 1, 1) }

// ClampMin limits every element to at least lo; ClampMax to at most hi.
func (t *Tensor) ClampMin(lo float64) *Tensor { return t.clamp(lo, 0, 1, 0) }
func (t *Tensor) ClampMax(hi float64) *Tensor { return t.clamp(0, hi, 0, 1) }

func (t *Tensor) clamp(lo, hi float64, hasLo, hasHi C.int) *Tensor {
	var out C.lt_tensor
	if err := C.lt_clamp(t.c(), C.double(lo), C.double(hi), hasLo, hasHi, &out); err != nil {
		fail("clamp", err, t)
	}
	return wrap(out)
}

// MaskedFill sets the elements where mask is true to v.
func (t *Tensor) MaskedFill(mask *Tensor, v float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_masked_fill(t.c(), mask.c(), C.double(v), &out); err != nil {
		fail("masked_fill", err, t, mask)
	}
	return wrap(out)
}

// Reductions: with no dims they reduce over every dimension.

func (t *Tensor) reduce(op string, code C.int, keepdim bool, dims []int64) *Tensor {
	var out C.lt_tensor
	k := C.int(0)
	if keepdim {
		k = 1
	}
	if err := C.lt_reduce(code, t.c(), shapePtr(dims), C.int(len(dims)), k, &out); err != nil {
		fail(op, err, t)
	}
	return wrap(out)
}

func (t *Tensor) Sum(dims ...int64) *Tensor         { return t.reduce("sum", C.LT_SUM, false, dims) }
func (t *Tensor) SumKeepDim(dims ...int64) *Tensor  { return t.reduce("sum", C.LT_SUM, true, dims) }
func (t *Tensor) Mean(dims ...int64) *Tensor        { return t.reduce("mean", C.LT_MEAN, false, dims) }
func (t *Tensor) MeanKeepDim(dims ...int64) *Tensor { return t.reduce("mean", C.LT_MEAN, true, dims) }
func (t *Tensor) Amax(dims ...int64) *Tensor        { return t.reduce("amax", C.LT_AMAX, false, dims) }
func (t *Tensor) AmaxKeepDim(dims ...int64) *Tensor { return t.reduce("amax", C.LT_AMAX, true, dims) }
func (t *Tensor) Amin(dims ...int64) *Tensor        { return t.reduce("amin", C.LT_AMIN, false, dims) }
func (t *Tensor) AminKeepDim(dims ...int64) *Tensor { return t.reduce("amin", C.LT_AMIN, true, dims) }
func (t *Tensor) Prod(dims ...int64) *Tensor        { return t.reduce("prod", C.LT_PROD, false, dims) }
func (t *Tensor) Norm(dims ...int64) *Tensor        { return t.reduce("norm", C.LT_NORM2, false, dims) }
func (t *Tensor) NormKeepDim(dims ...int64) *Tensor { return t.reduce("norm", C.LT_NORM2, true, dims) }

// Var is the unbiased variance (torch.var's default); VarBiased divides by N.
func (t *Tensor) Var(dims ...int64) *Tensor { return t.reduce("var", C.LT_VAR, false, dims) }
func (t *Tensor) VarKeepDim(dims ...int64) *Tensor {
	return t.reduce("var", C.LT_VAR, true, dims)
}
func (t *Tensor) VarBiased(dims ...int64) *Tensor {
	return t.reduce("var", C.LT_VAR_BIASED, false, dims)
}
func (t *Tensor) Std(dims ...int64) *Tensor { return t.reduce("std", C.LT_STD, false, dims) }
func (t *Tensor) StdKeepDim(dims ...int64) *Tensor {
	return t.reduce("std", C.LT_STD, true, dims)
}

// Argmax and Argmin give i64 indices along dim (of the flattened tensor
// when no dim is given).
func (t *Tensor) Argmax(dim ...int64) *Tensor { return t.reduce("argmax", C.LT_ARGMAX, false, dim) }
func (t *Tensor) Argmin(dim ...int64) *Tensor { return t.reduce("argmin", C.LT_ARGMIN, false, dim) }

// Max is the largest value along dim and its index.
func (t *Tensor) Max(dim int64, keepdim bool) (values, indices *Tensor) {
	var v, i C.lt_tensor
	k := C.int(0)
	if keepdim {
		k = 1
	}
	if err := C.lt_max_dim(t.c(), C.int64_t(dim), k, &v, &i); err != nil {
		fail("max", err, t)
	}
	return wrap(v), wrap(i)
}

// Matmul is torch.matmul: batched and broadcast matrix products.
func (t *Tensor) Matmul(o *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_matmul(t.c(), o.c(), &out); err != nil {
		fail("matmul", err, t, o)
	}
	return wrap(out)
}

// Bmm multiplies two (B, n, m) x (B, m, p) batches.
func (t *Tensor) Bmm(o *Tensor) *Tensor {
	var out C.lt_tensor
	if err := C.lt_bmm(t.c(), o.c(), &out); err != nil {
		fail("bmm", err, t, o)
	}
	return wrap(out)
}

// Baddbmm is beta*input + alpha*(a @ b). Start input from zeros, never an
// uninitialised tensor: libtorch 1.13 reads it even with beta = 0.
func Baddbmm(input, a, b *Tensor, beta, alpha float64) *Tensor {
	var out C.lt_tensor
	if err := C.lt_baddbmm(input.c(), a.c(), b.c(), C.double(beta), C.double(alpha), &out); err != nil {
		fail("baddbmm", err, input, a, b)
	}
	return wrap(out)
}
