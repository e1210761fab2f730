package torch

import "testing"

func TestAutocastCPUBFloat16(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := Randn(NewGenerator(1), 2, 8)
	w := Randn(NewGenerator(2), 4, 8).SetRequiresGrad(true)
	var inner, nested DType
	var wGrad *Tensor
	WithGrad(func() {
		Autocast(CPUDevice, BFloat16, func() {
			y := Linear(x, w, nil)
			inner = y.DType()
			Autocast(CPUDevice, BFloat16, func() { nested = Linear(x, w, nil).DType() })
			// Still on after the nested region closed.
			y = Linear(y, w.Narrow(1, 0, 4), nil)
			if y.DType() != BFloat16 {
				t.Errorf("after a nested region: %v, want bfloat16", y.DType())
			}
			y.To(Float32).Sum().Backward()
		})
		wGrad = w.Grad()
	})
	if inner != BFloat16 || nested != BFloat16 {
		t.Fatalf("linear under autocast gave %v (nested %v), want bfloat16", inner, nested)
	}
	if got := Linear(x, w.Detach(), nil).DType(); got != Float32 {
		t.Fatalf("linear after autocast gave %v, want float32", got)
	}
	if wGrad == nil || wGrad.DType() != Float32 {
		t.Fatalf("the float32 weight's gradient is %v, want float32", wGrad)
	}
}

func TestAutocastRefusesFullPrecision(t *testing.T) {
	e := mustPanicError(t, func() { Autocast(CPUDevice, Float64, func() { t.Error("ran f") }) })
	if e.Msg == "" {
		t.Fatal("no message")
	}
}

// A checkpointed block recomputed in backward, outside the autocast
// region, runs in the precision of its first run: its gradients equal
// those of the same block without checkpointing.
func TestCheckpointRecomputesUnderTheFirstRunsAutocast(t *testing.T) {
	s := NewScope()
	defer s.Close()
	grad := func(ckpt bool) []float64 {
		var g []float64
		WithGrad(func() {
			x := Randn(NewGenerator(1), 2, 8)
			w := Randn(NewGenerator(2), 8, 8).SetRequiresGrad(true)
			f := func(in []*Tensor) []*Tensor { return []*Tensor{Linear(in[0], w, nil).Tanh()} }
			var y *Tensor
			Autocast(CPUDevice, BFloat16, func() {
				if ckpt {
					y = Checkpoint(f, x)[0]
				} else {
					y = f([]*Tensor{x})[0]
				}
			})
			y.To(Float32).Mul(y.To(Float32)).Sum().Backward()
			g = f64s(w.Grad())
		})
		return g
	}
	assertClose(t, "weight gradient", grad(true), grad(false), 0)
}

// Autocast caches its low-precision copies of trainable weights while a
// region is open; a recomputation in backward must not leave its copies
// behind for the next step, after the optimizer changed the weights.
func TestCheckpointLeavesNoStaleAutocastCopies(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := Randn(NewGenerator(1), 2, 8)
	w := Randn(NewGenerator(2), 8, 8).SetRequiresGrad(true)
	f := func(in []*Tensor) []*Tensor { return []*Tensor{Linear(in[0], w, nil)} }
	WithGrad(func() {
		var y *Tensor
		Autocast(CPUDevice, BFloat16, func() { y = Checkpoint(f, x)[0] })
		y.To(Float32).Sum().Backward() // recomputes, outside the region
		NoGrad(func() { w.CopyFrom(w.MulScalar(2)) })
		var got, want []float64
		Autocast(CPUDevice, BFloat16, func() { got = f64s(Linear(x, w, nil).To(Float32)) })
		Autocast(CPUDevice, BFloat16, func() { want = f64s(Linear(x, w.Detach(), nil).To(Float32)) })
		assertClose(t, "output after the weight changed", got, want, 0)
	})
}
