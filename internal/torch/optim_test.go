package torch

import (
	"math"
	"testing"
)

func TestAdamWStepMatchesDefinition(t *testing.T) {
	s := NewScope()
	defer s.Close()
	p := New([]float64{1, -2, 3}).SetRequiresGrad(true)
	o := DefaultAdamW(0.1)
	opt := NewAdamW([]*Tensor{p}, o)
	defer opt.Close()

	want := []float64{1, -2, 3}
	m, v := make([]float64, 3), make([]float64, 3)
	for step := 1; step <= 3; step++ {
		opt.ZeroGrad()
		p.Square().Sum().Backward() // g = 2p
		opt.Step()
		// torch.optim.AdamW, decoupled weight decay first.
		for i := range want {
			g := 2 * want[i]
			want[i] *= 1 - o.LR*o.WeightDecay
			m[i] = o.Beta1*m[i] + (1-o.Beta1)*g
			v[i] = o.Beta2*v[i] + (1-o.Beta2)*g*g
			mhat := m[i] / (1 - math.Pow(o.Beta1, float64(step)))
			vhat := v[i] / (1 - math.Pow(o.Beta2, float64(step)))
			want[i] -= o.LR * mhat / (math.Sqrt(vhat) + o.Eps)
		}
		assertClose(t, "adamw step", f64s(p.Detach()), want, 1e-12)
	}
	if p.Grad() == nil {
		t.Fatal("Step dropped the gradient")
	}
	opt.ZeroGrad()
	if p.Grad() != nil {
		t.Fatal("ZeroGrad kept a gradient")
	}
}

func TestAdamWStateRoundTrip(t *testing.T) {
	s := NewScope()
	defer s.Close()
	target := New([]float64{0.5, -1, 2, 0})
	train := func(p *Tensor, opt *AdamW, steps int) {
		for range steps {
			opt.ZeroGrad()
			Scoped(func() *Tensor { return p.Sub(target).Square().Sum() }).Backward()
			opt.Step()
		}
	}
	a := Zeros(4).SetRequiresGrad(true)
	optA := NewAdamW([]*Tensor{a}, DefaultAdamW(0.05))
	train(a, optA, 3)
	state := optA.State()

	// A second optimizer on a copy of the parameters, restored from the state,
	// continues exactly as the first.
	b := a.Detach().Clone().SetRequiresGrad(true)
	optB := NewAdamW([]*Tensor{b}, DefaultAdamW(0.05))
	if err := optB.LoadState(state); err != nil {
		t.Fatal(err)
	}
	train(a, optA, 2)
	train(b, optB, 2)
	assertClose(t, "resumed parameters", f64s(b.Detach()), f64s(a.Detach()), 0)

	// Without the state, the same steps land elsewhere.
	c := a.Detach().Clone().SetRequiresGrad(true)
	optC := NewAdamW([]*Tensor{c}, DefaultAdamW(0.05))
	train(c, optC, 1)
	train(b, optB, 1)
	if f64s(c.Detach())[0] == f64s(b.Detach())[0] {
		t.Fatal("optimizer state made no difference")
	}

	optA.SetLR(0)
	before := f64s(a.Detach())
	train(a, optA, 1)
	after := f64s(a.Detach())
	for i := range before {
		// lr 0: neither the update nor the weight decay moves anything.
		if before[i] != after[i] {
			t.Fatalf("SetLR(0) still moved parameter %d: %v -> %v", i, before[i], after[i])
		}
	}

	if err := optB.LoadState([]byte("not an archive")); err == nil {
		t.Fatal("garbage optimizer state accepted")
	}
	if err := optB.LoadState(nil); err == nil {
		t.Fatal("empty optimizer state accepted")
	}
}
