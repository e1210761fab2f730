package pipeline

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// loadTinyGLIGEN is tiny-sd with tiny-gligen's grounding on its UNet
// (tiny-gligen's base UNet is tiny-sd's, unchanged).
func loadTinyGLIGEN(t *testing.T) (*Model, *gligen.Grounding) {
	t.Helper()
	m := loadTinySD(t)
	g, err := gligen.Load(golden.Path(t, "tiny-gligen", "unet"), m.UNet, m.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Free)
	return m, g
}

// goldenGLIGENRequest is the call tiny-gligen/golden.safetensors was made with.
func goldenGLIGENRequest(t *testing.T, f *torch.SafetensorsFile) GLIGEN {
	return GLIGEN{
		Text2Image: Text2Image{
			Prompt: "a dog and a cat on the grass", Steps: 4, CFGScale: 7.5, Width: 128, Height: 128, Batch: 1,
			Latents: golden.Tensor(t, f, "pipeline.initial_latents"),
		},
		Phrases: []string{"a dog", "a cat"},
		Boxes:   [][4]float64{{0.05, 0.3, 0.45, 0.95}, {0.55, 0.3, 0.95, 0.95}},
		Tau:     0.5,
	}
}

// TestGoldenGLIGENPhrases: phrase tokens (exact) and their text encodings
// (atol 1e-5, a single module).
func TestGoldenGLIGENPhrases(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	f := golden.File(t, "tiny-gligen", "golden.safetensors")
	ids, length, err := m.phraseIDs([]string{"a dog", "a cat"})
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "position_net.phrase_input_ids", torch.New(ids, 2, int64(length)), golden.Tensor(t, f, "position_net.phrase_input_ids"), 0)
	if mask := golden.Tensor(t, f, "position_net.phrase_attention_mask"); mask.Amin().Item() != 1 {
		t.Fatalf("golden phrase attention mask has padding: %v", mask.Float64s())
	}
	torch.NoGrad(func() {
		out := m.Text.Forward(golden.Tensor(t, f, "position_net.phrase_input_ids"))
		defer out.Free()
		golden.Compare(t, "position_net.phrase_last_hidden_state", out.LastHidden, golden.Tensor(t, f, "position_net.phrase_last_hidden_state"), 1e-5)
		golden.Compare(t, "position_net.phrase_pooler_output", m.PhraseEmbeddings([]string{"a dog", "a cat"}),
			golden.Tensor(t, f, "position_net.phrase_pooler_output"), 1e-5)
	})
}

// TestPhrasePaddingIsInvisible: a phrase's embedding does not depend on
// how long the phrases beside it are.
func TestPhrasePaddingIsInvisible(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	torch.NoGrad(func() {
		alone := m.PhraseEmbeddings([]string{"a dog"})
		padded := m.PhraseEmbeddings([]string{"a dog", "a very fluffy tabby cat sitting on a wall"}).Narrow(0, 0, 1)
		golden.Compare(t, "phrase alone vs padded beside a longer one", padded, alone, 1e-6)
	})
}

// TestGoldenGLIGENInputs: the position net's inputs and the grounding
// tokens as the pipeline forms them (atol 1e-5; boxes and masks exact).
func TestGoldenGLIGENInputs(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, g := loadTinyGLIGEN(t)
	f := golden.File(t, "tiny-gligen", "golden.safetensors")
	r := goldenGLIGENRequest(t, f)
	torch.NoGrad(func() {
		boxes, masks, emb := m.groundingInputs(r.Phrases, r.Boxes, r.Batch, true)
		golden.Compare(t, "position_net.boxes", boxes, golden.Tensor(t, f, "position_net.boxes"), 0)
		golden.Compare(t, "position_net.masks", masks, golden.Tensor(t, f, "position_net.masks"), 0)
		golden.Compare(t, "position_net.positive_embeddings", emb, golden.Tensor(t, f, "position_net.positive_embeddings"), 1e-5)
		golden.Compare(t, "pipeline.objs", m.groundingTokens(g, r), golden.Tensor(t, f, "pipeline.objs"), 1e-5)
	})
}

