// Package unet is diffusers' UNet2DConditionModel, built from its
// config.json, for the Stable Diffusion 1.x / 2.x family.
package unet

import (
	"encoding/json"
	"fmt"
	"os"
)

// Config is the part of a diffusers unet/config.json this package reads.
type Config struct {
	SampleSize                int      `json:"sample_size"`
	InChannels                int64    `json:"in_channels"`
	OutChannels               int64    `json:"out_channels"`
	FlipSinToCos              bool     `json:"flip_sin_to_cos"`
	FreqShift                 float64  `json:"freq_shift"`
	DownBlockTypes            []string `json:"down_block_types"`
	MidBlockType              string   `json:"mid_block_type"`
	UpBlockTypes              []string `json:"up_block_types"`
	BlockOutChannels          []int64  `json:"block_out_channels"`
	LayersPerBlock            int      `json:"layers_per_block"`
	DownsamplePadding         int64    `json:"downsample_padding"`
	MidBlockScaleFactor       float64  `json:"mid_block_scale_factor"`
	ActFn                     string   `json:"act_fn"`
	NormNumGroups             int64    `json:"norm_num_groups"`
	NormEps                   float64  `json:"norm_eps"`
	CrossAttentionDim         int64    `json:"cross_attention_dim"`
	UseLinearProjection       bool     `json:"use_linear_projection"`
	UpcastAttention           bool     `json:"upcast_attention"`
	ResnetTimeScaleShift      string   `json:"resnet_time_scale_shift"`
	TimeEmbeddingType         string   `json:"time_embedding_type"`
	CenterInputSample         bool     `json:"center_input_sample"`
	ConvInKernel              int64    `json:"conv_in_kernel"`
	ConvOutKernel             int64    `json:"conv_out_kernel"`
	OnlyCrossAttention        any      `json:"only_cross_attention"`
	DualCrossAttention        bool     `json:"dual_cross_attention"`
	ClassEmbedType            *string  `json:"class_embed_type"`
	AdditionEmbedType         *string  `json:"addition_embed_type"`
	TimeCondProjDim           *int64   `json:"time_cond_proj_dim"`
	EncoderHidDim             *int64   `json:"encoder_hid_dim"`
	AttentionHeadDim          any      `json:"attention_head_dim"`
	NumAttentionHeads         any      `json:"num_attention_heads"`
	TransformerLayersPerBlock any      `json:"transformer_layers_per_block"`
	// AttentionType "gated" marks a GLIGEN UNet: the base network plus
	// grounding layers, which package gligen reads.
	AttentionType string `json:"attention_type"`

	// Resolved from the fields above by Check: per down block, in order.
	Heads             []int64 `json:"-"`
	TransformerLayers []int   `json:"-"`
}

// LoadConfig reads and checks a unet/config.json.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("unet config: %w", err)
	}
	c := Config{ // diffusers' defaults for keys an old file may lack
		InChannels: 4, OutChannels: 4, FlipSinToCos: true, LayersPerBlock: 2, DownsamplePadding: 1,
		MidBlockScaleFactor: 1, ActFn: "silu", NormNumGroups: 32, NormEps: 1e-5, CrossAttentionDim: 1280,
		MidBlockType: "UNetMidBlock2DCrossAttn", ResnetTimeScaleShift: "default", TimeEmbeddingType: "positional",
		ConvInKernel: 3, ConvOutKernel: 3, AttentionHeadDim: 8.0, TransformerLayersPerBlock: 1.0,
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("unet config %s: %w", path, err)
	}
	if err := c.Check(); err != nil {
		return Config{}, fmt.Errorf("unet config %s: %w", path, err)
	}
	return c, nil
}

