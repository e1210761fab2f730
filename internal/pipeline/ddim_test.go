package pipeline

import (
	"fmt"
	"math"
	"reflect"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// stepAtol bounds a DDIM step's error against diffusers. On the reference's
// libtorch the steps agree exactly; the README's suggestion is 1e-5.
const stepAtol = 1e-6

func newSD15DDIM(t *testing.T, steps int) *DDIM {
	t.Helper()
	d := NewDDIM(sd15Config(t))
	if err := d.SetTimesteps(steps); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDDIMTimestepsGolden(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	for _, steps := range []int{50, 4} {
		got := newSD15DDIM(t, steps).Timesteps()
		want := torch.Data[int64](golden.Tensor(t, f, fmt.Sprintf("timesteps_%d", steps)))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%d steps: timesteps %v, want %v", steps, got, want)
		}
	}
}

func TestDDIMTimestepSpacing(t *testing.T) {
	timesteps := func(spacing string, offset int64, steps int) []int64 {
		cfg := sd15Config(t)
		cfg.TimestepSpacing, cfg.StepsOffset = spacing, offset
		d := NewDDIM(cfg)
		if err := d.SetTimesteps(steps); err != nil {
			t.Fatal(err)
		}
		return d.Timesteps()
	}
	// The formulas of diffusers' set_timesteps, for 1000 training steps.
	trailing := func(steps int) (ts []int64) {
		ratio := 1000 / float64(steps)
		for v := 1000.0; v > 0; v -= ratio {
			ts = append(ts, int64(math.RoundToEven(v))-1)
		}
		return ts
	}
	linspace := func(steps int) (ts []int64) {
		for i := steps - 1; i >= 0; i-- {
			ts = append(ts, int64(math.RoundToEven(float64(i)*999/float64(steps-1))))
		}
		return ts
	}
	leading := func(steps int, offset int64) (ts []int64) {
		for i := steps - 1; i >= 0; i-- {
			ts = append(ts, int64(i*(1000/steps))+offset)
		}
		return ts
	}
	for _, c := range []struct {
		name      string
		got, want []int64
	}{
		{"trailing 50", timesteps("trailing", 1, 50), trailing(50)},
		{"trailing 4", timesteps("trailing", 1, 4), trailing(4)},
		{"trailing 7", timesteps("trailing", 0, 7), trailing(7)},
		{"trailing 1000", timesteps("trailing", 0, 1000), trailing(1000)},
		{"linspace 50", timesteps("linspace", 1, 50), linspace(50)},
		{"linspace 7", timesteps("linspace", 1, 7), linspace(7)},
		{"leading 7", timesteps("leading", 1, 7), leading(7, 1)},
		{"leading 1000", timesteps("leading", 0, 1000), leading(1000, 0)},
		// Values on .5 round to even, as numpy does.
		{"trailing 16", timesteps("trailing", 0, 16)[:4], []int64{999, 937, 874, 811}},
		{"trailing 3", timesteps("trailing", 0, 3), []int64{999, 666, 332}},
		{"linspace 3", timesteps("linspace", 0, 3), []int64{999, 500, 0}},
		{"linspace 1", timesteps("linspace", 0, 1), []int64{0}},
		{"leading 3", timesteps("leading", 1, 3), []int64{667, 334, 1}},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: timesteps %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDDIMSetTimestepsErrors(t *testing.T) {
	d := NewDDIM(sd15Config(t))
	for _, steps := range []int{0, -1, 1001} {
		if err := d.SetTimesteps(steps); err == nil {
			t.Errorf("SetTimesteps(%d): no error", steps)
		}
	}
	// Leading spacing with SD 1.5's steps_offset 1 would reach timestep 1000.
	if err := d.SetTimesteps(1000); err == nil {
		t.Error("SetTimesteps(1000) with steps_offset 1: no error")
	}
}

// TestDDIMStepGolden runs the golden 4-step eta-0 chain twice: each step from
// the golden input (the step alone), and from this scheduler's own previous
// output (the chain, where errors could build up).
func TestDDIMStepGolden(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	d := newSD15DDIM(t, 4)

	chained := golden.Tensor(t, f, "ddim_eta0.sample_0")
	for i, timestep := range d.Timesteps() {
		x := golden.Tensor(t, f, "ddim_eta0.sample_0")
		if i > 0 {
			x = golden.Tensor(t, f, fmt.Sprintf("ddim_eta0.prev_sample_%d", i-1))
		}
		eps := golden.Tensor(t, f, fmt.Sprintf("ddim_eta0.model_output_%d", i))
		wantPrev := golden.Tensor(t, f, fmt.Sprintf("ddim_eta0.prev_sample_%d", i))
		wantOriginal := golden.Tensor(t, f, fmt.Sprintf("ddim_eta0.pred_original_sample_%d", i))

		prev, original := d.Step(eps, timestep, x, 0, nil, nil)
		golden.Compare(t, fmt.Sprintf("step %d (t=%d) prev_sample", i, timestep), prev, wantPrev, stepAtol)
		golden.Compare(t, fmt.Sprintf("step %d (t=%d) pred_original_sample", i, timestep), original, wantOriginal, stepAtol)

		chained, _ = d.Step(eps, timestep, chained, 0, nil, nil)
		golden.Compare(t, fmt.Sprintf("chain step %d prev_sample", i), chained, wantPrev, stepAtol)
	}
}

func TestDDIMStepEta1Golden(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	d := newSD15DDIM(t, 4)
	timestep := torch.Data[int64](golden.Tensor(t, f, "ddim_eta1.timestep"))[0]

	prev, original := d.Step(golden.Tensor(t, f, "ddim_eta1.model_output"), timestep,
		golden.Tensor(t, f, "ddim_eta1.sample"), 1, nil, golden.Tensor(t, f, "ddim_eta1.variance_noise"))
	golden.Compare(t, "eta 1 prev_sample", prev, golden.Tensor(t, f, "ddim_eta1.prev_sample"), stepAtol)
	golden.Compare(t, "eta 1 pred_original_sample", original, golden.Tensor(t, f, "ddim_eta1.pred_original_sample"), stepAtol)
}

// stepReference is one DDIM step on float64 values, written from the
// formulas of the DDIM paper, for the prediction types diffusers supports.
func stepReference(kind string, out, x, alpha, alphaPrev float64, clip float64) (prev, original float64) {
	var eps float64
	switch kind {
	case PredictEpsilon:
		original, eps = (x-math.Sqrt(1-alpha)*out)/math.Sqrt(alpha), out
	case PredictSample:
		original, eps = out, (x-math.Sqrt(alpha)*out)/math.Sqrt(1-alpha)
	case PredictVelocity:
		original = math.Sqrt(alpha)*x - math.Sqrt(1-alpha)*out
		eps = math.Sqrt(alpha)*out + math.Sqrt(1-alpha)*x
	}
	if clip > 0 {
		original = max(-clip, min(clip, original))
	}
	return math.Sqrt(alphaPrev)*original + math.Sqrt(1-alphaPrev)*eps, original
}

func TestDDIMPredictionTypes(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	out := []float32{-1.5, -0.25, 0, 0.5, 2}
	x := []float32{0.3, -1.2, 0.7, 2.5, -0.1}
	for _, kind := range []string{PredictEpsilon, PredictSample, PredictVelocity} {
		for _, clip := range []float64{0, 1} {
			cfg := sd15Config(t)
			cfg.PredictionType, cfg.ClipSample, cfg.ClipSampleRange = kind, clip > 0, clip
			d := NewDDIM(cfg)
			if err := d.SetTimesteps(4); err != nil {
				t.Fatal(err)
			}
			const timestep = 501 // steps to 251
			alpha, alphaPrev := float64(d.alphasCumprod[501]), float64(d.alphasCumprod[251])

			prev, original := d.Step(torch.New(out), timestep, torch.New(x), 0, nil, nil)
			wantPrev, wantOriginal := make([]float64, len(x)), make([]float64, len(x))
			for i := range x {
				wantPrev[i], wantOriginal[i] = stepReference(kind, float64(out[i]), float64(x[i]), alpha, alphaPrev, clip)
			}
			name := fmt.Sprintf("%s clip %g", kind, clip)
			golden.Compare(t, name+" prev", prev, torch.New(wantPrev), 2e-6)
			golden.Compare(t, name+" pred_original", original, torch.New(wantOriginal), 2e-6)
		}
	}
}

// With set_alpha_to_one the last step lands on ᾱ = 1: the clean estimate.
func TestDDIMLastStepAlphaOne(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := sd15Config(t)
	cfg.SetAlphaToOne = true
	d := NewDDIM(cfg)
	if err := d.SetTimesteps(4); err != nil {
		t.Fatal(err)
	}
	prev, original := d.Step(torch.New([]float32{0.5, -1}), 1, torch.New([]float32{1, 2}), 0, nil, nil)
	golden.Compare(t, "prev = pred_original", prev, original, 0)
}

func TestDDIMSeededNoise(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	d := newSD15DDIM(t, 4)
	eps := golden.Tensor(t, f, "ddim_eta1.model_output")
	x := golden.Tensor(t, f, "ddim_eta1.sample")
	step := func(gen *torch.Generator, noise *torch.Tensor) *torch.Tensor {
		prev, _ := d.Step(eps, 501, x, 0.5, gen, noise)
		return prev
	}

	first := step(torch.NewGenerator(42), nil)
	golden.Compare(t, "same seed, same sample", step(torch.NewGenerator(42), nil), first, 0)
	// The noise is what torch.randn(shape, generator=...) draws, as in diffusers.
	noise := torch.Randn(torch.NewGenerator(42), eps.Shape()...)
	golden.Compare(t, "seeded draw = explicit noise", step(nil, noise), first, 0)
	if diff := step(torch.NewGenerator(43), nil).Sub(first).Abs().Amax().Item(); diff == 0 {
		t.Error("another seed gave the same sample")
	}
	if diff, _ := d.Step(eps, 501, x, 0, nil, nil); diff.Sub(first).Abs().Amax().Item() == 0 {
		t.Error("eta 0.5 added no noise")
	}
}

func TestDDIMStepErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Zeros(1, 4, 2, 2)
	unset := NewDDIM(sd15Config(t))
	if err := torch.Try(func() { unset.Step(x, 501, x, 0, nil, nil) }); err == nil {
		t.Error("Step before SetTimesteps: no error")
	}
	d := newSD15DDIM(t, 4)
	if err := torch.Try(func() { d.Step(x, 1000, x, 0, nil, nil) }); err == nil {
		t.Error("Step at timestep 1000: no error")
	}
	if err := torch.Try(func() { d.Step(x, 501, x, 1, torch.NewGenerator(0), x) }); err == nil {
		t.Error("Step with both a generator and variance noise: no error")
	}
}

// A sampling loop runs Step hundreds of times: only its results may stay.
func TestDDIMStepFreesIntermediates(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	d := newSD15DDIM(t, 4)
	x, eps := torch.Ones(1, 4, 8, 8), torch.Zeros(1, 4, 8, 8)
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	prev, original := d.Step(eps, 751, x, 1, torch.NewGenerator(0), nil)
	if live := torch.LiveTensors() - before; live != 2 {
		t.Errorf("Step left %d tensors alive, want its 2 results", live)
	}
	prev.Free()
	original.Free()
}
