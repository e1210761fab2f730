package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Model is transformers' CLIPModel: both towers, each projected to the
// joint embedding space, and the learned temperature of the contrastive
// logits. It is what DreamBooth's CLIP-I and CLIP-T scores embed images
// and prompts with (openai/clip-vit-base-patch32).
type Model struct {
	Config         ModelConfig
	Text           *TextEncoder
	Vision         *VisionEncoder // carries visual_projection itself
	TextProjection *nn.Linear     // [projection_dim, text hidden], no bias
	LogitScale     *torch.Tensor  // 0-dim, ln of the logits' scale
}

// ModelConfig is the part of a transformers CLIPConfig (config.json of a
// CLIPModel) that shapes the model.
type ModelConfig struct {
	Text          TextConfig
	Vision        VisionConfig // Vision.ProjectionDim is ProjectionDim
	ProjectionDim int64
}

// defaultModelTextConfig is CLIPTextConfig(): transformers fills what a
// CLIPModel's text_config leaves out from it (LoadTextConfig, made for
// SD's text_encoder folders, insists on the sizes instead).
func defaultModelTextConfig() TextConfig {
	return TextConfig{
		VocabSize: 49408, HiddenSize: 512, IntermediateSize: 2048, NumHiddenLayers: 12,
		NumAttentionHeads: 8, MaxPositionEmbeddings: 77, HiddenAct: "quick_gelu",
		LayerNormEps: 1e-5, EOSTokenID: 49407,
	}
}

// LoadModelConfig reads the config.json of a CLIPModel, as
// CLIPConfig.from_pretrained does: text_config and vision_config default
// field by field, and the top-level projection_dim (default 512) sizes both
// projections, whatever the sub-configs say.
func LoadModelConfig(path string) (ModelConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ModelConfig{}, err
	}
	var whole struct {
		ModelType     string          `json:"model_type"`
		ProjectionDim *int64          `json:"projection_dim"`
		TextConfig    json.RawMessage `json:"text_config"`
		VisionConfig  json.RawMessage `json:"vision_config"`
	}
	if err := json.Unmarshal(b, &whole); err != nil {
		return ModelConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	if whole.ModelType != "clip" || whole.TextConfig == nil || whole.VisionConfig == nil {
		return ModelConfig{}, fmt.Errorf("%s: not a CLIPModel config (want model_type \"clip\" with text_config and vision_config)", path)
	}
	cfg := ModelConfig{Text: defaultModelTextConfig(), Vision: defaultVisionConfig(), ProjectionDim: 512}
	if whole.ProjectionDim != nil {
		cfg.ProjectionDim = *whole.ProjectionDim
	}
	if err := json.Unmarshal(whole.TextConfig, &cfg.Text); err != nil {
		return ModelConfig{}, fmt.Errorf("%s: text_config: %w", path, err)
	}
	if err := json.Unmarshal(whole.VisionConfig, &cfg.Vision); err != nil {
		return ModelConfig{}, fmt.Errorf("%s: vision_config: %w", path, err)
	}
	cfg.Vision.ProjectionDim = cfg.ProjectionDim
	if err := cfg.Validate(); err != nil {
		return ModelConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports what is wrong with either tower's config or the
// projection width.
func (c ModelConfig) Validate() error {
	var errs []error
	if err := c.Text.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("text_config: %w", err))
	}
	if err := c.Vision.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("vision_config: %w", err))
	}
	if c.ProjectionDim <= 0 {
		errs = append(errs, fmt.Errorf("projection_dim is %d, want > 0", c.ProjectionDim))
	} else if c.Vision.ProjectionDim != c.ProjectionDim {
		errs = append(errs, fmt.Errorf("vision projection_dim %d differs from projection_dim %d",
			c.Vision.ProjectionDim, c.ProjectionDim))
	}
	return errors.Join(errs...)
}

