package pipeline

import (
	"math"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestDDPMAddNoiseGolden(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	d := NewDDPM(sd15Config(t))

	got := d.AddNoise(golden.Tensor(t, f, "add_noise.original_samples"), golden.Tensor(t, f, "add_noise.noise"),
		golden.Tensor(t, f, "add_noise.timesteps"))
	golden.Compare(t, "add_noise at [0 10 500 999]", got, golden.Tensor(t, f, "add_noise.noisy_samples"), stepAtol)
	golden.Compare(t, "AlphasCumprod", d.AlphasCumprod(), golden.Tensor(t, f, "alphas_cumprod"), 0)
}

// TestDDPMVelocity checks get_velocity against its formula, and AddNoise on
// a sample of another rank.
func TestDDPMVelocity(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	d := NewDDPM(sd15Config(t))
	sample := []float32{0.5, -1, 2, 0.25, -0.75, 1.5}
	noise := []float32{-0.3, 0.8, 0.1, 1.2, -2, 0.4}
	timesteps := []int64{999, 20}
	alphas := torch.Data[float32](d.AlphasCumprod())

	wantVelocity, wantNoisy := make([]float64, len(sample)), make([]float64, len(sample))
	for i := range sample {
		alpha := float64(alphas[timesteps[i/3]])
		x0, eps := float64(sample[i]), float64(noise[i])
		wantVelocity[i] = math.Sqrt(alpha)*eps - math.Sqrt(1-alpha)*x0
		wantNoisy[i] = math.Sqrt(alpha)*x0 + math.Sqrt(1-alpha)*eps
	}
	x, n, ts := torch.New(sample, 2, 3), torch.New(noise, 2, 3), torch.New(timesteps)
	golden.Compare(t, "velocity", d.Velocity(x, n, ts), torch.New(wantVelocity, 2, 3), 2e-7)
	golden.Compare(t, "add_noise rank 2", d.AddNoise(x, n, ts), torch.New(wantNoisy, 2, 3), 2e-7)
}
