package pipeline

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func loadTinySD(t *testing.T) *Model {
	t.Helper()
	m, err := LoadModel(golden.Path(t, "tiny-sd"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

// goldenRequest is the request core/pipeline_t2i.safetensors was made with.
func goldenRequest(t *testing.T, f *torch.SafetensorsFile) Text2Image {
	return Text2Image{
		Prompt: "a photo of a corgi on the beach", Steps: 4, CFGScale: 7.5, Seed: 0,
		Width: 128, Height: 128, Batch: 1, Latents: golden.Tensor(t, f, "initial_latents"),
	}
}

// TestGoldenText2Image runs diffusers' 4-step tiny pipeline. Tolerances are
// the README's: latents per step atol 1e-4 (values up to ~15), image 5e-5.
func TestGoldenText2Image(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	f := golden.File(t, "core", "pipeline_t2i.safetensors")

	torch.NoGrad(func() {
		golden.Compare(t, "prompt_embeds", m.encodePrompt("a photo of a corgi on the beach", 0, nil),
			golden.Tensor(t, f, "prompt_embeds"), 1e-5)
		golden.Compare(t, "negative_prompt_embeds", m.encodePrompt("", 0, nil),
			golden.Tensor(t, f, "negative_prompt_embeds"), 1e-5)
	})
	r := goldenRequest(t, f)
	steps := 0
	r.OnStep = func(i int, ts int64, latents *torch.Tensor) {
		want := golden.Tensor(t, f, "timesteps").Select(0, int64(i)).Item()
		if float64(ts) != want {
			t.Errorf("step %d at timestep %d, want %v", i, ts, want)
		}
		golden.Compare(t, "latents_step_"+string(rune('0'+i)), latents, golden.Tensor(t, f, "latents_step_"+string(rune('0'+i))), 1e-4)
		steps++
	}
	img, err := m.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	if steps != 4 {
		t.Fatalf("%d steps", steps)
	}
	golden.Compare(t, "image", img, golden.Tensor(t, f, "image"), 5e-5)
}

// TestGenerateIsReproducibleAndFlat: the same seed gives the same image,
// and a 50-step run holds the same number of live tensors at every step.
func TestGenerateIsReproducibleAndFlat(t *testing.T) {
	m := loadTinySD(t)
	var live []int64
	r := Text2Image{Prompt: "a red cube", Steps: 50, CFGScale: 7.5, Eta: 0.5, Seed: 7, Width: 64, Height: 64, Batch: 2,
		OnStep: func(int, int64, *torch.Tensor) { live = append(live, torch.LiveTensors()) }}
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	a, err := m.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	for i := range live {
		if live[i] != live[0] {
			t.Fatalf("live tensors per step drift: %v", live)
		}
	}
	t.Logf("live tensors: %d before, %d at every one of %d steps, %d after (1 = the images)", before, live[0], len(live), torch.LiveTensors())
	if torch.LiveTensors() != before+1 {
		t.Fatalf("generation left %d tensors", torch.LiveTensors()-before)
	}
	assertShape := a.Shape()
	if assertShape[0] != 2 || assertShape[1] != 3 || assertShape[2] != 64 || assertShape[3] != 64 {
		t.Fatalf("image shape %v", assertShape)
	}
	r.OnStep = nil
	b, err := m.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "same seed", b, a, 0)
	r.Seed = 8
	c, err := m.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Sub(a).Abs().Amax().Item(); d < 1e-3 {
		t.Fatalf("another seed changed the image by only %g", d)
	}
	a.Free()
	b.Free()
	c.Free()
}

func TestText2ImageChecks(t *testing.T) {
	m := loadTinySD(t)
	good := Text2Image{Prompt: "x", Steps: 2, CFGScale: 7.5, Width: 64, Height: 64, Batch: 1}
	for name, mutate := range map[string]func(r *Text2Image){
		"size":      func(r *Text2Image) { r.Width = 60 },
		"steps":     func(r *Text2Image) { r.Steps = 0 },
		"batch":     func(r *Text2Image) { r.Batch = 0 },
		"clip skip": func(r *Text2Image) { r.ClipSkip = 3 },
		"latents":   func(r *Text2Image) { r.Latents = torch.Zeros(1, 4, 4, 4) },
		"too many":  func(r *Text2Image) { r.Steps = 1001 },
		"rescale":   func(r *Text2Image) { r.GuidanceRescale = 1.5 },
	} {
		r := good
		mutate(&r)
		if _, err := m.Generate(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestSingleFileEqualsFolder: the original-layout checkpoint of the same
// model gives the same image as the diffusers folder.
func TestSingleFileEqualsFolder(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	folder := loadTinySD(t)
	// The tiny text encoder (32 wide) is not 64-wide-headed, so its configs
	// come from the folder; the tokenizer too, as a single file has none.
	single, err := LoadModel(golden.Path(t, "tiny-sd-single-file.safetensors"), LoadOptions{
		Tokenizer: golden.Path(t, "tiny-sd", "tokenizer"), Configs: golden.Path(t, "tiny-sd")})
	if err != nil {
		t.Fatal(err)
	}
	defer single.Free()
	f := golden.File(t, "core", "pipeline_t2i.safetensors")
	a, err := folder.Generate(goldenRequest(t, f))
	if err != nil {
		t.Fatal(err)
	}
	b, err := single.Generate(goldenRequest(t, f))
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "single file vs folder", b, a, 0)
	golden.Compare(t, "single file vs diffusers", b, golden.Tensor(t, f, "image"), 5e-5)

	// Without the configs, the UNet and VAE are inferred from the shapes and
	// the text encoder's heads cannot be: a clear error.
	_, err = LoadModel(golden.Path(t, "tiny-sd-single-file.safetensors"), LoadOptions{Tokenizer: golden.Path(t, "tiny-sd", "tokenizer")})
	if err == nil || !strings.Contains(err.Error(), "multiple of 64") {
		t.Fatalf("inferred tiny text encoder: %v", err)
	}
	_, err = LoadModel(golden.Path(t, "tiny-sd-single-file.safetensors"), LoadOptions{Tokenizer: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--tokenizer") {
		t.Fatalf("no tokenizer: %v", err)
	}
}

func TestLoadModelErrors(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{
		"missing path": filepath.Join(dir, "nope"),
		"empty folder": dir,
	} {
		if _, err := LoadModel(path, LoadOptions{}); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, []byte("garbage"), 0o644)
	if _, err := LoadModel(bad, LoadOptions{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("corrupt file: %v", err)
	}
}

// A folder's default size is diffusers': the UNet's sample_size times the
// VAE's downsampling; a single file is SD 1.x's 512.
func TestDefaultSize(t *testing.T) {
	dir := golden.Path(t, "tiny-sd")
	u, err := unet.LoadConfig(filepath.Join(dir, "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DefaultSize(dir); err != nil || got != int(u.SampleSize)*8 {
		t.Errorf("tiny-sd: %d, %v; want %d", got, err, u.SampleSize*8)
	}
	if got, err := DefaultSize(golden.Path(t, "tiny-sd-single-file.safetensors")); err != nil || got != 512 {
		t.Errorf("single file: %d, %v; want 512", got, err)
	}
}

// RescaleGuidance against its definition, written out per sample in f64.
func TestRescaleGuidance(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	g := torch.NewGenerator(5)
	defer g.Close()
	guided := torch.Options{DType: torch.Float64}.Randn(g, 2, 3, 4, 4).MulScalar(3)
	cond := torch.Options{DType: torch.Float64}.Randn(g, 2, 3, 4, 4)
	const phi = 0.7
	got := RescaleGuidance(guided, cond, phi).Float64s()
	gv, cv := guided.Float64s(), cond.Float64s()
	std := func(x []float64) float64 {
		mean, ss := 0.0, 0.0
		for _, v := range x {
			mean += v
		}
		mean /= float64(len(x))
		for _, v := range x {
			ss += (v - mean) * (v - mean)
		}
		return math.Sqrt(ss / float64(len(x)-1))
	}
	n := len(gv) / 2
	for b := range 2 {
		gs, cs := gv[b*n:(b+1)*n], cv[b*n:(b+1)*n]
		ratio := std(cs) / std(gs)
		for i, v := range gs {
			want := phi*v*ratio + (1-phi)*v
			if d := math.Abs(got[b*n+i] - want); d > 1e-12 {
				t.Fatalf("sample %d [%d] = %g, want %g", b, i, got[b*n+i], want)
			}
		}
	}
}
