// Package toymodel makes the toy world's Stable Diffusion: a diffusers
// folder with every part SD 1.5 has (CLIP tokenizer and text encoder, UNet,
// VAE, CLIP image encoder, scheduler) at sizes two CPU cores can train from
// scratch, freshly initialised the way PyTorch, diffusers and transformers
// initialise new modules. The networks are built by the project's own
// loaders, so the files hold exactly the keys those loaders read.
package toymodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/model/vae"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
)

// Spec sizes every part of the model. Each section uses the key names of
// that part's config.json (diffusers' or transformers'), so a section reads
// like the file it becomes; keys a section leaves out keep Default's value.
type Spec struct {
	Tokenizer    TokenizerSpec            `json:"tokenizer"`
	TextEncoder  TextEncoderSpec          `json:"text_encoder"`
	VAE          vae.Config               `json:"vae"`
	UNet         unet.Config              `json:"unet"`
	ImageEncoder clip.VisionConfig        `json:"image_encoder"`
	Scheduler    pipeline.SchedulerConfig `json:"scheduler"`
}

// TokenizerSpec is the word list the BPE vocabulary is built for.
type TokenizerSpec struct {
	// Words each become one token; any other text still tokenises, into
	// byte symbols.
	Words          []string `json:"words"`
	ModelMaxLength int      `json:"model_max_length"`
}

// TextEncoderSpec is a CLIPTextModel's config without the two numbers the
// tokenizer decides (vocab_size and eos_token_id).
type TextEncoderSpec struct {
	clip.TextConfig
	// ProjectionDim is CLIPTextConfig's projection_dim: unused by
	// CLIPTextModel itself, kept so that the file is a complete config.
	ProjectionDim int64 `json:"projection_dim"`
}

// ToyWords are the words the toy world's captions and phrases are made of
// (internal/data's colours, texture words, shapes and grounds, articles and
// joints), the texture names of its identity ids, and the words of SD's
// usual prompt scaffolding ("a photo of a ..."), which the static refiner
// uses.
var ToyWords = []string{
	"red", "blue", "green", "yellow", "orange", "purple",
	"solid", "striped", "dotted", "checked", "stripes", "dots", "checks",
	"circle", "square", "triangle", "star", "ring", "cross",
	"grass", "sand", "water", "snow",
	"a", "an", "and", "on", "in",
	"photo", "of", "the", "with",
}

// Default is configs/toyworld-model.yaml: a test keeps the two equal.
func Default() Spec {
	return Spec{
		Tokenizer: TokenizerSpec{Words: slices.Clone(ToyWords), ModelMaxLength: 77},
		TextEncoder: TextEncoderSpec{
			TextConfig: clip.TextConfig{
				HiddenSize: 64, IntermediateSize: 256, NumHiddenLayers: 2, NumAttentionHeads: 4,
				MaxPositionEmbeddings: 77, HiddenAct: "quick_gelu", LayerNormEps: 1e-5,
			},
			ProjectionDim: 64,
		},
		VAE: vae.Config{
			InChannels: 3, OutChannels: 3,
			DownBlockTypes:   []string{"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"},
			UpBlockTypes:     []string{"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"},
			BlockOutChannels: []int64{32, 64, 64}, LayersPerBlock: 1, ActFn: "silu",
			LatentChannels: 8, NormNumGroups: 32, SampleSize: 64,
			// 1 until the VAE is trained: the trainer measures the real one.
			ScalingFactor: 1, ForceUpcast: true, UseQuantConv: true, UsePostQuantConv: true,
		},
		UNet: unet.Config{
			SampleSize: 16, InChannels: 8, OutChannels: 8, FlipSinToCos: true,
			DownBlockTypes:   []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
			MidBlockType:     "UNetMidBlock2DCrossAttn",
			UpBlockTypes:     []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
			BlockOutChannels: []int64{64, 128, 128}, LayersPerBlock: 1, DownsamplePadding: 1,
			MidBlockScaleFactor: 1, ActFn: "silu", NormNumGroups: 32, NormEps: 1e-5, CrossAttentionDim: 64,
			ResnetTimeScaleShift: "default", TimeEmbeddingType: "positional", ConvInKernel: 3, ConvOutKernel: 3,
			OnlyCrossAttention: false, AttentionType: "default",
			// SD 1.x's meaning: 4 heads per block.
			AttentionHeadDim: 4.0, TransformerLayersPerBlock: 1.0,
		},
		ImageEncoder: clip.VisionConfig{
			HiddenSize: 64, IntermediateSize: 256, NumHiddenLayers: 2, NumAttentionHeads: 4,
			NumChannels: 3, ImageSize: 64, PatchSize: 8, ProjectionDim: 64,
			// ViT-H/14's (IP-Adapter's image encoder) activation.
			HiddenAct: "gelu", LayerNormEps: 1e-5,
		},
		// DDIM with SD 1.5's betas at zero terminal SNR, v-prediction and
		// trailing timesteps (configs/toyworld-model.yaml says why).
		Scheduler: pipeline.SchedulerConfig{
			NumTrainTimesteps: 1000, BetaStart: 0.00085, BetaEnd: 0.012, BetaSchedule: "scaled_linear",
			RescaleZeroSNR: true, ClipSample: false, ClipSampleRange: 1, SetAlphaToOne: false, StepsOffset: 1,
			PredictionType: pipeline.PredictVelocity, TimestepSpacing: "trailing",
		},
	}
}