// TestGoldenGLIGENNoisePredictions runs each step's UNet call on diffusers'
// own latents, so that an error shows at the step it comes from (atol
// 1e-5: single UNet calls).
func TestGoldenGLIGENNoisePredictions(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, g := loadTinyGLIGEN(t)
	f := golden.File(t, "tiny-gligen", "golden.safetensors")
	r := goldenGLIGENRequest(t, f)
	torch.NoGrad(func() {
		embeds := torch.Cat([]*torch.Tensor{m.encodePrompt("", 0, nil), m.encodePrompt(r.Prompt, 0, nil)}, 0)
		objs := m.groundingTokens(g, r)
		defer g.Clear()
		latents := golden.Tensor(t, f, "pipeline.initial_latents") // DDIM's init_noise_sigma is 1
		timesteps := golden.Tensor(t, f, "pipeline.timesteps").Float64s()
		for i, ts := range timesteps {
			g.Set(objs, gligen.ScheduledBeta(r.Tau, i, len(timesteps)))
			noise := m.UNet.Forward(torch.Cat([]*torch.Tensor{latents, latents}, 0), torch.New([]int64{int64(ts)}).Reshape(), embeds)
			halves := noise.Chunk(2, 0)
			key := fmt.Sprintf("pipeline.step%d.", i)
			golden.Compare(t, key+"noise_pred_uncond", halves[0], golden.Tensor(t, f, key+"noise_pred_uncond"), 1e-5)
			golden.Compare(t, key+"noise_pred_text", halves[1], golden.Tensor(t, f, key+"noise_pred_text"), 1e-5)
			latents = golden.Tensor(t, f, key+"latents")
		}
	})
}

// TestGoldenGLIGEN runs diffusers' 4-step GLIGEN generation end to end:
// latents per step and final atol 1e-4 (values up to ~17).
func TestGoldenGLIGEN(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, g := loadTinyGLIGEN(t)
	f := golden.File(t, "tiny-gligen", "golden.safetensors")
	r := goldenGLIGENRequest(t, f)
	timesteps := golden.Tensor(t, f, "pipeline.timesteps").Float64s()
	var betas []float64
	r.BeforeStep = func(step, total int, ts int64) { betas = append(betas, g.Condition().Beta) }
	var final *torch.Tensor
	r.OnStep = func(i int, ts int64, latents *torch.Tensor) {
		if float64(ts) != timesteps[i] {
			t.Errorf("step %d at timestep %d, want %v", i, ts, timesteps[i])
		}
		key := fmt.Sprintf("pipeline.step%d.latents", i)
		golden.Compare(t, key, latents, golden.Tensor(t, f, key), 1e-4)
		if i == len(timesteps)-1 {
			final = torch.Persist(latents.Clone())
		}
	}
	img, err := m.GenerateGLIGEN(g, r)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Free()
	if fmt.Sprint(betas) != "[1 1 0 0]" {
		t.Errorf("beta per step %v, want diffusers' fuser_enabled_per_step [1 1 0 0]", betas)
	}
	if final == nil {
		t.Fatal("no final latents")
	}
	defer final.Free()
	golden.Compare(t, "pipeline.final_latents", final, golden.Tensor(t, f, "pipeline.final_latents"), 1e-4)
	if c := g.Condition(); c.Objs != nil || c.Beta != 0 {
		t.Errorf("the fusers are still on after generation: %+v", c)
	}
}

