package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/sd"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/model/vae"
)

// StableDiffusionScheduler is the noise schedule SD 1.x was trained with
// (its scheduler_config.json), for single files, which carry none.
func StableDiffusionScheduler() SchedulerConfig {
	c := DefaultSchedulerConfig()
	c.BetaStart, c.BetaEnd, c.BetaSchedule = 0.00085, 0.012, "scaled_linear"
	c.ClipSample, c.SetAlphaToOne, c.StepsOffset = false, false, 1
	return c
}

// sd1Heads is SD 1.x's attention heads per UNet block, which a checkpoint's
// shapes cannot tell.
const sd1Heads = 8

func loadSingleFile(path string, o LoadOptions) (m *Model, err error) {
	raw, err := nn.OpenFiles(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	defer raw.Close()

	tokDir := o.Tokenizer
	if tokDir == "" {
		tokDir = filepath.Join(filepath.Dir(path), "tokenizer")
	}
	if _, err := os.Stat(filepath.Join(tokDir, "vocab.json")); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("model %s: a single-file checkpoint has no tokenizer; give --tokenizer DIR (the tokenizer/ folder of an SD 1.x diffusers model)", path)
	}

	var uc unet.Config
	var vc vae.Config
	var tc clip.TextConfig
	if o.Configs != "" {
		if uc, err = unet.LoadConfig(filepath.Join(o.Configs, "unet", "config.json")); err != nil {
			return nil, err
		}
		if vc, err = vae.LoadConfig(filepath.Join(o.Configs, "vae", "config.json")); err != nil {
			return nil, err
		}
		if tc, err = clip.LoadTextConfig(filepath.Join(o.Configs, "text_encoder", "config.json")); err != nil {
			return nil, err
		}
	} else if uc, err = sd.InferUNetConfig(raw, sd1Heads); err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	levels, layers := len(vc.BlockOutChannels), int(vc.LayersPerBlock)
	if o.Configs == "" {
		if levels, layers, err = sd.InferVAELayout(raw); err != nil {
			return nil, fmt.Errorf("model %s: %w", path, err)
		}
	}
	file, err := sd.OpenSingleFile(path, uc, levels, layers)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if o.Configs == "" {
		if vc, err = inferVAEConfig(file.VAE, levels, layers); err != nil {
			return nil, fmt.Errorf("model %s: %w", path, err)
		}
		if tc, err = inferTextConfig(file.Text); err != nil {
			return nil, fmt.Errorf("model %s: %w", path, err)
		}
	}

	m = &Model{Name: modelName(path), Options: o.Options, Scheduler: StableDiffusionScheduler()}
	defer func() {
		if err != nil {
			m.Free()
			m = nil
		}
	}()
	if m.Tokenizer, err = clip.LoadTokenizer(tokDir); err != nil {
		return m, err
	}
	if m.Text, err = clip.TextEncoderFromSource(file.Text, tc, o.Options); err != nil {
		return m, fmt.Errorf("model %s: %w", path, err)
	}
	if m.UNet, err = unet.FromSource(file.UNet, uc, o.Options); err != nil {
		return m, fmt.Errorf("model %s: %w", path, err)
	}
	if m.VAE, err = vae.FromSource(file.VAE, vc, o.Options); err != nil {
		return m, fmt.Errorf("model %s: %w", path, err)
	}
	return m, nil
}

// inferVAEConfig reads the VAE's widths from its (diffusers-named) weights;
// the rest is SD's AutoencoderKL.
func inferVAEConfig(src nn.Source, levels, layers int) (vae.Config, error) {
	c := vae.DefaultConfig()
	c.LayersPerBlock = int64(layers)
	c.DownBlockTypes, c.UpBlockTypes, c.BlockOutChannels = nil, nil, nil
	for i := range levels {
		s, ok := src.Shape(fmt.Sprintf("encoder.down_blocks.%d.resnets.0.conv1.weight", i))
		if !ok {
			return c, fmt.Errorf("vae: no encoder level %d", i)
		}
		c.BlockOutChannels = append(c.BlockOutChannels, s[0])
		c.DownBlockTypes = append(c.DownBlockTypes, "DownEncoderBlock2D")
		c.UpBlockTypes = append(c.UpBlockTypes, "UpDecoderBlock2D")
	}
	if s, ok := src.Shape("quant_conv.weight"); ok {
		c.LatentChannels = s[0] / 2
	}
	if s, ok := src.Shape("encoder.conv_in.weight"); ok {
		c.InChannels = s[1]
	}
	if s, ok := src.Shape("decoder.conv_out.weight"); ok {
		c.OutChannels = s[0]
	}
	return c, c.Validate()
}

// inferTextConfig reads CLIP's sizes from its weights. Heads are not in the
// shapes: OpenAI's and OpenCLIP's text towers use 64-wide heads.
func inferTextConfig(src nn.Source) (clip.TextConfig, error) {
	tok, ok1 := src.Shape("text_model.embeddings.token_embedding.weight")
	pos, ok2 := src.Shape("text_model.embeddings.position_embedding.weight")
	fc1, ok3 := src.Shape("text_model.encoder.layers.0.mlp.fc1.weight")
	if !ok1 || !ok2 || !ok3 {
		return clip.TextConfig{}, fmt.Errorf("text encoder weights are incomplete")
	}
	layers := 0
	for _, k := range src.Keys() {
		if rest, ok := strings.CutPrefix(k, "text_model.encoder.layers."); ok {
			if n, err := strconv.Atoi(rest[:strings.IndexByte(rest, '.')]); err == nil && n+1 > layers {
				layers = n + 1
			}
		}
	}
	c := clip.TextConfig{
		VocabSize: tok[0], HiddenSize: tok[1], IntermediateSize: fc1[0], NumHiddenLayers: layers,
		NumAttentionHeads: tok[1] / 64, MaxPositionEmbeddings: pos[0], HiddenAct: "quick_gelu",
		LayerNormEps: 1e-5, EOSTokenID: 2,
	}
	if tok[1]%64 != 0 {
		return c, fmt.Errorf("text encoder width %d is not a multiple of 64 heads wide; give the configs of a matching diffusers folder", tok[1])
	}
	return c, c.Validate()
}