// sections are Spec's top-level keys, in file order.
var sections = []string{"tokenizer", "text_encoder", "vae", "unet", "image_encoder", "scheduler"}

// LoadSpec reads a YAML file of Spec sections onto Default and validates
// the result. An unknown section or key is an error: a typo would
// otherwise leave a size at its default unnoticed.
func LoadSpec(path string) (Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Spec{}, fmt.Errorf("model config: %w", err)
	}
	s, err := parseSpec(b)
	if err != nil {
		return Spec{}, fmt.Errorf("model config %s: %w", path, err)
	}
	return s, nil
}

func parseSpec(b []byte) (Spec, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Spec{}, errors.New(strings.ReplaceAll(err.Error(), "\n", " "))
	}
	s := Default()
	targets := map[string]any{
		"tokenizer": &s.Tokenizer, "text_encoder": &s.TextEncoder, "vae": &s.VAE,
		"unet": &s.UNet, "image_encoder": &s.ImageEncoder, "scheduler": &s.Scheduler,
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		target, ok := targets[k]
		if !ok {
			return Spec{}, fmt.Errorf("unknown section %q (want %s)", k, strings.Join(sections, ", "))
		}
		if doc[k] == nil {
			continue
		}
		// Through JSON, so that each section decodes by its config.json
		// names, numbers land in `any` fields as float64 as they do from a
		// config.json, and lists replace the defaults rather than merge.
		raw, err := json.Marshal(doc[k])
		if err != nil {
			return Spec{}, fmt.Errorf("%s: %w", k, err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(target); err != nil {
			return Spec{}, fmt.Errorf("%s: %w", k, err)
		}
	}
	if s.TextEncoder.VocabSize != 0 || s.TextEncoder.EOSTokenID != 0 {
		return Spec{}, errors.New("text_encoder: vocab_size and eos_token_id come from the tokenizer; leave them out")
	}
	return s, s.Validate()
}

// Validate checks each part as its loader would, and that the parts fit
// together.
func (s Spec) Validate() error {
	u := s.UNet
	if err := u.Check(); err != nil {
		return fmt.Errorf("unet: %w", err)
	}
	if err := s.VAE.Validate(); err != nil {
		return fmt.Errorf("vae: %w", err)
	}
	text := s.TextEncoder.TextConfig
	text.VocabSize = 1 // the tokenizer's, checked when it is built
	if err := text.Validate(); err != nil {
		return fmt.Errorf("text_encoder: %s", oneLine(err))
	}
	if err := s.ImageEncoder.Validate(); err != nil {
		return fmt.Errorf("image_encoder: %s", oneLine(err))
	}
	if err := s.Scheduler.Validate(); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	t := s.Tokenizer
	switch {
	case len(t.Words) == 0:
		return errors.New("tokenizer: words is empty")
	case t.ModelMaxLength < 2 || t.ModelMaxLength > int(text.MaxPositionEmbeddings):
		return fmt.Errorf("tokenizer: model_max_length %d must be 2 to text_encoder's max_position_embeddings %d",
			t.ModelMaxLength, text.MaxPositionEmbeddings)
	case s.TextEncoder.ProjectionDim <= 0:
		return fmt.Errorf("text_encoder: projection_dim %d must be positive", s.TextEncoder.ProjectionDim)
	case u.CrossAttentionDim != text.HiddenSize:
		return fmt.Errorf("unet: cross_attention_dim %d differs from text_encoder's hidden_size %d", u.CrossAttentionDim, text.HiddenSize)
	case u.InChannels != s.VAE.LatentChannels || u.OutChannels != s.VAE.LatentChannels:
		return fmt.Errorf("unet: in_channels %d and out_channels %d must be vae's latent_channels %d",
			u.InChannels, u.OutChannels, s.VAE.LatentChannels)
	case int64(u.SampleSize)*int64(s.VAE.Downsampling()) != s.VAE.SampleSize:
		return fmt.Errorf("unet: sample_size %d times the VAE's downsampling %d is not vae's sample_size %d",
			u.SampleSize, s.VAE.Downsampling(), s.VAE.SampleSize)
	}
	return nil
}

// oneLine joins an errors.Join list into one line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
