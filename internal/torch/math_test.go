package torch

import (
	"math"
	"testing"
)

func TestElementwise(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := New([]float64{1, 2, 3, 4, 5, 6}, 2, 3)
	row := New([]float64{10, 20, 30})
	col := New([]float64{1, 2}, 2, 1)

	assertClose(t, "add broadcast", f64s(a.Add(row)), []float64{11, 22, 33, 14, 25, 36}, 0)
	assertClose(t, "sub broadcast", f64s(a.Sub(col)), []float64{0, 1, 2, 2, 3, 4}, 0)
	assertClose(t, "mul", f64s(a.Mul(col)), []float64{1, 2, 3, 8, 10, 12}, 0)
	assertClose(t, "div", f64s(row.Div(New([]float64{10, 10, 15}))), []float64{1, 2, 2}, 0)
	assertClose(t, "pow", f64s(col.Pow(New([]float64{3}))), []float64{1, 8}, 0)
	assertClose(t, "scalars", f64s(col.AddScalar(1).MulScalar(3).SubScalar(1).DivScalar(2)), []float64{2.5, 4}, 0)
	assertClose(t, "rsub rdiv rpow", f64s(Cat([]*Tensor{col.Rsub(1), col.Rdiv(1), col.Rpow(2)}, 0)), []float64{0, -1, 1, 0.5, 2, 4}, 0)
	assertClose(t, "add_scaled", f64s(row.AddScaled(row, -0.5)), []float64{5, 10, 15}, 0)
	assertClose(t, "maximum", f64s(row.Maximum(New([]float64{15}))), []float64{15, 20, 30}, 0)
	assertClose(t, "minimum", f64s(row.Minimum(New([]float64{15}))), []float64{10, 15, 15}, 0)

	v := New([]float64{-2, -0.5, 0.5, 2})
	apply := func(f func(float64) float64) []float64 {
		out := make([]float64, 4)
		for i, x := range []float64{-2, -0.5, 0.5, 2} {
			out[i] = f(x)
		}
		return out
	}
	sigmoid := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	for _, c := range []struct {
		name string
		got  *Tensor
		want func(float64) float64
	}{
		{"abs", v.Abs(), math.Abs},
		{"neg", v.Neg(), func(x float64) float64 { return -x }},
		{"exp", v.Exp(), math.Exp},
		{"sin", v.Sin(), math.Sin},
		{"cos", v.Cos(), math.Cos},
		{"tanh", v.Tanh(), math.Tanh},
		{"sigmoid", v.Sigmoid(), sigmoid},
		{"silu", v.SiLU(), func(x float64) float64 { return x * sigmoid(x) }},
		{"relu", v.ReLU(), func(x float64) float64 { return math.Max(x, 0) }},
		{"gelu", v.GELU(), func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }},
		{"gelu_tanh", v.GELUTanh(), func(x float64) float64 {
			return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
		}},
		{"quick_gelu", v.QuickGELU(), func(x float64) float64 { return x * sigmoid(1.702*x) }},
		{"square", v.Square(), func(x float64) float64 { return x * x }},
		{"erf", v.Erf(), math.Erf},
		{"floor", v.Floor(), math.Floor},
		{"sqrt of abs", v.Abs().Sqrt(), func(x float64) float64 { return math.Sqrt(math.Abs(x)) }},
		{"rsqrt of abs", v.Abs().Rsqrt(), func(x float64) float64 { return 1 / math.Sqrt(math.Abs(x)) }},
		{"log of abs", v.Abs().Log(), func(x float64) float64 { return math.Log(math.Abs(x)) }},
		{"clamp", v.Clamp(-1, 1), func(x float64) float64 { return math.Max(-1, math.Min(1, x)) }},
		{"clamp_min", v.ClampMin(0), func(x float64) float64 { return math.Max(0, x) }},
		{"clamp_max", v.ClampMax(0), func(x float64) float64 { return math.Min(0, x) }},
		{"pow scalar", v.PowScalar(2), func(x float64) float64 { return x * x }},
		{"reciprocal", v.Reciprocal(), func(x float64) float64 { return 1 / x }},
	} {
		assertClose(t, c.name, f64s(c.got), apply(c.want), 1e-12)
	}

	gt := v.GtScalar(0)
	if gt.DType() != Bool {
		t.Fatalf("comparison dtype %v", gt.DType())
	}
	assertClose(t, "gt", f64s(gt), []float64{0, 0, 1, 1}, 0)
	assertClose(t, "le", f64s(v.Le(New([]float64{-0.5}))), []float64{1, 1, 0, 0}, 0)
	assertClose(t, "eq", f64s(v.EqScalar(0.5)), []float64{0, 0, 1, 0}, 0)
	assertClose(t, "not", f64s(gt.LogicalNot()), []float64{1, 1, 0, 0}, 0)
	assertClose(t, "and", f64s(gt.LogicalAnd(v.LtScalar(1))), []float64{0, 0, 1, 0}, 0)
	assertClose(t, "where", f64s(Where(gt, v, ZerosLike(v))), []float64{0, 0, 0.5, 2}, 0)
	assertClose(t, "masked_fill", f64s(v.MaskedFill(gt, 9)), []float64{-2, -0.5, 9, 9}, 0)
}

