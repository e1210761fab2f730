package guidance

import (
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// vmHWM is the process's peak resident set in MiB.
func vmHWM() float64 {
	mib, _ := torch.PeakRSS()
	return mib
}

// BenchmarkGuidedStep compares, on the real SD1.5 UNet (random weights, f32)
// at 64x64 latents (512x512 images), one plain classifier-free step's UNet
// call (batch 2, no grad) with one guided update (batch 1 forward recording
// the 16 attn2 maps, the loss, and the backward pass to the latent), and the
// forward half of the update alone. Each logs the process's peak RSS and
// the weights' share of it; freed memory stays with the allocator, so for
// clean peaks run each alone, e.g. -bench 'GuidedStep/guided-update'
// -benchtime 1x (minutes on a CPU).
func BenchmarkGuidedStep(b *testing.B) {
	u := unet.NewRandom(unet.SD15Config(), 0, 0.02, torch.Options{})
	defer u.Free()
	gen := torch.NewGenerator(1)
	defer gen.Close()
	z := torch.Persist(torch.Randn(gen, 1, 4, 64, 64))
	cond := torch.Persist(torch.Randn(gen, 1, 77, 768))
	defer z.Free()
	defer cond.Free()
	const t = 500
	g := &Guide{
		Subjects: []Subject{
			{Tokens: []int64{2}, Box: [4]float64{0.05, 0.3, 0.45, 0.95}},
			{Tokens: []int64{5}, Box: [4]float64{0.55, 0.3, 0.95, 0.95}},
		},
		Cond: cond, Probe: UNetProbe(u), Params: Params{Steps: 1},
	}
	weights := vmHWM()
	blasThreads := torch.BLAS().OpenBLASThreads

	run := func(name string, f func()) {
		b.Run(name, func(b *testing.B) {
			torch.NoGrad(f) // warm-up: first-touch allocations and kernels
			b.ResetTimer()
			torch.NoGrad(func() {
				for range b.N {
					f()
				}
			})
			b.StopTimer()
			b.Logf("peak RSS %.0f MiB, %.0f MiB of it before the first run (weights); %d threads, OpenBLAS %d threads",
				vmHWM(), weights, torch.NumThreads(), blasThreads)
		})
	}
	run("cfg-step", func() {
		s := torch.NewScope()
		defer s.Close()
		in := torch.Cat([]*torch.Tensor{z, z}, 0)
		u.Forward(in, torch.New([]int64{t}).Reshape(), torch.Cat([]*torch.Tensor{cond, cond}, 0))
	})
	run("guided-forward", func() {
		s := torch.NewScope()
		defer s.Close()
		torch.WithGrad(func() {
			leaf := z.Detach().SetRequiresGrad(true)
			Loss(CollectMaps(g.Probe, leaf, torch.New([]int64{t}).Reshape(), cond), g.Subjects)
		})
	})
	run("guided-update", func() { g.Step(0, 1, t, z).Free() })
}