// TestGLIGENTauZeroIsText2Image: with no grounded step, the images are
// exactly those of plain text-to-image; grounding for a step changes them.
// Generation leaves no tensor behind.
func TestGLIGENTauZeroIsText2Image(t *testing.T) {
	m, g := loadTinyGLIGEN(t)
	r := GLIGEN{
		Text2Image: Text2Image{Prompt: "a dog and a cat", Steps: 3, CFGScale: 7.5, Seed: 3, Width: 64, Height: 64, Batch: 2},
		Phrases:    []string{"a dog", "a cat"},
		Boxes:      [][4]float64{{0, 0, 0.5, 1}, {0.5, 0, 1, 1}},
	}
	plain, err := m.Generate(r.Text2Image)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Free()
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	off, err := m.GenerateGLIGEN(g, r)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Free()
	if n := torch.LiveTensors() - before; n != 1 {
		t.Errorf("GLIGEN generation left %d tensors, want 1 (the images)", n)
	}
	golden.Compare(t, "tau 0 vs text-to-image", off, plain, 0)
	r.Tau = 1.0 / 3
	on, err := m.GenerateGLIGEN(g, r)
	if err != nil {
		t.Fatal(err)
	}
	defer on.Free()
	if d := on.Sub(plain).Abs().Amax().Item(); d < 1e-3 {
		t.Fatalf("one grounded step changed the images by only %g", d)
	}
}

func TestGLIGENChecks(t *testing.T) {
	m, g := loadTinyGLIGEN(t)
	good := GLIGEN{
		Text2Image: Text2Image{Prompt: "x", Steps: 1, CFGScale: 1, Width: 64, Height: 64, Batch: 1},
		Phrases:    []string{"a dog"}, Boxes: [][4]float64{{0, 0, 1, 1}}, Tau: 0.3,
	}
	for name, c := range map[string]struct {
		mutate func(r *GLIGEN)
		want   string
	}{
		"counts":      {func(r *GLIGEN) { r.Phrases = append(r.Phrases, "a cat") }, "2 phrases but 1 boxes"},
		"tau":         {func(r *GLIGEN) { r.Tau = 1.5 }, "tau"},
		"box":         {func(r *GLIGEN) { r.Boxes[0][2] = math.NaN() }, "not finite"},
		"long phrase": {func(r *GLIGEN) { r.Phrases[0] = strings.Repeat("dog ", 80) }, "tokens long"},
		"text2image":  {func(r *GLIGEN) { r.Steps = 0 }, "steps"},
	} {
		r := good
		r.Phrases = append([]string(nil), good.Phrases...)
		r.Boxes = append([][4]float64(nil), good.Boxes...)
		c.mutate(&r)
		if _, err := m.GenerateGLIGEN(g, r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	if _, err := m.GenerateGLIGEN(nil, good); err == nil {
		t.Error("no grounding: no error")
	}
	// More than 30 objects: cut to 30, with a warning.
	r := good
	r.Phrases, r.Boxes = nil, nil
	for range 31 {
		r.Phrases = append(r.Phrases, "a dog")
		r.Boxes = append(r.Boxes, [4]float64{0, 0, 1, 1})
	}
	var warned string
	r.Warn = func(msg string) { warned = msg }
	img, err := m.GenerateGLIGEN(g, r)
	if err != nil {
		t.Fatal(err)
	}
	img.Free()
	if !strings.Contains(warned, "only the first 30") {
		t.Errorf("warning %q", warned)
	}
}

// TestLoadModelGLIGENFolder: a diffusers folder whose unet is a GLIGEN one
// loads with its grounding layers.
func TestLoadModelGLIGENFolder(t *testing.T) {
	dir := t.TempDir()
	for _, part := range []string{"model_index.json", "text_encoder", "tokenizer", "vae", "scheduler"} {
		if err := os.Symlink(golden.Path(t, "tiny-sd", part), filepath.Join(dir, part)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(golden.Path(t, "tiny-gligen", "unet"), filepath.Join(dir, "unet")); err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if m.GLIGEN == nil || len(m.GLIGEN.Fusers) == 0 {
		t.Fatal("GLIGEN layers not loaded")
	}
}
