package vae

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Config is diffusers' AutoencoderKL configuration, as vae/config.json
// spells it. Keys this port has no use for (latents_mean, latents_std,
// _class_name, ...) are ignored.
type Config struct {
	InChannels       int64    `json:"in_channels"`
	OutChannels      int64    `json:"out_channels"`
	DownBlockTypes   []string `json:"down_block_types"`
	UpBlockTypes     []string `json:"up_block_types"`
	BlockOutChannels []int64  `json:"block_out_channels"`
	LayersPerBlock   int64    `json:"layers_per_block"`
	ActFn            string   `json:"act_fn"`
	LatentChannels   int64    `json:"latent_channels"`
	NormNumGroups    int64    `json:"norm_num_groups"`
	SampleSize       int64    `json:"sample_size"`

	// ScalingFactor brings latents to unit variance: the pipeline hands the
	// UNet (z - ShiftFactor) * ScalingFactor and divides by it again before
	// Decode (see ScaleLatents and UnscaleLatents).
	ScalingFactor float64  `json:"scaling_factor"`
	ShiftFactor   *float64 `json:"shift_factor"` // nil: no shift (SD 1.x/2.x/XL)

	// ForceUpcast says the VAE overflows in float16 and should run in
	// float32 (a hint for the pipeline; the model itself does not act on it).
	ForceUpcast bool `json:"force_upcast"`

	UseQuantConv     bool `json:"use_quant_conv"`
	UsePostQuantConv bool `json:"use_post_quant_conv"`
}

// DefaultConfig is diffusers' AutoencoderKL.__init__ defaults: what a
// config.json that lacks a key gets, in diffusers as here. Files written by
// save_pretrained carry every key, so these matter only for hand-written ones.
func DefaultConfig() Config {
	return Config{
		InChannels:       3,
		OutChannels:      3,
		DownBlockTypes:   []string{"DownEncoderBlock2D"},
		UpBlockTypes:     []string{"UpDecoderBlock2D"},
		BlockOutChannels: []int64{64},
		LayersPerBlock:   1,
		ActFn:            "silu",
		LatentChannels:   4,
		NormNumGroups:    32,
		SampleSize:       32,
		ScalingFactor:    0.18215,
		ForceUpcast:      true,
		UseQuantConv:     true,
		UsePostQuantConv: true,
	}
}

// LoadConfig reads a diffusers vae/config.json and checks that this port
// can build the network it describes.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("vae config: %w", err)
	}
	// Decoding onto the defaults fills only the keys the file has. Lists
	// are replaced, not merged: json.Unmarshal resets a slice before filling it.
	c := DefaultConfig()
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("vae config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("vae config %s: %w", path, err)
	}
	return c, nil
}

// Validate reports what in c this port cannot build: block types other
// than DownEncoderBlock2D / UpDecoderBlock2D, an activation other than SiLU,
// or sizes that do not fit together.
func (c Config) Validate() error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels",
			len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.ActFn != "silu":
		return fmt.Errorf("act_fn %q is not supported (only silu)", c.ActFn)
	case c.InChannels < 1 || c.OutChannels < 1 || c.LatentChannels < 1 || c.LayersPerBlock < 1 || c.NormNumGroups < 1:
		return fmt.Errorf("in_channels %d, out_channels %d, latent_channels %d, layers_per_block %d and norm_num_groups %d must be positive",
			c.InChannels, c.OutChannels, c.LatentChannels, c.LayersPerBlock, c.NormNumGroups)
	case c.ScalingFactor == 0:
		return fmt.Errorf("scaling_factor is 0")
	}
	for i := range n {
		if t := c.DownBlockTypes[i]; t != "DownEncoderBlock2D" {
			return fmt.Errorf("down_block_types[%d] is %q; only DownEncoderBlock2D is supported", i, t)
		}
		if t := c.UpBlockTypes[i]; t != "UpDecoderBlock2D" {
			return fmt.Errorf("up_block_types[%d] is %q; only UpDecoderBlock2D is supported", i, t)
		}
		if ch := c.BlockOutChannels[i]; ch < 1 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
	}
	return nil
}

// Downsampling is how many pixels one latent spans along each side:
// every encoder block but the last halves the image (diffusers'
// vae_scale_factor). SD's VAE has 8; the toy world's smaller one 4.
func (c Config) Downsampling() int { return 1 << (len(c.BlockOutChannels) - 1) }

// ScaleLatents maps a posterior sample to the latent space the UNet works
// in: (z - shift_factor) * scaling_factor.
func (c Config) ScaleLatents(z *torch.Tensor) *torch.Tensor {
	if c.ShiftFactor == nil {
		return z.MulScalar(c.ScalingFactor)
	}
	return torch.Scoped(func() *torch.Tensor { return z.SubScalar(*c.ShiftFactor).MulScalar(c.ScalingFactor) })
}

// UnscaleLatents is the inverse of ScaleLatents, applied before Decode:
// z / scaling_factor + shift_factor.
func (c Config) UnscaleLatents(z *torch.Tensor) *torch.Tensor {
	if c.ShiftFactor == nil {
		return z.DivScalar(c.ScalingFactor)
	}
	return torch.Scoped(func() *torch.Tensor { return z.DivScalar(c.ScalingFactor).AddScalar(*c.ShiftFactor) })
}
