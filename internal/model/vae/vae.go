// Package vae is diffusers' AutoencoderKL, the variational autoencoder of
// Stable Diffusion: the encoder maps an image in [-1, 1] to a diagonal
// Gaussian over latents 2^(blocks-1) times smaller, the decoder maps a
// latent back to an image. Everything is sized by the checkpoint's
// vae/config.json; module paths are the checkpoint keys.
package vae

import (
	"fmt"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// AutoencoderKL is the whole VAE. Encode and Decode leave the latent
// scaling to the caller, as diffusers does: the UNet works on
// ScaleLatents(sample) and Decode wants UnscaleLatents(latents).
type AutoencoderKL struct {
	Config
	Encoder       *Encoder
	Decoder       *Decoder
	QuantConv     *nn.Conv2d // nil when !UseQuantConv
	PostQuantConv *nn.Conv2d // nil when !UsePostQuantConv

	// Tap sees the activations the golden reference records, under its
	// names: encode.encoder.{conv_in,down_blocks.i,mid_block,conv_out},
	// encode.moments, decode.post_quant_conv and
	// decode.decoder.{conv_in,mid_block,up_blocks.i}.
	Tap Tap

	params []*torch.Tensor // what Free releases (set by Load)
}

// New builds the VAE from the parameters under p (the checkpoint root).
// It panics when c is not valid (see Config.Validate); LoadConfig has
// checked a config it returns. The parameters belong to p's loader.
func New(p nn.Path, c Config) *AutoencoderKL {
	if err := c.Validate(); err != nil {
		panic(fmt.Sprintf("vae.New: %v", err))
	}
	m := &AutoencoderKL{
		Config:  c,
		Encoder: NewEncoder(p.Sub("encoder"), c),
		Decoder: NewDecoder(p.Sub("decoder"), c),
	}
	moments := 2 * c.LatentChannels
	if c.UseQuantConv {
		m.QuantConv = nn.NewConv2d(p.Sub("quant_conv"), moments, moments, 1, torch.ConvOptions{})
	}
	if c.UsePostQuantConv {
		m.PostQuantConv = nn.NewConv2d(p.Sub("post_quant_conv"), c.LatentChannels, c.LatentChannels, 1, torch.ConvOptions{})
	}
	m.Encoder.Tap = func(name string, x *torch.Tensor) { m.Tap.see("encode.encoder."+name, x) }
	m.Decoder.Tap = func(name string, x *torch.Tensor) { m.Tap.see("decode.decoder."+name, x) }
	return m
}

// Load reads a diffusers vae/ folder (config.json and the safetensors
// weights) into a model whose parameters have the dtype and device of
// opts. Every missing, mis-shaped or unexpected weight is reported in one
// error. Release the model with Free.
func Load(dir string, opts torch.Options) (*AutoencoderKL, error) {
	c, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	files, err := nn.OpenWeights(dir, "diffusion_pytorch_model")
	if err != nil {
		return nil, fmt.Errorf("vae weights: %w", err)
	}
	defer files.Close()
	m, err := FromSource(withCurrentNames(files), c, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// FromSource builds the model from weights named as diffusers names them.
func FromSource(src nn.Source, c Config, opts torch.Options) (m *AutoencoderKL, err error) {
	loader := nn.NewLoader("vae", src, opts)
	defer func() {
		if err != nil {
			nn.Free(loader.Params())
		}
	}()
	defer torch.Recover(&err) // a failed dtype or device conversion
	m = New(loader.Root(), c)
	if err := loader.Err(nil); err != nil {
		return nil, err
	}
	m.params = loader.Params()
	return m, nil
}

// legacyNames maps the mid-block attention's parameter names to those that
// diffusers before 0.14 saved (its AttentionBlock), for both mid blocks.
var legacyNames = func() map[string]string {
	names := map[string]string{}
	for _, coder := range []string{"encoder", "decoder"} {
		for current, old := range map[string]string{"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"} {
			for _, param := range []string{"weight", "bias"} {
				prefix := coder + ".mid_block.attentions.0."
				names[prefix+current+"."+param] = prefix + old + "." + param
			}
		}
	}
	return names
}()

// withCurrentNames presents a checkpoint that uses the legacy attention
// names under the current ones; any other checkpoint is returned as is.
func withCurrentNames(src nn.Source) nn.Source {
	names := map[string]string{}
	for _, k := range src.Keys() {
		names[k] = k
	}
	legacy := false
	for current, old := range legacyNames {
		if _, ok := names[old]; ok {
			delete(names, old)
			names[current] = old
			legacy = true
		}
	}
	if !legacy {
		return src
	}
	return nn.Rename(src, names)
}

// Free releases the parameters of a model made by Load.
func (m *AutoencoderKL) Free() {
	nn.Free(m.params)
	m.params = nil
}

// Encode maps an image x [B, in, H, W] in [-1, 1] to the posterior
// diffusers calls latent_dist: its mean and log-variance, each
// [B, latent, H/f, W/f]. The log-variance is clamped to [-30, 20], as
// DiagonalGaussianDistribution does, so that its std stays finite.
func (m *AutoencoderKL) Encode(x *torch.Tensor) (mean, logvar *torch.Tensor) {
	s := torch.NewScope()
	defer s.Close()
	moments := m.Encoder.Forward(x) // [B, 2*latent, H/f, W/f]
	if m.QuantConv != nil {
		moments = torch.Replace(moments, m.QuantConv.Forward(moments))
	}
	m.Tap.see("encode.moments", moments)
	halves := moments.Chunk(2, 1)
	return s.Keep(halves[0]), s.Keep(halves[1].Clamp(-30, 20))
}

// Decode maps a latent z [B, latent, h, w], already unscaled (see
// UnscaleLatents), to an image [B, out, h*f, w*f], roughly in [-1, 1].
func (m *AutoencoderKL) Decode(z *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		if m.PostQuantConv != nil {
			z = m.PostQuantConv.Forward(z)
			m.Tap.see("decode.post_quant_conv", z)
		}
		return m.Decoder.Forward(z)
	})
}

// Reconstruct is an image x [B, 3, H, W] in [-1, 1] through the
// autoencoder and back: its posterior mean (what a UNet learns to
// produce), decoded and brought to [0, 1] as diffusers' postprocess does.
func (m *AutoencoderKL) Reconstruct(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		mean, _ := m.Encode(x)
		return m.Decode(mean).DivScalar(2).AddScalar(0.5).Clamp(0, 1)
	})
}

// Std is the posterior's standard deviation exp(logvar / 2).
func Std(logvar *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return logvar.MulScalar(0.5).Exp() })
}

// Sample draws a latent from the posterior: mean + std * noise with noise
// ~ N(0, 1) from gen. The noise is drawn on the CPU in mean's dtype and
// moved to its device, so it is what diffusers' randn_tensor gives with a
// CPU generator of the same seed.
func Sample(mean, logvar *torch.Tensor, gen *torch.Generator) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return SampleWithNoise(mean, logvar, torch.OptionsOf(mean).Randn(gen, mean.Shape()...))
	})
}

// SampleWithNoise is Sample with the standard normal noise given.
func SampleWithNoise(mean, logvar, noise *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return mean.Add(Std(logvar).Mul(noise)) })
}