// Check refuses what this UNet does not implement and resolves the
// per-block head and transformer-layer counts.
func (c *Config) Check() error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d block_out_channels but %d down and %d up block types", n, len(c.DownBlockTypes), len(c.UpBlockTypes))
	case c.ActFn != "silu":
		return fmt.Errorf("act_fn %q is not supported (silu only)", c.ActFn)
	case c.ResnetTimeScaleShift != "default":
		return fmt.Errorf("resnet_time_scale_shift %q is not supported", c.ResnetTimeScaleShift)
	case c.TimeEmbeddingType != "positional":
		return fmt.Errorf("time_embedding_type %q is not supported", c.TimeEmbeddingType)
	case c.MidBlockType != "UNetMidBlock2DCrossAttn":
		return fmt.Errorf("mid_block_type %q is not supported", c.MidBlockType)
	case c.ClassEmbedType != nil || c.AdditionEmbedType != nil || c.TimeCondProjDim != nil || c.EncoderHidDim != nil:
		return fmt.Errorf("class, addition, time-condition and encoder-hidden embeddings (SDXL and others) are not supported")
	case c.DualCrossAttention || truthy(c.OnlyCrossAttention):
		return fmt.Errorf("dual or only cross-attention is not supported")
	case c.AttentionType != "" && c.AttentionType != "default" && c.AttentionType != "gated":
		return fmt.Errorf("attention_type %q is not supported (default, or gated for GLIGEN text-box)", c.AttentionType)
	case c.ConvInKernel%2 == 0 || c.ConvOutKernel%2 == 0:
		return fmt.Errorf("conv kernels must be odd")
	case c.NormNumGroups <= 0 || c.CrossAttentionDim <= 0 || c.LayersPerBlock < 1:
		return fmt.Errorf("norm_num_groups, cross_attention_dim and layers_per_block must be positive")
	}
	for i, t := range c.DownBlockTypes {
		if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
			return fmt.Errorf("down block %d: type %q is not supported", i, t)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
			return fmt.Errorf("up block %d: type %q is not supported", i, t)
		}
	}
	// diffusers' naming slip, kept for compatibility: in SD configs
	// attention_head_dim is the number of heads, unless num_attention_heads is set.
	heads := c.NumAttentionHeads
	if heads == nil {
		heads = c.AttentionHeadDim
	}
	var err error
	if c.Heads, err = perBlock[int64]("attention heads", heads, n); err != nil {
		return err
	}
	if c.TransformerLayers, err = perBlock[int]("transformer_layers_per_block", c.TransformerLayersPerBlock, n); err != nil {
		return err
	}
	for i, h := range c.Heads {
		if h <= 0 || c.BlockOutChannels[i]%h != 0 {
			return fmt.Errorf("block %d: %d channels do not split into %d heads", i, c.BlockOutChannels[i], h)
		}
		if c.BlockOutChannels[i]%c.NormNumGroups != 0 {
			return fmt.Errorf("block %d: %d channels do not split into %d groups", i, c.BlockOutChannels[i], c.NormNumGroups)
		}
	}
	return nil
}

// perBlock reads a JSON number or a list of one number per block.
func perBlock[T int | int64](name string, v any, n int) ([]T, error) {
	out := make([]T, n)
	switch x := v.(type) {
	case float64:
		for i := range out {
			out[i] = T(x)
		}
	case []any:
		if len(x) != n {
			return nil, fmt.Errorf("%s has %d entries for %d blocks", name, len(x), n)
		}
		for i, e := range x {
			f, ok := e.(float64)
			if !ok {
				return nil, fmt.Errorf("%s entry %d is not a number", name, i)
			}
			out[i] = T(f)
		}
	default:
		return nil, fmt.Errorf("%s must be a number or a list of numbers", name)
	}
	return out, nil
}

func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case []any:
		for _, e := range x {
			if b, ok := e.(bool); ok && b {
				return true
			}
		}
	}
	return false
}

// SD15Config is the real Stable Diffusion 1.5 UNet (runwayml's
// unet/config.json), for benchmarks with random weights.
func SD15Config() Config {
	c := Config{
		SampleSize: 64, InChannels: 4, OutChannels: 4, FlipSinToCos: true,
		DownBlockTypes:   []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
		UpBlockTypes:     []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
		MidBlockType:     "UNetMidBlock2DCrossAttn",
		BlockOutChannels: []int64{320, 640, 1280, 1280}, LayersPerBlock: 2, DownsamplePadding: 1,
		MidBlockScaleFactor: 1, ActFn: "silu", NormNumGroups: 32, NormEps: 1e-5, CrossAttentionDim: 768,
		ResnetTimeScaleShift: "default", TimeEmbeddingType: "positional", ConvInKernel: 3, ConvOutKernel: 3,
		AttentionHeadDim: 8.0, TransformerLayersPerBlock: 1.0,
	}
	if err := c.Check(); err != nil {
		panic(err)
	}
	return c
}
