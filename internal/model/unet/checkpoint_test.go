package unet

import (
	"math"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Gradient checkpointing changes what is kept, not what is computed: the
// output is plain backward's bit for bit, every weight's gradient up to the
// order in which its parts are summed.
func TestGradientCheckpointing(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadTiny(t)
	f, sample, ctx := goldenInputs(t)
	steps := golden.Tensor(t, f, "timesteps")
	weight := torch.Randn(torch.NewGenerator(3), sample.Shape()...)
	run := func(ckpt bool) (float64, map[string][]float64) {
		u.SetGradientCheckpointing(ckpt)
		defer u.SetGradientCheckpointing(false)
		grads := map[string][]float64{}
		var loss float64
		torch.WithGrad(func() {
			for _, p := range u.Params() {
				p.SetRequiresGrad(true)
			}
			l := u.Forward(sample, steps, ctx).Mul(weight).Sum()
			loss = l.Item()
			l.Backward()
			for k, p := range u.Params() {
				if g := p.Grad(); g != nil {
					grads[k] = g.Float64s()
				}
				p.ZeroGrad()
				p.SetRequiresGrad(false)
			}
		})
		return loss, grads
	}
	plainLoss, plain := run(false)
	ckptLoss, ckpt := run(true)
	if plainLoss != ckptLoss {
		t.Fatalf("loss %v checkpointed, %v plain", ckptLoss, plainLoss)
	}
	if len(plain) != len(u.Params()) || len(ckpt) != len(plain) {
		t.Fatalf("%d weights have gradients checkpointed, %d plain, of %d", len(ckpt), len(plain), len(u.Params()))
	}
	gmax, worst, worstK := 0.0, 0.0, ""
	for _, want := range plain {
		for _, v := range want {
			gmax = math.Max(gmax, math.Abs(v))
		}
	}
	for k, want := range plain {
		got := ckpt[k]
		for i := range want {
			if d := math.Abs(got[i] - want[i]); d > worst {
				worst, worstK = d, k
			}
		}
	}
	// The skips' and the time embedding's gradients arrive from several
	// blocks and are summed in another order: measured 2.5e-7 of the
	// largest gradient (conv_in.weight).
	if worst > 1e-6*gmax {
		t.Fatalf("%s differs by %g checkpointed, %.2g of the largest gradient", worstK, worst, worst/gmax)
	}
}
