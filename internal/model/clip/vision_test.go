package clip

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The README's tolerance; fp32 against fp64 differs by 3.3e-6 (values up to 5.6).
const visionAtol = 1e-5

func loadTinyVision(t *testing.T) *VisionEncoder {
	t.Helper()
	m, err := LoadVisionEncoder(golden.Path(t, "tiny-ip-adapter", "image_encoder"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

func TestVisionEncoderMatchesTransformers(t *testing.T) {
	m := loadTinyVision(t)
	f := golden.File(t, "tiny-ip-adapter", "golden.safetensors")
	out := m.Forward(golden.Tensor(t, f, "preproc.square_56"))
	defer out.Free()
	if len(out.Hidden) != 4 {
		t.Fatalf("%d hidden states, want 4", len(out.Hidden))
	}
	for _, c := range []struct {
		key string
		got *torch.Tensor
	}{
		{"image_encoder.hidden_states.0", out.Hidden[0]},
		{"image_encoder.hidden_states.1", out.Hidden[1]},
		{"image_encoder.hidden_states.2", out.Hidden[2]},
		{"image_encoder.hidden_states.3", out.Hidden[3]},
		{"image_encoder.penultimate", out.Penultimate()},
		{"image_encoder.last_hidden_state", out.LastHidden()},
		{"image_encoder.image_embeds", out.ImageEmbeds},
	} {
		golden.Compare(t, c.key, c.got, golden.Tensor(t, f, c.key), visionAtol)
	}

	// diffusers' negative image embedding: the encoder on all-zero pixels.
	zeros := m.Forward(torch.Zeros(1, 3, 56, 56))
	defer zeros.Free()
	golden.Compare(t, "image_encoder.uncond_penultimate", zeros.Penultimate(),
		golden.Tensor(t, f, "image_encoder.uncond_penultimate"), visionAtol)
}

// TestIPAdapterImageEmbeds follows diffusers' encode_image from the JPEG
// file to the tokens the pipeline hands the resampler: [negative, positive]
// penultimate hidden states.
func TestIPAdapterImageEmbeds(t *testing.T) {
	m := loadTinyVision(t)
	cfg, err := LoadImageProcessorConfig(golden.Path(t, "tiny-ip-adapter", "feature_extractor", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	photo, err := data.ReadImage(golden.Path(t, "tiny-ip-adapter", "dog00.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	pixels := cfg.Preprocess(photo)
	batch := torch.Cat([]*torch.Tensor{torch.ZerosLike(pixels), pixels}, 0)
	out := m.Forward(batch)
	defer out.Free()
	got := out.Penultimate().Unsqueeze(1) // [2, num_images=1, 17, 32]
	f := golden.File(t, "tiny-ip-adapter", "golden.safetensors")
	golden.Compare(t, "pipeline.image_embeds", got, golden.Tensor(t, f, "pipeline.image_embeds"), visionAtol)
	golden.Compare(t, "resampler.input", out.Penultimate().Narrow(0, 1, 1), golden.Tensor(t, f, "resampler.input"), visionAtol)
}

func TestVisionEncoderRejectsWrongSize(t *testing.T) {
	m := loadTinyVision(t)
	err := torch.Try(func() { m.Forward(torch.Zeros(1, 3, 64, 64)) })
	if err == nil || !strings.Contains(err.Error(), "want pixels [B 3 56 56]") {
		t.Errorf("64x64 pixels: error %v", err)
	}
}

func TestVisionEncoderCheckpointErrors(t *testing.T) {
	const postNorm = "vision_model.post_layernorm.weight"
	for _, c := range []struct {
		name   string
		edit   func(map[string]*torch.Tensor)
		errHas []string // nil: loads
	}{
		{"complete", func(map[string]*torch.Tensor) {}, nil},
		{"position_ids buffer", func(w map[string]*torch.Tensor) {
			w["vision_model.embeddings.position_ids"] = torch.Options{DType: torch.Int64}.Arange(0, 17, 1).Unsqueeze(0)
		}, nil},
		{"whole CLIPModel", func(w map[string]*torch.Tensor) {
			w["text_model.final_layer_norm.weight"] = torch.Zeros(32)
			w["text_projection.weight"] = torch.Zeros(32, 32)
			w["logit_scale"] = torch.Zeros()
		}, nil},
		{"missing", func(w map[string]*torch.Tensor) { delete(w, "visual_projection.weight") },
			[]string{"1 missing (visual_projection.weight)"}},
		{"wrong shape", func(w map[string]*torch.Tensor) { w[postNorm] = torch.Zeros(31) },
			[]string{"1 wrong shape (" + postNorm + " is [31], want [32])"}},
		{"unexpected", func(w map[string]*torch.Tensor) { w["vision_model.extra"] = torch.Zeros(1) },
			[]string{"1 unexpected (vision_model.extra)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := golden.File(t, "tiny-ip-adapter", "image_encoder", "model.safetensors")
			w := map[string]*torch.Tensor{}
			for _, k := range src.Header.Names() {
				w[k] = golden.Tensor(t, src, k)
			}
			c.edit(w)
			dir := t.TempDir()
			copyTestFile(t, golden.Path(t, "tiny-ip-adapter", "image_encoder", "config.json"), filepath.Join(dir, "config.json"))
			if err := torch.SaveSafetensors(filepath.Join(dir, "model.safetensors"), w, nil); err != nil {
				t.Fatal(err)
			}
			m, err := LoadVisionEncoder(dir, torch.Options{})
			want := c.errHas
			if want != nil {
				want = append(want, dir)
			}
			checkLoad(t, m, err, want)
		})
	}
}

func TestLoadVisionConfig(t *testing.T) {
	cfg, err := LoadVisionConfig(golden.Path(t, "tiny-ip-adapter", "image_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := VisionConfig{HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 3, NumAttentionHeads: 4,
		NumChannels: 3, ImageSize: 56, PatchSize: 14, ProjectionDim: 32, HiddenAct: "gelu", LayerNormEps: 1e-5}
	if cfg != want {
		t.Errorf("read %+v, want %+v", cfg, want)
	}

	for _, c := range []struct {
		name, json string
		want       VisionConfig
		errHas     string
	}{
		// What a config leaves out is CLIPVisionConfig's default (ViT-B/32).
		{"defaults", `{}`, defaultVisionConfig(), ""},
		// A whole CLIPModel's config.json holds the tower's in vision_config.
		{"CLIPModel", `{"model_type": "clip", "projection_dim": 512, "text_config": {}, "vision_config": {"patch_size": 16}}`,
			func() VisionConfig { c := defaultVisionConfig(); c.PatchSize = 16; return c }(), ""},
		{"patch", `{"image_size": 56, "patch_size": 15}`, VisionConfig{}, "image_size 56 is not a multiple of patch_size 15"},
		{"heads", `{"num_attention_heads": 5}`, VisionConfig{}, "not a multiple of num_attention_heads 5"},
		{"activation", `{"hidden_act": "swishy"}`, VisionConfig{}, `hidden_act "swishy"`},
	} {
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := LoadVisionConfig(path)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: error %v, want one naming the file and saying %q", c.name, err, c.errHas)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: read %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestVisionEncoderFreesAsItGoes(t *testing.T) {
	m := loadTinyVision(t)
	pixels := golden.Tensor(t, golden.File(t, "tiny-ip-adapter", "golden.safetensors"), "preproc.square_56")
	m.Forward(pixels).Free()
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	for range 20 {
		m.Forward(pixels).Free()
	}
	if after := torch.LiveTensors(); after != before {
		t.Errorf("live tensors %d after 20 forwards, %d before", after, before)
	}
}

func copyTestFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