func TestReductions(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := New([]float64{1, 5, 3, 4, 2, 6}, 2, 3)

	assertClose(t, "sum all", f64s(x.Sum()), []float64{21}, 0)
	assertClose(t, "sum dim 1", f64s(x.Sum(1)), []float64{9, 12}, 0)
	assertShape(t, "sum keepdim", x.SumKeepDim(1), 2, 1)
	assertShape(t, "mean keepdim all", x.MeanKeepDim(), 1, 1)
	assertClose(t, "mean dim 0", f64s(x.Mean(0)), []float64{2.5, 3.5, 4.5}, 0)
	assertClose(t, "amax", f64s(x.Amax(1)), []float64{5, 6}, 0)
	assertClose(t, "amin", f64s(x.Amin(0)), []float64{1, 2, 3}, 0)
	assertClose(t, "var unbiased", f64s(x.Var(1)), []float64{4, 4}, 1e-12)
	assertClose(t, "var biased", f64s(x.VarBiased(1)), []float64{8.0 / 3, 8.0 / 3}, 1e-12)
	assertClose(t, "std", f64s(x.Std(1)), []float64{2, 2}, 1e-12)
	assertClose(t, "prod", f64s(x.Prod(1)), []float64{15, 48}, 0)
	assertClose(t, "norm", f64s(New([]float64{3, 4}).Norm()), []float64{5}, 1e-12)
	assertClose(t, "argmax dim", f64s(x.Argmax(1)), []float64{1, 2}, 0)
	assertClose(t, "argmax flat", f64s(x.Argmax()), []float64{5}, 0)
	assertClose(t, "argmin", f64s(x.Argmin(0)), []float64{0, 1, 0}, 0)
	vals, idx := x.Max(0, true)
	assertShape(t, "max keepdim", vals, 1, 3)
	assertClose(t, "max values", f64s(vals), []float64{4, 5, 6}, 0)
	assertClose(t, "max indices", f64s(idx), []float64{1, 0, 1}, 0)
	if got := x.Sum().Item(); got != 21 {
		t.Fatalf("item %v", got)
	}
}

func TestMatrixProducts(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := New([]float64{1, 2, 3, 4}, 2, 2)
	b := New([]float64{5, 6, 7, 8}, 2, 2)
	assertClose(t, "matmul", f64s(a.Matmul(b)), []float64{19, 22, 43, 50}, 0)
	assertClose(t, "matmul vector", f64s(a.Matmul(New([]float64{1, 1}))), []float64{3, 7}, 0)
	ab, bb := a.Unsqueeze(0).Repeat(3, 1, 1), b.Unsqueeze(0).Repeat(3, 1, 1)
	assertShape(t, "bmm", ab.Bmm(bb), 3, 2, 2)
	assertClose(t, "bmm[2]", f64s(ab.Bmm(bb).Select(0, 2)), []float64{19, 22, 43, 50}, 0)
	got := Baddbmm(OnesLike(ab), ab, bb, 0.5, 2).Select(0, 1)
	assertClose(t, "baddbmm", f64s(got), []float64{38.5, 44.5, 86.5, 100.5}, 0)
	// The 1.13 trap: beta = 0 over zeros must give exactly alpha*(a@b), no NaN.
	got = Baddbmm(ZerosLike(ab), ab, bb, 0, 0.5).Select(0, 0)
	assertClose(t, "baddbmm beta 0", f64s(got), []float64{9.5, 11, 21.5, 25}, 0)
}
