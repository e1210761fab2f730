package unet

import (
	"os"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// peakRSS is the process's high-water resident set (VmHWM) in MiB.
func peakRSS() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "?"
}

// BenchmarkSD15Forward is one forward of the real-size UNet (random
// weights) on a 2x4x64x64 latent (CFG batch at 512x512), fp32, no grad.
func BenchmarkSD15Forward(b *testing.B) {
	l := nn.NewLoader("unet", nn.Empty{}, torch.Options{})
	l.Init = nn.RandomInit(0, 0.02)
	u := New(l.Root(), SD15Config())
	defer nn.Free(l.Params())
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
	b.Logf("threads %d, peak RSS %s", torch.NumThreads(), peakRSS())
}
