package pipeline

import "github.com/lcpdiff/lcpdiff/internal/torch"

// DDPM is the training side of diffusers' DDPMScheduler (v0.27.2): the
// forward process that noises clean latents at random timesteps.
type DDPM struct {
	alphasCumprod []float32
}

// NewDDPM makes a DDPM scheduler. It panics if cfg does not Validate; a
// config from LoadSchedulerConfig always does.
func NewDDPM(cfg SchedulerConfig) *DDPM {
	if err := cfg.Validate(); err != nil {
		panic("pipeline: NewDDPM: " + err.Error())
	}
	return &DDPM{alphasCumprod: cfg.alphasCumprod()}
}

// AlphasCumprod is ᾱ_t for every training timestep, a new float32 CPU
// tensor (for loss weightings such as min-SNR).
func (d *DDPM) AlphasCumprod() *torch.Tensor { return torch.New(d.alphasCumprod) }

// AddNoise is the forward process q(x_t | x_0):
// sqrt(ᾱ_t)·original + sqrt(1−ᾱ_t)·noise, with one timestep (an i64 tensor)
// per batch element.
func (d *DDPM) AddNoise(original, noise, timesteps *torch.Tensor) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	signal, noiseScale := d.scales(timesteps, original)
	return s.Keep(signal.Mul(original).Add(noiseScale.Mul(noise)))
}

// Velocity is the v-prediction target sqrt(ᾱ_t)·noise − sqrt(1−ᾱ_t)·sample
// (diffusers' get_velocity).
func (d *DDPM) Velocity(sample, noise, timesteps *torch.Tensor) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	signal, noiseScale := d.scales(timesteps, sample)
	return s.Keep(signal.Mul(noise).Sub(noiseScale.Mul(sample)))
}

// scales gathers sqrt(ᾱ_t) and sqrt(1−ᾱ_t) for each timestep, shaped
// [batch, 1, 1, ...] to broadcast over like. Like diffusers, it converts ᾱ
// to like's dtype first and takes the root as `** 0.5` (libtorch's half pow
// is not its sqrt), so half-precision training rounds where diffusers does.
func (d *DDPM) scales(timesteps, like *torch.Tensor) (signal, noise *torch.Tensor) {
	opts := torch.OptionsOf(like)
	alphaProd := torch.New(d.alphasCumprod).ToOptions(opts).
		IndexSelect(0, timesteps.ToDevice(opts.Device).Reshape(-1))
	signal, noise = alphaProd.PowScalar(0.5), alphaProd.Rsub(1).PowScalar(0.5)
	for signal.Dim() < like.Dim() {
		signal, noise = signal.Unsqueeze(-1), noise.Unsqueeze(-1)
	}
	return signal, noise
}
