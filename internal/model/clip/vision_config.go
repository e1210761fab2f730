package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// VisionConfig is the part of a transformers CLIPVisionConfig (config.json)
// that shapes the vision tower.
type VisionConfig struct {
	HiddenSize        int64   `json:"hidden_size"`
	IntermediateSize  int64   `json:"intermediate_size"`
	NumHiddenLayers   int     `json:"num_hidden_layers"`
	NumAttentionHeads int64   `json:"num_attention_heads"`
	NumChannels       int64   `json:"num_channels"`
	ImageSize         int64   `json:"image_size"`
	PatchSize         int64   `json:"patch_size"`
	ProjectionDim     int64   `json:"projection_dim"`
	HiddenAct         string  `json:"hidden_act"`
	LayerNormEps      float64 `json:"layer_norm_eps"`
}

// defaultVisionConfig is CLIPVisionConfig() (ViT-B/32): transformers fills
// what a config.json leaves out from it.
func defaultVisionConfig() VisionConfig {
	return VisionConfig{
		HiddenSize: 768, IntermediateSize: 3072, NumHiddenLayers: 12, NumAttentionHeads: 12,
		NumChannels: 3, ImageSize: 224, PatchSize: 32, ProjectionDim: 512,
		HiddenAct: "quick_gelu", LayerNormEps: 1e-5,
	}
}

// LoadVisionConfig reads the config.json of a CLIPVisionModelWithProjection,
// or the vision_config of a whole CLIPModel's, as
// CLIPVisionConfig.from_pretrained does.
func LoadVisionConfig(path string) (VisionConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return VisionConfig{}, err
	}
	var whole struct {
		ModelType    string          `json:"model_type"`
		VisionConfig json.RawMessage `json:"vision_config"`
	}
	if err := json.Unmarshal(b, &whole); err != nil {
		return VisionConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	if whole.ModelType == "clip" && whole.VisionConfig != nil {
		b = whole.VisionConfig
	}
	cfg := defaultVisionConfig()
	if err := json.Unmarshal(b, &cfg); err != nil {
		return VisionConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return VisionConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports a size that is missing or inconsistent and an
// activation the encoder does not know.
func (c VisionConfig) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", int64(c.NumHiddenLayers)},
		{"num_attention_heads", c.NumAttentionHeads},
		{"num_channels", c.NumChannels},
		{"image_size", c.ImageSize},
		{"patch_size", c.PatchSize},
		{"projection_dim", c.ProjectionDim},
	} {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("%s is %d, want > 0", f.name, f.v))
		}
	}
	if c.NumAttentionHeads > 0 && c.HiddenSize%c.NumAttentionHeads != 0 {
		errs = append(errs, fmt.Errorf("hidden_size %d is not a multiple of num_attention_heads %d",
			c.HiddenSize, c.NumAttentionHeads))
	}
	if c.PatchSize > 0 && c.ImageSize%c.PatchSize != 0 {
		errs = append(errs, fmt.Errorf("image_size %d is not a multiple of patch_size %d", c.ImageSize, c.PatchSize))
	}
	if !(c.LayerNormEps > 0) {
		errs = append(errs, fmt.Errorf("layer_norm_eps is %g, want > 0", c.LayerNormEps))
	}
	if _, ok := activations[c.HiddenAct]; !ok {
		errs = append(errs, fmt.Errorf("hidden_act %q is not one of quick_gelu, gelu, gelu_new, gelu_pytorch_tanh", c.HiddenAct))
	}
	return errors.Join(errs...)
}

// Patches is the number of patch tokens, (image_size / patch_size)^2; the
// class token comes before them.
func (c VisionConfig) Patches() int64 {
	n := c.ImageSize / c.PatchSize
	return n * n
}

// layerConfig is the vision tower's transformer layer as NewEncoderLayer
// reads it: the text and vision towers share the layer, which takes only
// its widths, heads, activation and eps from the config.
func (c VisionConfig) layerConfig() TextConfig {
	return TextConfig{
		HiddenSize:        c.HiddenSize,
		IntermediateSize:  c.IntermediateSize,
		NumAttentionHeads: c.NumAttentionHeads,
		HiddenAct:         c.HiddenAct,
		LayerNormEps:      c.LayerNormEps,
	}
}
