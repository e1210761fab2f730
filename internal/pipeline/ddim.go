package pipeline

import (
	"fmt"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// DDIM is diffusers' DDIMScheduler (v0.27.2): denoising diffusion implicit
// models, deterministic at eta 0. Its scalar arithmetic is done in float32 in
// the order diffusers does it on 0-dim float32 tensors, so a step reproduces
// diffusers' output bit for bit on the same libtorch.
type DDIM struct {
	config            SchedulerConfig
	alphasCumprod     []float32
	finalAlphaCumprod float32 // ᾱ "before" timestep 0, used by the last step
	inferenceSteps    int64
	timesteps         []int64
}

// NewDDIM makes a DDIM scheduler. It panics if cfg does not Validate; a
// config from LoadSchedulerConfig always does.
func NewDDIM(cfg SchedulerConfig) *DDIM {
	if err := cfg.Validate(); err != nil {
		panic("pipeline: NewDDIM: " + err.Error())
	}
	d := &DDIM{config: cfg, alphasCumprod: cfg.alphasCumprod()}
	d.finalAlphaCumprod = d.alphasCumprod[0]
	if cfg.SetAlphaToOne {
		d.finalAlphaCumprod = 1
	}
	return d
}

// InitNoiseSigma is the standard deviation of the initial latents.
func (d *DDIM) InitNoiseSigma() float64 { return 1 }

// SetTimesteps chooses the n timesteps of a sampling run, by the config's
// timestep_spacing, in the order they are visited.
func (d *DDIM) SetTimesteps(n int) error {
	train := d.config.NumTrainTimesteps
	if n < 1 || n > train {
		return fmt.Errorf("ddim: %d inference steps, want 1 to num_train_timesteps %d", n, train)
	}
	var ts []int64
	switch d.config.TimestepSpacing {
	case "leading":
		ts = leadingTimesteps(train, n, d.config.StepsOffset)
	case "trailing":
		ts = trailingTimesteps(train, n)
	case "linspace":
		ts = linspaceTimesteps(train, n)
	}
	// diffusers would only fail later, indexing ᾱ in Step.
	for _, t := range ts {
		if t < 0 || t >= int64(train) {
			return fmt.Errorf("ddim: %d steps with steps_offset %d give timestep %d, outside 0..%d",
				n, d.config.StepsOffset, t, train-1)
		}
	}
	d.inferenceSteps = int64(n)
	d.timesteps = ts
	return nil
}

// leadingTimesteps is diffusers' "leading" spacing: every (train/n)-th
// timestep from 0, shifted by offset, descending.
func leadingTimesteps(train, n int, offset int64) []int64 {
	ratio := int64(train / n)
	ts := make([]int64, n)
	for i := range ts {
		ts[i] = int64(n-1-i)*ratio + offset
	}
	return ts
}

// trailingTimesteps is diffusers' "trailing" spacing,
// np.round(np.arange(train, 0, -train/n)) - 1. It follows numpy's float
// arange step by step (length from a ceil, elements start + i·delta with
// delta recomputed from the second element, the product rounded before the
// sum), because a value landing on .5 rounds to even and a different last
// bit would change the timestep.
func trailingTimesteps(train, n int) []int64 {
	start, step := float64(train), -float64(train)/float64(n)
	length := int(math.Ceil((0 - start) / step))
	delta := (start + step) - start
	ts := make([]int64, length)
	for i := range ts {
		v := start
		switch {
		case i == 1:
			v = start + step
		case i > 1:
			v = start + float64(float64(i)*delta)
		}
		ts[i] = int64(math.RoundToEven(v)) - 1
	}
	return ts
}

// linspaceTimesteps is diffusers' "linspace" spacing,
// np.linspace(0, train-1, n).round()[::-1], computed as numpy does: i·step,
// with the last element exactly train-1.
func linspaceTimesteps(train, n int) []int64 {
	last := float64(train - 1)
	ts := make([]int64, n)
	for i := range ts {
		v := 0.0
		switch {
		case i == n-1 && n > 1:
			v = last
		case i > 0:
			v = float64(i) * (last / float64(n-1))
		}
		ts[n-1-i] = int64(math.RoundToEven(v))
	}
	return ts
}

// Timesteps is the schedule SetTimesteps chose (a copy).
func (d *DDIM) Timesteps() []int64 { return append([]int64(nil), d.timesteps...) }

// Step takes sample from timestep to the previous timestep of the schedule,
// given the model's output there: diffusers' DDIMScheduler.step. It returns
// that previous sample and the model's estimate of the clean sample (for
// prediction type "sample" without clipping, modelOutput itself).
//
// eta scales the fresh noise (0: deterministic DDIM, 1: DDPM-like). With
// eta > 0 the noise is varianceNoise when given, otherwise drawn from gen as
// diffusers' randn_tensor does (in modelOutput's dtype, on the CPU for a CPU
// generator); giving both is an error, as in diffusers. Errors, and a Step
// before SetTimesteps, panic with a *torch.Error.
func (d *DDIM) Step(modelOutput *torch.Tensor, timestep int64, sample *torch.Tensor, eta float64,
	gen *torch.Generator, varianceNoise *torch.Tensor) (prev, predOriginal *torch.Tensor) {
	train := int64(d.config.NumTrainTimesteps)
	switch {
	case d.inferenceSteps == 0:
		panic(&torch.Error{Op: "ddim step", Msg: "SetTimesteps was not called"})
	case timestep < 0 || timestep >= train:
		panic(&torch.Error{Op: "ddim step", Msg: fmt.Sprintf("timestep %d outside 0..%d", timestep, train-1)})
	case eta > 0 && gen != nil && varianceNoise != nil:
		panic(&torch.Error{Op: "ddim step", Msg: "both a generator and variance noise given"})
	}
	s := torch.NewScope()
	defer s.Close()

	// diffusers steps back by train/n even for trailing and linspace spacing.
	prevTimestep := timestep - train/d.inferenceSteps
	alphaProd := d.alphasCumprod[timestep]
	alphaProdPrev := d.finalAlphaCumprod
	if prevTimestep >= 0 {
		alphaProdPrev = d.alphasCumprod[prevTimestep]
	}
	betaProd := 1 - alphaProd
	sqrtAlpha, sqrtBeta := float64(sqrt32(alphaProd)), float64(sqrt32(betaProd))

	var predEpsilon *torch.Tensor
	switch d.config.PredictionType {
	case PredictEpsilon:
		predOriginal = sample.Sub(modelOutput.MulScalar(sqrtBeta)).DivScalar(sqrtAlpha)
		predEpsilon = modelOutput
	case PredictSample:
		predOriginal = modelOutput
		predEpsilon = sample.Sub(predOriginal.MulScalar(sqrtAlpha)).DivScalar(sqrtBeta)
	case PredictVelocity:
		predOriginal = sample.MulScalar(sqrtAlpha).Sub(modelOutput.MulScalar(sqrtBeta))
		predEpsilon = modelOutput.MulScalar(sqrtAlpha).Add(sample.MulScalar(sqrtBeta))
	}
	if d.config.ClipSample {
		r := d.config.ClipSampleRange
		predOriginal = predOriginal.Clamp(-r, r)
	}

	// σ_t of the DDIM paper's formula (16); the float32 conversions keep a
	// product from being fused into the following addition.
	betaProdPrev := 1 - alphaProdPrev
	variance := (betaProdPrev / betaProd) * (1 - alphaProd/alphaProdPrev)
	stdDev := float32(eta) * sqrt32(variance)
	direction := predEpsilon.MulScalar(float64(sqrt32(float32(1-alphaProdPrev) - float32(stdDev*stdDev))))
	prev = predOriginal.MulScalar(float64(sqrt32(alphaProdPrev))).Add(direction)

	if eta > 0 {
		noise := varianceNoise
		if noise == nil {
			noise = torch.RandnLike(gen, modelOutput)
		}
		prev = prev.Add(noise.MulScalar(float64(stdDev)))
	}
	return s.Keep(prev), s.Keep(predOriginal)
}
