package torch

import (
	"math"
	"testing"
)

// gradcheck compares autograd's gradient of sum(f(inputs) * w), for a fixed
// random w, with central finite differences, in f64.
func gradcheck(t *testing.T, name string, inputs []*Tensor, f func(in []*Tensor) *Tensor) {
	t.Helper()
	s := NewScope()
	defer s.Close()
	values := make([][]float64, len(inputs))
	shapes := make([][]int64, len(inputs))
	for i, x := range inputs {
		values[i], shapes[i] = f64s(x), x.Shape()
	}
	build := func(grad bool) []*Tensor {
		in := make([]*Tensor, len(values))
		for i := range values {
			in[i] = New(values[i], shapes[i]...).SetRequiresGrad(grad)
		}
		return in
	}
	leaves := build(true)
	out := f(leaves)
	weight := randomF64(99, out.Shape()...)
	loss := func(in []*Tensor) *Tensor { return f(in).Mul(weight).Sum() }
	analytic := Grad([]*Tensor{loss(leaves)}, leaves, GradOptions{})

	const h = 1e-6
	for i := range values {
		if analytic[i] == nil {
			t.Fatalf("%s: no gradient for input %d", name, i)
		}
		numeric := make([]float64, len(values[i]))
		for j := range values[i] {
			orig := values[i][j]
			values[i][j] = orig + h
			up := Scoped(func() *Tensor { return loss(build(false)) }).Item()
			values[i][j] = orig - h
			down := Scoped(func() *Tensor { return loss(build(false)) }).Item()
			values[i][j] = orig
			numeric[j] = (up - down) / (2 * h)
		}
		assertClose(t, name+" grad", f64s(analytic[i]), numeric, 1e-6)
	}
}

func TestGradients(t *testing.T) {
	gradcheck(t, "linear", []*Tensor{randomF64(1, 3, 4), randomF64(2, 2, 4), randomF64(3, 2)},
		func(in []*Tensor) *Tensor { return Linear(in[0], in[1], in[2]) })
	gradcheck(t, "conv2d", []*Tensor{randomF64(4, 1, 4, 5, 5), randomF64(5, 4, 2, 3, 3), randomF64(6, 4)},
		func(in []*Tensor) *Tensor {
			return Conv2d(in[0], in[1], in[2], ConvOptions{Padding: Square2(1), Stride: Square2(2), Groups: 2})
		})
	gradcheck(t, "group_norm", []*Tensor{randomF64(7, 2, 4, 3, 3), randomF64(8, 4), randomF64(9, 4)},
		func(in []*Tensor) *Tensor { return GroupNorm(in[0], 2, in[1], in[2], 1e-5) })
	gradcheck(t, "layer_norm", []*Tensor{randomF64(10, 3, 6), randomF64(11, 6), randomF64(12, 6)},
		func(in []*Tensor) *Tensor { return LayerNorm(in[0], []int64{6}, in[1], in[2], 1e-5) })
	mask := randomF64(13, 3, 4)
	gradcheck(t, "attention", []*Tensor{randomF64(14, 2, 3, 5), randomF64(15, 2, 4, 5), randomF64(16, 2, 4, 5)},
		func(in []*Tensor) *Tensor { return Attention(in[0], in[1], in[2], mask, 0) })
	// The probabilities depend on q and k only; the box guidance differentiates them.
	v := randomF64(19, 2, 4, 5)
	gradcheck(t, "attention probs", []*Tensor{randomF64(17, 2, 3, 5), randomF64(18, 2, 4, 5)},
		func(in []*Tensor) *Tensor {
			_, p := AttentionProbs(in[0], in[1], v, mask, 0.7)
			return p
		})
	gradcheck(t, "interpolate bilinear", []*Tensor{randomF64(20, 1, 2, 3, 4)},
		func(in []*Tensor) *Tensor {
			return Interpolate(in[0], InterpolateOptions{Mode: Bilinear, Size: [2]int64{5, 7}})
		})
	gradcheck(t, "interpolate nearest", []*Tensor{randomF64(21, 1, 2, 3, 3)},
		func(in []*Tensor) *Tensor {
			return Interpolate(in[0], InterpolateOptions{Mode: Nearest, Scale: [2]float64{2, 2}})
		})
}

func TestBackwardAndLeafGrad(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := New([]float64{1, 2, 3}).SetRequiresGrad(true)
	if !x.RequiresGrad() || x.Grad() != nil {
		t.Fatal("fresh leaf")
	}
	y := x.Square().Sum() // dy/dx = 2x
	y.Backward()
	assertClose(t, "grad", f64s(x.Grad()), []float64{2, 4, 6}, 0)
	x.Square().Sum().Backward() // accumulates
	assertClose(t, "accumulated grad", f64s(x.Grad()), []float64{4, 8, 12}, 0)
	x.ZeroGrad()
	if x.Grad() != nil {
		t.Fatal("ZeroGrad left a gradient")
	}
	z := x.MulScalar(3)
	z.BackwardWith(New([]float64{1, 0, 2}), false)
	assertClose(t, "vector-Jacobian product", f64s(x.Grad()), []float64{3, 0, 6}, 0)
	if d := x.Detach(); d.RequiresGrad() {
		t.Fatal("detached tensor requires grad")
	}
	// autograd.grad leaves leaves alone and reports unused inputs as nil.
	x.ZeroGrad()
	unused := New([]float64{1}).SetRequiresGrad(true)
	g := Grad([]*Tensor{x.Exp().Sum()}, []*Tensor{x, unused}, GradOptions{})
	assertClose(t, "autograd.grad", f64s(g[0]), []float64{math.E, math.Exp(2), math.Exp(3)}, 1e-12)
	if g[1] != nil || x.Grad() != nil {
		t.Fatal("autograd.grad touched leaves or invented a gradient")
	}
}
