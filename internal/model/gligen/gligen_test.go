package gligen

import (
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// loadTiny is tiny-sd's UNet with tiny-gligen's grounding attached.
func loadTiny(t *testing.T) (*unet.UNet, *Grounding) {
	t.Helper()
	u, err := unet.Load(golden.Path(t, "tiny-sd", "unet"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Free)
	g, err := Load(golden.Path(t, "tiny-gligen", "unet"), u, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Free)
	return u, g
}

func goldenFile(t *testing.T) *torch.SafetensorsFile {
	return golden.File(t, "tiny-gligen", "golden.safetensors")
}

// Single modules against diffusers, atol 1e-5 (the README's suggestion;
// fp32 vs fp64 differs by 1e-6 in the Fourier embedding).
func TestGoldenFourier(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := goldenFile(t)
	golden.Compare(t, "fourier.embedding", FourierEmbedding(golden.Tensor(t, f, "fourier.boxes"), FourierFreqs),
		golden.Tensor(t, f, "fourier.embedding"), 1e-5)
	golden.Compare(t, "position_net.fourier_raw", FourierEmbedding(golden.Tensor(t, f, "position_net.boxes"), FourierFreqs),
		golden.Tensor(t, f, "position_net.fourier_raw"), 1e-5)
}

func TestGoldenPositionNet(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	_, g := loadTiny(t)
	f := goldenFile(t)
	torch.NoGrad(func() {
		objs := g.PositionNet.Forward(golden.Tensor(t, f, "position_net.boxes"), golden.Tensor(t, f, "position_net.masks"),
			golden.Tensor(t, f, "position_net.positive_embeddings"))
		golden.Compare(t, "position_net.objs", objs, golden.Tensor(t, f, "position_net.objs"), 1e-5)
	})
}

func TestGoldenFuser(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	_, g := loadTiny(t)
	f := goldenFile(t)
	fuser := g.Fusers[0]
	if fuser.Name != "down_blocks.0.attentions.0.transformer_blocks.0.fuser" || fuser.Attn.Heads != 8 {
		t.Fatalf("first fuser is %s with %d heads", fuser.Name, fuser.Attn.Heads)
	}
	torch.NoGrad(func() {
		out := fuser.Fuse(golden.Tensor(t, f, "fuser.x"), golden.Tensor(t, f, "fuser.objs"), 1)
		golden.Compare(t, "fuser.output", out, golden.Tensor(t, f, "fuser.output"), 1e-5)
		// The same through the UNet's interface, with the shared condition.
		g.Set(golden.Tensor(t, f, "fuser.objs"), 1)
		golden.Compare(t, "fuser.output (Forward)", fuser.Forward(golden.Tensor(t, f, "fuser.x")),
			golden.Tensor(t, f, "fuser.output"), 1e-5)
	})
}

// TestFusersAttached: one fuser per transformer block, sized like it.
func TestFusersAttached(t *testing.T) {
	u, g := loadTiny(t)
	blocks := u.TransformerBlocks()
	if len(g.Fusers) != len(blocks) || len(blocks) != 16 {
		t.Fatalf("%d fusers for %d blocks", len(g.Fusers), len(blocks))
	}
	for i, b := range blocks {
		if b.Fuser != g.Fusers[i] || g.Fusers[i].Name != b.Name+".fuser" {
			t.Fatalf("block %s has fuser %v", b.Name, b.Fuser)
		}
	}
	if mid := g.Fusers[6]; !strings.HasPrefix(mid.Name, "mid_block") || mid.Linear.Weight.Size(0) != 64 || mid.Attn.Heads != 8 {
		t.Fatalf("fuser 6 is %s, linear %v", mid.Name, mid.Linear.Weight.Shape())
	}
	g.Detach()
	for _, b := range blocks {
		if b.Fuser != nil {
			t.Fatalf("block %s still has a fuser after Detach", b.Name)
		}
	}
}

// TestOffIsTheBaseUNet: with beta 0, without tokens, and once detached,
// the UNet computes exactly (bitwise) what it computes without GLIGEN; with
// beta 1 it does not.
func TestOffIsTheBaseUNet(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u, err := unet.Load(golden.Path(t, "tiny-sd", "unet"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Free()
	core := golden.File(t, "core", "unet.safetensors")
	sample, ts, ctx := golden.Tensor(t, core, "sample"), golden.Tensor(t, core, "timesteps"), golden.Tensor(t, core, "encoder_hidden_states")
	objs := golden.Tensor(t, goldenFile(t), "position_net.objs").Narrow(0, 1, 1).Expand(sample.Size(0), -1, -1)

	torch.NoGrad(func() {
		base := u.Forward(sample, ts, ctx)
		g, err := Load(golden.Path(t, "tiny-gligen", "unet"), u, torch.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Free()
		golden.Compare(t, "no condition vs base", u.Forward(sample, ts, ctx), base, 0)
		g.Set(objs, 0)
		golden.Compare(t, "beta 0 vs base", u.Forward(sample, ts, ctx), base, 0)
		g.SetBeta(1)
		if d := u.Forward(sample, ts, ctx).Sub(base).Abs().Amax().Item(); d < 1e-3 {
			t.Fatalf("beta 1 changed the output by only %g", d)
		}
		g.Detach()
		g.SetBeta(1)
		golden.Compare(t, "detached vs base", u.Forward(sample, ts, ctx), base, 0)
	})
}

// TestPaddingIsInert: what a padding object (mask 0) carries in its box and
// phrase slots does not reach the grounding tokens: every padding token is
// the null token, bitwise.
func TestPaddingIsInert(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	_, g := loadTiny(t)
	f := goldenFile(t)
	boxes, masks := golden.Tensor(t, f, "position_net.boxes"), golden.Tensor(t, f, "position_net.masks")
	phrases := golden.Tensor(t, f, "position_net.positive_embeddings")
	gen := torch.NewGenerator(1)
	defer gen.Close()
	pad := masks.Unsqueeze(-1).Rsub(1) // 1 at padding
	noisyBoxes := boxes.Add(torch.Rand(gen, boxes.Shape()...).Mul(pad))
	noisyPhrases := phrases.Add(torch.Randn(gen, phrases.Shape()...).MulScalar(10).Mul(pad))
	torch.NoGrad(func() {
		clean := g.PositionNet.Forward(boxes, masks, phrases)
		noisy := g.PositionNet.Forward(noisyBoxes, masks, noisyPhrases)
		golden.Compare(t, "objs with garbage in padding slots", noisy, clean, 0)
		// The unconditional row has no objects: 30 copies of the null token.
		null := g.PositionNet.Text.MLP.Forward(torch.Cat([]*torch.Tensor{g.PositionNet.Text.Null, g.PositionNet.NullPosition}, 0))
		golden.Compare(t, "unconditional row vs null token", clean.Select(0, 0), null.Unsqueeze(0).Expand(30, -1), 1e-6)
	})
}

func TestScheduledBeta(t *testing.T) {
	for _, c := range []struct {
		tau         float64
		total, want int
	}{{0.5, 4, 2}, {0.3, 50, 15}, {0.3, 10, 3}, {0.7, 10, 7}, {1, 4, 4}, {0, 4, 0}, {0.3, 4, 1}} {
		on := 0
		for i := range c.total {
			if ScheduledBeta(c.tau, i, c.total) == 1 {
				if i != on {
					t.Fatalf("tau %g: step %d on after an off step", c.tau, i)
				}
				on++
			}
		}
		if on != c.want {
			t.Errorf("tau %g over %d steps: %d grounded steps, want %d", c.tau, c.total, on, c.want)
		}
	}
}

// TestLoadUNet reads the whole GLIGEN folder: the base UNet from it equals
// tiny-sd's, and the grounding is attached.
func TestLoadUNet(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u, g, err := LoadUNet(golden.Path(t, "tiny-gligen", "unet"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Free()
	defer g.Free()
	if u.TransformerBlocks()[0].Fuser != g.Fusers[0] {
		t.Fatal("fusers not attached")
	}
	core := golden.File(t, "core", "unet.safetensors")
	torch.NoGrad(func() {
		out := u.Forward(golden.Tensor(t, core, "sample"), golden.Tensor(t, core, "timesteps"), golden.Tensor(t, core, "encoder_hidden_states"))
		golden.Compare(t, "GLIGEN folder's base UNet", out, golden.Tensor(t, core, "out"), 1e-5)
	})
}

func TestLoadErrors(t *testing.T) {
	u, g := loadTiny(t)
	if _, err := Load(golden.Path(t, "tiny-gligen", "unet"), u, torch.Options{}); err == nil || !strings.Contains(err.Error(), "already has a GLIGEN fuser") {
		t.Fatalf("second Load: %v", err)
	}
	g.Detach()
	if _, err := Load(golden.Path(t, "tiny-sd", "unet"), u, torch.Options{}); err == nil || !strings.Contains(err.Error(), "not a GLIGEN UNet") {
		t.Fatalf("tiny-sd's plain UNet: %v", err)
	}
	// The weights of a plain UNet lack every GLIGEN key: one line names the count and a few.
	src, err := openTinySD(t)
	if err != nil {
		t.Fatal(err)
	}
	_, err = FromSource(src, u, torch.Options{})
	if err == nil || !strings.Contains(err.Error(), "missing (position_net.") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("plain weights: %v", err)
	}
	for _, b := range u.TransformerBlocks() {
		if b.Fuser != nil {
			t.Fatal("a failed load attached a fuser")
		}
	}
	t.Log(err)
}

func openTinySD(t *testing.T) (nn.Source, error) {
	f, err := nn.OpenWeights(golden.Path(t, "tiny-sd", "unet"), "diffusion_pytorch_model")
	if err != nil {
		return nil, err
	}
	t.Cleanup(f.Close)
	return f, nil
}
