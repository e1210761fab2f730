package clip

import (
	"image"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Tolerances of eval/tiny-clip/README.md: hidden states and embeddings
// 1e-5, normalised embeddings 1e-6, logits (up to ~51) 1e-4; pixels are
// bitwise.
const (
	modelAtol      = 1e-5
	normalizedAtol = 1e-6
	logitsAtol     = 1e-4
)

// tinyCLIPPrompts are the golden file's "prompts" metadata, in row order.
var tinyCLIPPrompts = []string{
	"a dog on the beach", "a dog wearing a red hat",
	"a backpack in the snow", "a backpack with a city in the background",
}

func loadTinyCLIP(t *testing.T) *Model {
	t.Helper()
	m, err := LoadModel(golden.Path(t, "eval", "tiny-clip"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

func TestModelConfig(t *testing.T) {
	m := loadTinyCLIP(t)
	c := m.Config
	if c.ProjectionDim != 24 || c.Vision.ProjectionDim != 24 || c.Text.HiddenSize != 16 || c.Vision.HiddenSize != 32 ||
		c.Text.EOSTokenID != 2 || c.Vision.PatchSize != 8 || c.Vision.ImageSize != 32 || c.Text.NumAttentionHeads != 2 {
		t.Errorf("config %+v", c)
	}
	if got := m.LogitScale.Item(); got != float64(float32(4.6051702)) {
		t.Errorf("logit_scale %v", got)
	}
}

func TestModelRejectsOtherConfigs(t *testing.T) {
	// A CLIPVisionModelWithProjection folder has no text tower.
	_, err := LoadModel(golden.Path(t, "tiny-ip-adapter", "image_encoder"), torch.Options{})
	if err == nil {
		t.Fatal("loaded an image encoder as a CLIPModel")
	}
}

// tinyCLIPImages rebuilds the seven golden images (image_order) from
// their sources: the Pillow decodings of the photos, the synthetic
// pictures and two crops.
func tinyCLIPImages(t *testing.T, f *torch.SafetensorsFile) []*data.RGB {
	t.Helper()
	photo := func(name string) *data.RGB {
		img, err := data.ReadImage(golden.Path(t, "eval", "tiny-clip", "photos", name))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	synth := func(key string) *data.RGB {
		x := golden.Tensor(t, f, key) // [H, W, 3] u8
		return &data.RGB{W: int(x.Size(1)), H: int(x.Size(0)), Pix: torch.Data[uint8](x)}
	}
	p0, p1, p2 := photo("dog_00_decoded_pil.png"), photo("dog_02_decoded_pil.png"), photo("backpack_00_decoded_pil.png")
	return []*data.RGB{
		p0, p1, p2,
		synth("image.source_u8.synth0"), synth("image.source_u8.synth1"),
		p1.Crop(image.Rect(40, 60, 450, 360)), p2.Crop(image.Rect(90, 12, 390, 499)),
	}
}

func TestModelInputsMatchTransformers(t *testing.T) {
	f := golden.File(t, "eval", "tiny-clip", "golden.safetensors")
	cfg, err := LoadImageProcessorConfig(golden.Path(t, "eval", "tiny-clip", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pixels []*torch.Tensor
	for _, img := range tinyCLIPImages(t, f) {
		pixels = append(pixels, cfg.Preprocess(img))
	}
	golden.Compare(t, "image.pixel_values", torch.Cat(pixels, 0), golden.Tensor(t, f, "image.pixel_values"), 0)

	tok, err := LoadTokenizer(golden.Path(t, "eval", "tiny-clip", "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, p := range tinyCLIPPrompts {
		row, _ := tok.EncodePadded(p)
		ids = append(ids, row...)
	}
	golden.Compare(t, "text.input_ids", torch.New(ids, int64(len(tinyCLIPPrompts)), 77),
		golden.Tensor(t, f, "text.input_ids"), 0)
}

func TestModelMatchesTransformers(t *testing.T) {
	m := loadTinyCLIP(t)
	f := golden.File(t, "eval", "tiny-clip", "golden.safetensors")
	pixels, ids := golden.Tensor(t, f, "image.pixel_values"), golden.Tensor(t, f, "text.input_ids")

	vision := m.Vision.Forward(pixels)
	defer vision.Free()
	text := m.TextForward(ids, golden.Tensor(t, f, "text.attention_mask"))
	defer text.Free()
	images, texts := m.ImageEmbeds(pixels), m.TextEmbeds(ids)
	for _, c := range []struct {
		key  string
		got  *torch.Tensor
		atol float64
	}{
		{"image.hidden_states.0", vision.Hidden[0], modelAtol},
		{"image.hidden_states.1", vision.Hidden[1], modelAtol},
		{"image.hidden_states.2", vision.Hidden[2], modelAtol},
		{"image.pooled", m.Vision.PostNorm.Forward(vision.LastHidden().Select(1, 0)), modelAtol},
		{"image.image_embeds", m.ImageFeatures(pixels), modelAtol},
		{"image.image_embeds_f64", m.ImageFeatures(pixels), modelAtol},
		{"image.image_embeds_normalized", images, normalizedAtol},
		{"text.hidden_states.0", text.Hidden[0], modelAtol},
		{"text.hidden_states.1", text.Hidden[1], modelAtol},
		{"text.hidden_states.2", text.Hidden[2], modelAtol},
		{"text.last_hidden_state", text.LastHidden, modelAtol},
		{"text.eos_index", m.Text.poolIndex(ids), 0},
		{"text.pooled", text.Pooled, modelAtol},
		{"text.text_embeds", m.TextFeatures(ids), modelAtol},
		{"text.text_embeds_f64", m.TextFeatures(ids), modelAtol},
		{"text.text_embeds_normalized", texts, normalizedAtol},
		{"clip.logits_per_image", m.LogitsPerImage(images, texts), logitsAtol},
		{"clip.logits_per_text", m.LogitsPerImage(images, texts).Transpose(0, 1), logitsAtol},
	} {
		golden.Compare(t, c.key, c.got, golden.Tensor(t, f, c.key), c.atol)
	}

	// Without the attention mask only the padded positions change.
	unmasked := m.Text.Forward(ids)
	defer unmasked.Free()
	golden.Compare(t, "text.pooled (no attention mask)", unmasked.Pooled, golden.Tensor(t, f, "text.pooled"), modelAtol)

	// padding="longest" (10 positions) pools the same end tokens.
	longest := m.TextFeatures(golden.Tensor(t, f, "text.input_ids_longest"))
	golden.Compare(t, "text.text_embeds (longest padding)", longest, golden.Tensor(t, f, "text.text_embeds"), modelAtol)
}
