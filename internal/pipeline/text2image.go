package pipeline

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Text2Image is one text-to-image request, with diffusers'
// StableDiffusionPipeline semantics.
type Text2Image struct {
	Prompt, NegativePrompt string
	Steps                  int     // DDIM steps
	CFGScale               float64 // classifier-free guidance scale; <= 1 turns guidance off
	// GuidanceRescale is diffusers' guidance_rescale, 0 to 1: how far the
	// guided prediction is scaled back to the conditional prediction's
	// standard deviation, which strong guidance overshoots on models with
	// zero terminal SNR (over-exposed images). 0 leaves it.
	GuidanceRescale float64
	Eta             float64 // DDIM eta: 0 is deterministic
	Seed            uint64  // seeds the CPU generator of the initial latents and the DDIM noise
	Width, Height   int     // pixels, multiples of 8
	Batch           int     // images per prompt
	ClipSkip        int     // text layers to skip at the end (0: last hidden state)
	// Latents, when set, are the initial latents [Batch, C, Height/f, Width/f], f the VAE's Downsampling
	// instead of noise drawn from Seed.
	Latents *torch.Tensor

	// BeforeStep, when set, runs before each step's UNet call (an adapter
	// whose strength follows the schedule, such as GLIGEN's beta).
	BeforeStep func(step, total int, timestep int64)
	// Guide, when set, may move the latents before each step's denoising
	// (box-constrained guidance); it returns the latents to denoise, which
	// may be its input.
	Guide func(step, total int, timestep int64, latents *torch.Tensor) *torch.Tensor
	// Progress, when set, is called after each denoising step.
	Progress func(step, total int)
	// OnStep, when set, sees the latents after each step (inside the step's scope).
	OnStep func(step int, timestep int64, latents *torch.Tensor)
	// Warn, when set, receives warnings (a truncated prompt).
	Warn func(msg string)
}

// Check validates the request before any work is done.
func (r Text2Image) Check() error {
	switch {
	case r.Steps < 1:
		return fmt.Errorf("steps must be at least 1, got %d", r.Steps)
	case r.Width <= 0 || r.Height <= 0 || r.Width%8 != 0 || r.Height%8 != 0:
		return fmt.Errorf("size %dx%d: width and height must be positive multiples of 8", r.Width, r.Height)
	case r.Batch < 1:
		return fmt.Errorf("batch must be at least 1, got %d", r.Batch)
	case r.ClipSkip < 0:
		return fmt.Errorf("clip skip must be 0 or more, got %d", r.ClipSkip)
	case r.Eta < 0:
		return fmt.Errorf("eta must be 0 or more, got %g", r.Eta)
	case r.GuidanceRescale < 0 || r.GuidanceRescale > 1:
		return fmt.Errorf("guidance rescale must lie in [0, 1], got %g", r.GuidanceRescale)
	}
	return nil
}

// Generate runs the request and returns the images [Batch, 3, H, W] in
// [0, 1], as f32 on the CPU.
func (m *Model) Generate(r Text2Image) (images *torch.Tensor, err error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	if r.ClipSkip >= m.Text.Config.NumHiddenLayers {
		return nil, fmt.Errorf("clip skip %d: the text encoder has only %d layers", r.ClipSkip, m.Text.Config.NumHiddenLayers)
	}
	defer torch.Recover(&err)
	torch.NoGrad(func() { images = m.generate(r) })
	return images, nil
}

