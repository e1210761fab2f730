package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// What the UNet's output means (a scheduler config's prediction_type).
const (
	PredictEpsilon  = "epsilon"      // the noise that was added
	PredictVelocity = "v_prediction" // v = sqrt(ᾱ)·noise − sqrt(1−ᾱ)·x0
	PredictSample   = "sample"       // the clean sample x0 itself
)

// SchedulerConfig is the part of a diffusers scheduler_config.json that DDIM
// and DDPM read. Any scheduler's file will do (SD 1.5 ships a PNDMScheduler
// one): diffusers' from_config also picks out the keys it knows and ignores
// the rest.
type SchedulerConfig struct {
	NumTrainTimesteps int       `json:"num_train_timesteps"`
	BetaStart         float64   `json:"beta_start"`
	BetaEnd           float64   `json:"beta_end"`
	BetaSchedule      string    `json:"beta_schedule"` // "linear" or "scaled_linear"
	TrainedBetas      []float64 `json:"trained_betas"` // when set, replaces the beta schedule
	ClipSample        bool      `json:"clip_sample"`
	ClipSampleRange   float64   `json:"clip_sample_range"`
	SetAlphaToOne     bool      `json:"set_alpha_to_one"`
	StepsOffset       int64     `json:"steps_offset"`
	PredictionType    string    `json:"prediction_type"`
	TimestepSpacing   string    `json:"timestep_spacing"` // "leading", "trailing" or "linspace"
	Thresholding      bool      `json:"thresholding"`     // dynamic thresholding; not supported
	RescaleZeroSNR    bool      `json:"rescale_betas_zero_snr"`
}

// DefaultSchedulerConfig is diffusers' DDIMScheduler default, which is what
// a key absent from a config file means.
func DefaultSchedulerConfig() SchedulerConfig {
	return SchedulerConfig{
		NumTrainTimesteps: 1000,
		BetaStart:         0.0001,
		BetaEnd:           0.02,
		BetaSchedule:      "linear",
		ClipSample:        true,
		ClipSampleRange:   1,
		SetAlphaToOne:     true,
		PredictionType:    PredictEpsilon,
		TimestepSpacing:   "leading",
	}
}

// LoadSchedulerConfig reads a diffusers scheduler_config.json.
func LoadSchedulerConfig(path string) (SchedulerConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	cfg := DefaultSchedulerConfig()
	if err := json.Unmarshal(data, &cfg); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports the first setting this package cannot honour.
func (c SchedulerConfig) Validate() error {
	if c.NumTrainTimesteps < 1 {
		return fmt.Errorf("num_train_timesteps %d, want at least 1", c.NumTrainTimesteps)
	}
	if c.TrainedBetas != nil {
		if len(c.TrainedBetas) != c.NumTrainTimesteps {
			return fmt.Errorf("%d trained_betas for num_train_timesteps %d", len(c.TrainedBetas), c.NumTrainTimesteps)
		}
	} else if c.BetaSchedule != "linear" && c.BetaSchedule != "scaled_linear" {
		return fmt.Errorf("beta_schedule %q not supported (want linear or scaled_linear)", c.BetaSchedule)
	}
	switch c.PredictionType {
	case PredictEpsilon, PredictVelocity, PredictSample:
	default:
		return fmt.Errorf("prediction_type %q not supported (want epsilon, v_prediction or sample)", c.PredictionType)
	}
	switch c.TimestepSpacing {
	case "leading", "trailing", "linspace":
	default:
		return fmt.Errorf("timestep_spacing %q not supported (want leading, trailing or linspace)", c.TimestepSpacing)
	}
	if c.Thresholding {
		return errors.New("thresholding not supported")
	}
	return nil
}

// alphasCumprod is ᾱ_t, the share of the clean signal left at timestep t,
// for t = 0 .. NumTrainTimesteps-1. It is computed with the same float32
// tensor operations as diffusers, so that the values agree bit for bit.
func (c SchedulerConfig) alphasCumprod() []float32 {
	s := torch.NewScope()
	defer s.Close()
	return torch.Data[float32](cumprod(c.betas().Rsub(1)))
}

// betas is the per-step noise variance β_t.
func (c SchedulerConfig) betas() *torch.Tensor {
	var betas *torch.Tensor
	n := int64(c.NumTrainTimesteps)
	switch {
	case c.TrainedBetas != nil:
		betas = torch.New(c.TrainedBetas).To(torch.Float32)
	case c.BetaSchedule == "linear":
		betas = torch.Linspace(c.BetaStart, c.BetaEnd, n)
	case c.BetaSchedule == "scaled_linear":
		// Latent diffusion's schedule: linear in sqrt(β), not in β.
		betas = torch.Linspace(math.Sqrt(c.BetaStart), math.Sqrt(c.BetaEnd), n).PowScalar(2)
	default:
		panic(fmt.Sprintf("pipeline: beta_schedule %q reached betas unvalidated", c.BetaSchedule))
	}
	if c.RescaleZeroSNR {
		betas = rescaleZeroTerminalSNR(betas)
	}
	return betas
}

// rescaleZeroTerminalSNR shifts and scales sqrt(ᾱ) so that the last
// timestep is pure noise (ᾱ = 0) while the first keeps its value: "Common
// Diffusion Noise Schedules and Sample Steps are Flawed", algorithm 1.
func rescaleZeroTerminalSNR(betas *torch.Tensor) *torch.Tensor {
	sqrtAlphaBar := cumprod(betas.Rsub(1)).Sqrt()
	first, last := sqrtAlphaBar.Select(0, 0), sqrtAlphaBar.Select(0, -1)
	sqrtAlphaBar = sqrtAlphaBar.Sub(last).Mul(first.Div(first.Sub(last)))
	alphaBar := sqrtAlphaBar.PowScalar(2)
	alphas := torch.Cat([]*torch.Tensor{
		alphaBar.Narrow(0, 0, 1),
		alphaBar.Slice(0, 1, torch.End, 1).Div(alphaBar.Slice(0, 0, -1, 1)),
	}, 0)
	return alphas.Rsub(1)
}

// cumprod is torch.cumprod(x, 0) for a 1-D float32 tensor, which
// internal/torch lacks. libtorch's CPU kernel carries the running product in
// double and rounds each output to float32; doing the same reproduces it
// exactly, where a float32 running product drifts by a few ulps.
func cumprod(x *torch.Tensor) *torch.Tensor {
	in := torch.Data[float32](x)
	out := make([]float32, len(in))
	product := 1.0
	for i, v := range in {
		product *= float64(v)
		out[i] = float32(product)
	}
	return torch.New(out)
}

// sqrt32 is a float32 tensor's `x ** 0.5`: the correctly rounded square
// root (float64's square root rounds to the same float32).
func sqrt32(x float32) float32 {
	return float32(math.Sqrt(float64(x)))
}
