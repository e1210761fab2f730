package unet

import (
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// BenchmarkSD15Forward is one forward of the real-size UNet (random
// weights) on a 2x4x64x64 latent (CFG batch at 512x512), fp32, no grad.
func BenchmarkSD15Forward(b *testing.B) {
	u := NewRandom(SD15Config(), 0, 0.02, torch.Options{})
	defer u.Free()
	g := torch.NewGenerator(1)
	sample := torch.Randn(g, 2, 4, 64, 64)
	ctx := torch.Randn(g, 2, 77, 768)
	ts := torch.New([]int64{500})
	b.ResetTimer()
	torch.NoGrad(func() {
		for range b.N {
			u.Forward(sample, ts, ctx).Free()
		}
	})
	b.StopTimer()
	peak, err := torch.PeakRSS()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("threads %d, peak RSS %.0f MiB", torch.NumThreads(), peak)
}
