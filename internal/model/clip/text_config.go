package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TextConfig is the part of a transformers CLIPTextConfig (config.json)
// that shapes the text encoder.
type TextConfig struct {
	VocabSize             int64   `json:"vocab_size"`
	HiddenSize            int64   `json:"hidden_size"`
	IntermediateSize      int64   `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int64   `json:"num_attention_heads"`
	MaxPositionEmbeddings int64   `json:"max_position_embeddings"`
	HiddenAct             string  `json:"hidden_act"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	EOSTokenID            int64   `json:"eos_token_id"`
}

// LoadTextConfig reads a transformers config.json. The sizes must be given;
// hidden_act, layer_norm_eps and eos_token_id default as in
// CLIPTextConfig when absent.
func LoadTextConfig(path string) (TextConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return TextConfig{}, err
	}
	cfg := TextConfig{HiddenAct: "quick_gelu", LayerNormEps: 1e-5, EOSTokenID: 49407}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return TextConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return TextConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports a size that is missing or inconsistent and an
// activation the encoder does not know.
func (c TextConfig) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"vocab_size", c.VocabSize},
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", int64(c.NumHiddenLayers)},
		{"num_attention_heads", c.NumAttentionHeads},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	} {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("%s is %d, want > 0", f.name, f.v))
		}
	}
	if c.NumAttentionHeads > 0 && c.HiddenSize%c.NumAttentionHeads != 0 {
		errs = append(errs, fmt.Errorf("hidden_size %d is not a multiple of num_attention_heads %d",
			c.HiddenSize, c.NumAttentionHeads))
	}
	if !(c.LayerNormEps > 0) {
		errs = append(errs, fmt.Errorf("layer_norm_eps is %g, want > 0", c.LayerNormEps))
	}
	if _, ok := activations[c.HiddenAct]; !ok {
		errs = append(errs, fmt.Errorf("hidden_act %q is not one of quick_gelu, gelu, gelu_new, gelu_pytorch_tanh", c.HiddenAct))
	}
	return errors.Join(errs...)
}

// activations are transformers' ACT2FN entries a CLIP config may name.
var activations = map[string]func(*torch.Tensor) *torch.Tensor{
	"quick_gelu":        (*torch.Tensor).QuickGELU,
	"gelu":              (*torch.Tensor).GELU,
	"gelu_new":          (*torch.Tensor).GELUTanh,
	"gelu_pytorch_tanh": (*torch.Tensor).GELUTanh,
}
