package unet

import (
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func loadTiny(t *testing.T) *UNet {
	t.Helper()
	u, err := Load(golden.Path(t, "tiny-sd", "unet"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Free)
	return u
}

// goldenInputs are the golden UNet call's file, sample and text states.
func goldenInputs(t *testing.T) (f *torch.SafetensorsFile, sample, ctx *torch.Tensor) {
	t.Helper()
	f = golden.File(t, "core", "unet.safetensors")
	return f, golden.Tensor(t, f, "sample"), golden.Tensor(t, f, "encoder_hidden_states")
}

// TestGoldenForward compares the tiny UNet with diffusers: the output for
// per-element and scalar timesteps, and the block outputs along the way.
// atol 1e-5: the README's suggestion for single calls (fp32 vs fp64 noise ~1e-6).
func TestGoldenForward(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadTiny(t)
	f, sample, ctx := goldenInputs(t)

	tapped := 0
	u.Tap = func(name string, x *torch.Tensor) {
		if _, ok := f.Header.Lookup("act." + name); ok {
			golden.Compare(t, "act."+name, x, golden.Tensor(t, f, "act."+name), 1e-5)
			tapped++
		}
	}
	torch.NoGrad(func() {
		out := u.Forward(sample, golden.Tensor(t, f, "timesteps"), ctx)
		golden.Compare(t, "out", out, golden.Tensor(t, f, "out"), 1e-5)
		u.Tap = nil
		out = u.Forward(sample, golden.Tensor(t, f, "timestep_scalar"), ctx)
		golden.Compare(t, "out_t500", out, golden.Tensor(t, f, "out_t500"), 1e-5)
	})
	if tapped < 10 {
		t.Fatalf("only %d intermediate results compared", tapped)
	}
}

// TestProbsProcessorMatchesDefault checks that capturing the attention
// probabilities leaves the output unchanged and keeps them differentiable.
func TestProbsProcessorMatchesDefault(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadTiny(t)
	f := golden.File(t, "core", "unet.safetensors")
	sample, ctx := golden.Tensor(t, f, "sample"), golden.Tensor(t, f, "encoder_hidden_states")
	ts := golden.Tensor(t, f, "timesteps")

	x := sample.Clone().SetRequiresGrad(true)
	var probs []*torch.Tensor
	var names []string
	rec := ProbsProcessor{Record: func(a *Attention, p *torch.Tensor) {
		names = append(names, a.Name)
		probs = append(probs, torch.Persist(p))
	}}
	for _, a := range u.Attentions() {
		if strings.HasSuffix(a.Name, "attn2") {
			a.Processor = rec
		}
	}
	out := u.Forward(x, ts, ctx)
	golden.Compare(t, "out with probs processor", out, golden.Tensor(t, f, "out"), 1e-5)
	if len(probs) != 16 { // attn2 of 3x2 down, 1 mid and 3x3 up transformer blocks
		t.Fatalf("captured %d cross-attention maps, want 16", len(probs))
	}
	if len(probs) == 0 || !strings.HasPrefix(names[0], "down_blocks.0.attentions.0.transformer_blocks.0.attn2") {
		t.Fatalf("captured %v", names)
	}
	// [B, heads, H*W, 77], rows summing to one.
	p0 := probs[0]
	if sh := p0.Shape(); sh[0] != 2 || sh[1] != 8 || sh[2] != 256 || sh[3] != 77 {
		t.Fatalf("probability shape %v", sh)
	}
	golden.Compare(t, "row sums", p0.Sum(-1), torch.OnesLike(p0.Sum(-1)), 1e-5)
	g := torch.Grad([]*torch.Tensor{probs[0].Select(3, 5).Sum()}, []*torch.Tensor{x}, torch.GradOptions{})[0]
	if g == nil || g.Abs().Sum().Item() == 0 {
		t.Fatal("no gradient from the attention probabilities to the latent")
	}
	for _, p := range probs {
		p.Free()
	}
}

func TestConfigErrors(t *testing.T) {
	good := Config{
		BlockOutChannels: []int64{32, 64}, DownBlockTypes: []string{"CrossAttnDownBlock2D", "DownBlock2D"},
		UpBlockTypes: []string{"UpBlock2D", "CrossAttnUpBlock2D"}, ActFn: "silu", ResnetTimeScaleShift: "default",
		TimeEmbeddingType: "positional", MidBlockType: "UNetMidBlock2DCrossAttn", ConvInKernel: 3, ConvOutKernel: 3,
		NormNumGroups: 32, CrossAttentionDim: 16, LayersPerBlock: 1, AttentionHeadDim: []any{4.0, 8.0},
		TransformerLayersPerBlock: 1.0,
	}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	if good.Heads[1] != 8 || good.TransformerLayers[0] != 1 {
		t.Fatalf("resolved heads %v layers %v", good.Heads, good.TransformerLayers)
	}
	for name, mutate := range map[string]func(c *Config){
		"block type":  func(c *Config) { c.DownBlockTypes[0] = "SimpleCrossAttnDownBlock2D" },
		"heads split": func(c *Config) { c.AttentionHeadDim = 5.0 },
		"heads count": func(c *Config) { c.AttentionHeadDim = []any{8.0} },
		"act":         func(c *Config) { c.ActFn = "gelu" },
		"sdxl":        func(c *Config) { s := "text_time"; c.AdditionEmbedType = &s },
		"lengths":     func(c *Config) { c.UpBlockTypes = c.UpBlockTypes[:1] },
	} {
		c := good
		c.DownBlockTypes = append([]string(nil), good.DownBlockTypes...)
		mutate(&c)
		if err := c.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
