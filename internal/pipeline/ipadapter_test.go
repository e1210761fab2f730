package pipeline

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/guidance"
	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func loadTinyIPAdapter(t *testing.T, m *Model) *ipadapter.Adapter {
	t.Helper()
	a, err := ipadapter.Load(golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"), m.UNet, m.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Free)
	return a
}

// ipAdapterGoldenRequest is the request tiny-ip-adapter/golden.safetensors
// was made with, from the image encoder's saved hidden states.
func ipAdapterGoldenRequest(t *testing.T, f *torch.SafetensorsFile) ImagePrompt {
	return ImagePrompt{
		Text2Image: Text2Image{
			Prompt: "a photo of a dog on the grass", Steps: 4, CFGScale: 7.5,
			Width: 128, Height: 128, Batch: 1, Latents: golden.Tensor(t, f, "pipeline.initial_latents"),
		},
		Subjects: []*torch.Tensor{golden.Tensor(t, f, "image_encoder.penultimate")},
		Uncond:   golden.Tensor(t, f, "image_encoder.uncond_penultimate"),
		Scale:    0.6,
	}
}

// TestGoldenIPAdapterPlus runs diffusers' 4-step IP-Adapter Plus pipeline
// (scale 0.6) and compares the latents after every step (atol 1e-4, values
// up to ~15). The golden run saved latents, not a decoded image.
func TestGoldenIPAdapterPlus(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	a := loadTinyIPAdapter(t, m)
	f := golden.File(t, "tiny-ip-adapter", "golden.safetensors")

	torch.NoGrad(func() {
		embeds := golden.Tensor(t, f, "pipeline.prompt_embeds").Chunk(2, 0)
		golden.Compare(t, "pipeline.prompt_embeds[negative]", m.encodePrompt("", 0, nil), embeds[0], 1e-5)
		golden.Compare(t, "pipeline.prompt_embeds[prompt]", m.encodePrompt("a photo of a dog on the grass", 0, nil), embeds[1], 1e-5)
	})
	r := ipAdapterGoldenRequest(t, f)
	timesteps := golden.Tensor(t, f, "pipeline.timesteps").Float64s()
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
	if _, err := m.GenerateWithImages(r, a); err != nil {
		t.Fatal(err)
	}
	if final == nil {
		t.Fatal("no last step")
	}
	defer final.Free()
	golden.Compare(t, "pipeline.final_latents", final, golden.Tensor(t, f, "pipeline.final_latents"), 1e-4)
	if a.Scale != 1 {
		t.Errorf("the request's scale stayed on the adapter: %g", a.Scale)
	}
}

// TestIPAdapterScaleZeroIsText2Image: with lambda = 0 the image prompt
// pipeline is the text-to-image pipeline, image for image.
func TestIPAdapterScaleZeroIsText2Image(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	f := golden.File(t, "tiny-ip-adapter", "golden.safetensors")
	r := ipAdapterGoldenRequest(t, f)
	r.Steps = 2
	r.Boxes = [][4]float64{{0.1, 0.2, 0.6, 0.9}}
	text, err := m.Generate(r.Text2Image)
	if err != nil {
		t.Fatal(err)
	}
	a := loadTinyIPAdapter(t, m)
	r.Scale = 0
	images, err := m.GenerateWithImages(r, a)
	if err != nil {
		t.Fatal(err)
	}
	if d := images.Sub(text).Abs().Amax().Item(); d != 0 {
		t.Errorf("scale 0 differs from text-to-image by %g", d)
	}
	r.Scale = 0.6
	images, err = m.GenerateWithImages(r, a)
	if err != nil {
		t.Fatal(err)
	}
	if d := images.Sub(text).Abs().Amax().Item(); d == 0 {
		t.Error("the image prompt changed nothing at scale 0.6")
	}
}

// TestImagePromptChecks: bad requests fail before any work.
func TestImagePromptChecks(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	h := torch.Zeros(1, 17, 32)
	base := ImagePrompt{Text2Image: Text2Image{Steps: 1, CFGScale: 7.5, Width: 64, Height: 64, Batch: 1}, Subjects: []*torch.Tensor{h}, Uncond: h}
	for _, c := range []struct {
		want string
		edit func(*ImagePrompt)
	}{
		{"no subject images", func(r *ImagePrompt) { r.Subjects = nil }},
		{"2 boxes for 1 subjects", func(r *ImagePrompt) { r.Boxes = make([][4]float64, 2) }},
		{"needs the zero image", func(r *ImagePrompt) { r.Uncond = nil }},
		{"want [views, tokens, width]", func(r *ImagePrompt) { r.Subjects = []*torch.Tensor{torch.Zeros(17, 32)} }},
		{"steps must be at least 1", func(r *ImagePrompt) { r.Steps = 0 }},
	} {
		r := base
		c.edit(&r)
		if err := r.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	if err := base.Check(); err != nil {
		t.Errorf("good request: %v", err)
	}
}

// TestImagePromptLeavesNoTensors: a boxed, guided run holds the same number
// of live tensors at every step and leaves none behind (the adapter's
// copies of the tokens and its box masks go with the request).
func TestImagePromptLeavesNoTensors(t *testing.T) {
	s := torch.NewScope() // owns the inputs: no finaliser frees them mid-run
	defer s.Close()
	m := loadTinySD(t)
	a := loadTinyIPAdapter(t, m)
	g := torch.NewGenerator(11)
	defer g.Close()
	r := ImagePrompt{
		Text2Image: Text2Image{Prompt: "a dog and a cat", Steps: 8, CFGScale: 7.5, Width: 64, Height: 48, Batch: 2},
		// the second subject has two views
		Subjects: []*torch.Tensor{torch.Randn(g, 1, 17, 32), torch.Randn(g, 2, 17, 32)},
		Uncond:   torch.Randn(g, 1, 17, 32),
		Boxes:    [][4]float64{{0, 0, 0.5, 1}, {0.5, 0.25, 1, 0.75}},
		Scale:    0.6,
	}
	var live []int64
	r.OnStep = func(int, int64, *torch.Tensor) { live = append(live, torch.LiveTensors()) }
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	images, err := m.GenerateWithImages(r, a)
	if err != nil {
		t.Fatal(err)
	}
	images.Free()
	for i := range live {
		if live[i] != live[0] {
			t.Fatalf("live tensors per step drift: %v", live)
		}
	}
	if after := torch.LiveTensors(); after != before {
		t.Errorf("%d live tensors before, %d after", before, after)
	}
}

// TestImagePromptWithBoxGuidance: box guidance runs its probe through the
// adapter's processors (the text maps with the image attention active) and
// moves the latents on the guided steps.
func TestImagePromptWithBoxGuidance(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	a := loadTinyIPAdapter(t, m)
	f := golden.File(t, "tiny-ip-adapter", "golden.safetensors")
	r := ipAdapterGoldenRequest(t, f)
	r.Boxes = [][4]float64{{0.1, 0.3, 0.6, 0.9}}
	dog, err := guidance.TokenPositions(m.Tokenizer, r.Prompt, "dog")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := m.GenerateWithImages(r, a)
	if err != nil {
		t.Fatal(err)
	}
	var guided []int
	r.BoxGuidance = &BoxGuidance{
		Subjects: []guidance.Subject{{Tokens: dog, Box: r.Boxes[0]}},
		Observe: func(step int, alpha float64, loss, grad *torch.Tensor) {
			guided = append(guided, step)
			if l := loss.Item(); !(l > 0) {
				t.Errorf("step %d: loss %g", step, l)
			}
		},
	}
	images, err := m.GenerateWithImages(r, a)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(guided) != "[0 1]" {
		t.Errorf("guided steps %v, want [0 1]", guided)
	}
	if d := images.Sub(plain).Abs().Amax().Item(); d == 0 {
		t.Error("box guidance changed nothing")
	}
}