func (m *Model) generate(r Text2Image) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	guided := r.CFGScale > 1
	embeds := m.encodePrompt(r.Prompt, r.ClipSkip, r.Warn).Repeat(int64(r.Batch), 1, 1) // [B, 77, D]
	if guided {
		// diffusers encodes the negative prompt without clip skip.
		uncond := m.encodePrompt(r.NegativePrompt, 0, r.Warn).Repeat(int64(r.Batch), 1, 1)
		embeds = torch.Cat([]*torch.Tensor{uncond, embeds}, 0) // [2B, 77, D]: uncond first
	}

	sched := NewDDIM(m.Scheduler)
	if err := sched.SetTimesteps(r.Steps); err != nil {
		panic(&torch.Error{Op: "generate", Msg: err.Error()})
	}
	gen := torch.NewGenerator(r.Seed)
	defer gen.Close()
	h, w := m.latentSize(r)
	shape := []int64{int64(r.Batch), m.UNet.Config.InChannels, h, w}
	var latents *torch.Tensor
	if r.Latents != nil {
		if got := r.Latents.Shape(); fmt.Sprint(got) != fmt.Sprint(shape) {
			panic(&torch.Error{Op: "generate", Msg: fmt.Sprintf("initial latents are %v, want %v", got, shape)})
		}
		latents = r.Latents.ToOptions(m.Options)
	} else {
		latents = m.Options.Randn(gen, shape...)
	}
	latents = latents.MulScalar(sched.InitNoiseSigma())

	timesteps := sched.Timesteps()
	for i, t := range timesteps {
		if r.BeforeStep != nil {
			r.BeforeStep(i, len(timesteps), t)
		}
		next := torch.Scoped(func() *torch.Tensor {
			latents := latents
			if r.Guide != nil {
				latents = r.Guide(i, len(timesteps), t, latents)
			}
			in := latents
			if guided {
				in = torch.Cat([]*torch.Tensor{latents, latents}, 0)
			}
			noise := m.UNet.Forward(in, torch.New([]int64{t}).Reshape(), embeds)
			if guided {
				parts := noise.Chunk(2, 0)
				uncond, cond := parts[0], parts[1]
				noise = uncond.Add(cond.Sub(uncond).MulScalar(r.CFGScale))
				if r.GuidanceRescale > 0 {
					noise = RescaleGuidance(noise, cond, r.GuidanceRescale)
				}
			}
			prev, _ := sched.Step(noise, t, latents, r.Eta, gen, nil)
			if r.OnStep != nil {
				r.OnStep(i, t, prev)
			}
			return prev
		})
		latents.Free()
		latents = next
		if r.Progress != nil {
			r.Progress(i+1, len(timesteps))
		}
	}

	decoded := m.VAE.Decode(m.VAE.Config.UnscaleLatents(latents))
	// VaeImageProcessor.postprocess: [-1, 1] to [0, 1]
	images := decoded.DivScalar(2).AddScalar(0.5).Clamp(0, 1).ToOptions(torch.Options{})
	return s.Keep(images)
}

// encodePrompt is the prompt's embeddings [1, 77, D].
func (m *Model) encodePrompt(prompt string, clipSkip int, warn func(string)) *torch.Tensor {
	return m.EncodePrompts([]string{prompt}, clipSkip, warn)
}

// EncodePrompts is the prompts' embeddings [B, 77, D] as diffusers'
// encode_prompt makes them: padded to the tokenizer's length, truncated
// with a warning (when warn is set), the last hidden state or, with
// clipSkip, the final norm of an earlier layer. Generation and training
// both encode through it.
func (m *Model) EncodePrompts(prompts []string, clipSkip int, warn func(string)) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	ids := make([]int64, 0, len(prompts)*m.Tokenizer.MaxLength)
	for _, p := range prompts {
		padded, truncated := m.Tokenizer.EncodePadded(p)
		if truncated && warn != nil {
			warn(fmt.Sprintf("prompt is longer than %d tokens and was truncated", m.Tokenizer.MaxLength))
		}
		ids = append(ids, padded...)
	}
	out := m.Text.Forward(torch.New(ids, int64(len(prompts)), int64(m.Tokenizer.MaxLength)))
	defer out.Free()
	if clipSkip == 0 {
		return s.Keep(out.LastHidden.Clone())
	}
	return s.Keep(m.Text.PromptEmbeds(out, clipSkip))
}

// latentSize is the latent height and width of r's images.
func (m *Model) latentSize(r Text2Image) (h, w int64) {
	f := m.VAE.Config.Downsampling()
	return int64(r.Height / f), int64(r.Width / f)
}

// RescaleGuidance is diffusers' rescale_noise_cfg ("Common Diffusion Noise
// Schedules and Sample Steps are Flawed", Sec. 3.4): the guided prediction
// scaled to the conditional one's standard deviation per sample (over all
// but the batch dimension, unbiased, as torch.std), mixed with the guided
// one by phi.
func RescaleGuidance(guided, cond *torch.Tensor, phi float64) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	dims := make([]int64, guided.Dim()-1)
	for i := range dims {
		dims[i] = int64(i + 1)
	}
	ratio := cond.StdKeepDim(dims...).Div(guided.StdKeepDim(dims...))
	rescaled := guided.Mul(ratio)
	return s.Keep(rescaled.MulScalar(phi).Add(guided.MulScalar(1 - phi)))
}