// NewModel builds the model from the CLIPModel checkpoint at p (keys
// "text_model.*", "vision_model.*", "text_projection.weight",
// "visual_projection.weight", "logit_scale"). cfg must be valid
// (LoadModelConfig checks it).
func NewModel(p nn.Path, cfg ModelConfig) *Model {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("clip.NewModel: %v", err))
	}
	return &Model{
		Config:         cfg,
		Text:           NewTextEncoder(p, cfg.Text),
		Vision:         NewVisionEncoder(p, cfg.Vision),
		TextProjection: nn.NewLinear(p.Sub("text_projection"), cfg.Text.HiddenSize, cfg.ProjectionDim, false),
		LogitScale:     p.Param("logit_scale"),
	}
}

// LoadModel reads config.json and the weights (model.safetensors, or the
// shards model.safetensors.index.json lists) of a transformers CLIPModel
// folder, converting them to opts.
func LoadModel(dir string, opts torch.Options) (*Model, error) {
	return loadTower("CLIP model", dir, LoadModelConfig, ModelFromSource, opts)
}

// ModelFromSource builds the model from weights named as transformers
// names them.
func ModelFromSource(src nn.Source, cfg ModelConfig, opts torch.Options) (*Model, error) {
	// position_ids are buffers (aranges) that older transformers saved.
	return towerFromSource("CLIP model", src, cfg, NewModel, opts, func(key string) bool {
		return key == "text_model.embeddings.position_ids" || key == "vision_model.embeddings.position_ids"
	})
}

// Free releases the model's parameters.
func (m *Model) Free() {
	m.Text.Free()
	m.Vision.Free()
	m.TextProjection.Weight.Free()
	m.LogitScale.Free()
}

// ImageFeatures is get_image_features(pixel_values): the projected class
// token [B, projection_dim], not normalised. pixels are preprocessed images
// [B, C, S, S] (ImageProcessorConfig.Preprocess).
func (m *Model) ImageFeatures(pixels *torch.Tensor) *torch.Tensor {
	out := m.Vision.Forward(pixels)
	nn.Free(out.Hidden)
	return out.ImageEmbeds
}

// TextFeatures is get_text_features(input_ids): the final norm at each
// prompt's end token, projected [B, projection_dim], not normalised. ids
// are [B, L] token ids; an attention mask is not needed, since the causal
// mask already keeps the end token from seeing the padding after it.
func (m *Model) TextFeatures(ids *torch.Tensor) *torch.Tensor {
	out := m.Text.Forward(ids)
	defer out.Free()
	return m.TextProjection.Forward(out.Pooled)
}

// TextForward is the text tower as CLIPModel runs it, with an attention
// mask [B, L] (nil for none); see TextEncoder.ForwardMasked.
func (m *Model) TextForward(ids, attentionMask *torch.Tensor) TextOutput {
	return m.Text.ForwardMasked(ids, attentionMask)
}

// ImageEmbeds is CLIPModel's image_embeds: ImageFeatures scaled to unit
// length.
func (m *Model) ImageEmbeds(pixels *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return Normalize(m.ImageFeatures(pixels)) })
}

// TextEmbeds is CLIPModel's text_embeds: TextFeatures scaled to unit
// length.
func (m *Model) TextEmbeds(ids *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return Normalize(m.TextFeatures(ids)) })
}

// LogitsPerImage is CLIPModel's logits_per_image [images, texts] from the
// normalised embeddings: exp(logit_scale) times their cosines. It computes
// logits_per_text and transposes it, as transformers does, so that the
// products round the same way.
func (m *Model) LogitsPerImage(imageEmbeds, textEmbeds *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		perText := textEmbeds.Matmul(imageEmbeds.Transpose(0, 1)).Mul(m.LogitScale.Exp())
		return perText.Transpose(0, 1)
	})
}

// Normalize divides each row of x [..., D] by its L2 norm, as transformers
// does with x / x.norm(p=2, dim=-1, keepdim=True).
func Normalize(x *torch.Tensor) *torch.Tensor { return x.Div(x.NormKeepDim(-1)) }
