package train

import (
	"context"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// evalLoss is the objective on a fixed batch at fixed noise and
// timesteps (several draws of them), without training: the same code as a
// step, with draws of its own seed.
func evalLoss(t *testing.T, m *pipeline.Model, a *lcp.Adapter, cond Conditioner, b *Batch) float64 {
	t.Helper()
	tr := &trainer{model: m, adapter: a, ddpm: pipeline.NewDDPM(m.Scheduler)}
	total := 0.0
	const draws = 8
	torch.NoGrad(func() {
		s := torch.NewScope()
		defer s.Close()
		for k := range draws {
			d := NewDraws(1234, k+1, b.Index)
			embeds, err := cond.Condition(b, d)
			if err != nil {
				t.Fatal(err)
			}
			total += tr.loss(b, embeds, d).Item()
			cond.Clear()
		}
	})
	return total / draws
}

// frozenUNetWeights are a few base-model weights, one per kind of layer,
// to check that training leaves them alone.
func frozenUNetWeights(m *pipeline.Model) map[string]*torch.Tensor {
	blocks := m.UNet.TransformerBlocks()
	return map[string]*torch.Tensor{
		"unet.conv_in":          m.UNet.ConvIn.Weight,
		"unet.attn1.to_k":       blocks[0].Attn1.ToK.Weight,
		"unet.attn2.to_v":       blocks[len(blocks)-1].Attn2.ToV.Weight,
		"unet.conv_out":         m.UNet.ConvOut.Weight,
		"vae.encoder.conv_in":   m.VAE.Encoder.ConvIn.Weight,
		"text.token_embedding":  m.Text.TokenEmbedding.Weight,
		"text.final_layer_norm": m.Text.FinalNorm.Weight,
	}
}

func TestOverfitsFixedBatchAndFreezesTheRest(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	cond := newTestConditioner(t, m, a, 0)
	dir := t.TempDir()
	// The fusers alone: a small part, but one that acts on every
	// transformer block.
	cfg := tinyConfig(dir, 20, "*fuser*")
	cfg.TextDropout = 0

	fixed, err := tinyData(1).Next()
	if err != nil {
		t.Fatal(err)
	}
	defer fixed.Free()
	before := evalLoss(t, m, a, cond, fixed)

	adapterBefore := snapshot(a.Params())
	defer freeAll(adapterBefore)
	baseBefore := snapshot(frozenUNetWeights(m))
	defer freeAll(baseBefore)
	var losses []float64
	err = Run(context.Background(), nil, cfg, m, a, tinyData(1), cond, Hooks{
		Progress: func(step, total int, loss float64) { losses = append(losses, loss) },
	})
	if err != nil {
		t.Fatal(err)
	}
	after := evalLoss(t, m, a, cond, fixed)
	t.Logf("loss on the fixed batch: %.4f before, %.4f after 20 steps; step losses %.3f", before, after, losses)
	// A tiny random UNet learns slowly through an adapter: 20 steps at
	// 1e-3 take about 7% off, at noise and timesteps fixed for the
	// comparison.
	if !(after < 0.96*before) {
		t.Errorf("loss on the fixed batch went from %g to %g, want at least 4%% lower", before, after)
	}

	train, err := selectTrainable(a.Params(), cfg.Trainable)
	if err != nil {
		t.Fatal(err)
	}
	trained := map[string]bool{}
	for _, k := range train.keys {
		trained[k] = true
	}
	changed := 0
	for k, p := range a.Params() {
		same := sameBits(p, adapterBefore[k])
		if trained[k] && !same {
			changed++
		}
		if !trained[k] && !same {
			t.Errorf("frozen adapter parameter %s changed", k)
		}
		if p.RequiresGrad() {
			t.Errorf("%s still requires grad after Run", k)
		}
		if g := p.Grad(); g != nil {
			t.Errorf("%s keeps a gradient after Run", k)
		}
	}
	if changed != len(train.keys) {
		t.Errorf("%d of %d trainable parameters changed", changed, len(train.keys))
	}
	for k, p := range frozenUNetWeights(m) {
		if !sameBits(p, baseBefore[k]) {
			t.Errorf("base model weight %s changed", k)
		}
		if p.RequiresGrad() {
			t.Errorf("base model weight %s requires grad", k)
		}
	}

	rows, err := ReadLog(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 20 || rows[19].Step != 20 || rows[0].Loss != losses[0] || rows[0].LR != 1e-3 {
		t.Errorf("log has %d rows, first %+v; want 20, step 1 at loss %g", len(rows), rows[0], losses[0])
	}
	if r := rows[19]; r.StepsPerSec <= 0 || math.Abs(r.SamplesPerSec-2*r.StepsPerSec) > 0.01 || r.Seconds <= 0 {
		t.Errorf("throughput in the log: %+v", rows[19])
	}
	t.Logf("tiny model, batch 2 at 64x64, CPU: %.2f steps/s, %.2f samples/s", rows[19].StepsPerSec, rows[19].SamplesPerSec)
	f, err := os.Open(filepath.Join(dir, PlotFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != plotH {
		t.Errorf("plot is %v", b)
	}
	if _, err := os.Stat(filepath.Join(CheckpointDir(dir, 20), adapterFile)); err != nil {
		t.Errorf("no final checkpoint: %v", err)
	}
}

func TestRunsAtConstantMemory(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	cond := newTestConditioner(t, m, a, 0.5)
	cfg := tinyConfig(t.TempDir(), 30, AdapterTrainable...)
	cfg.CheckpointEvery = 10
	live := make([]int64, 0, 30)
	torch.Settle() // unrelated garbage is freed now, not while we count
	err := Run(context.Background(), nil, cfg, m, a, tinyData(0), cond, Hooks{
		Progress: func(step, total int, loss float64) { live = append(live, torch.LiveTensors()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range live {
		if n != live[0] {
			t.Fatalf("live tensors after each step: %v (step %d differs from step 1)", live, i+1)
		}
	}
}

func TestLatentWeights(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	// Two 8x8 masks on a 2x2 latent grid: the first image's one pixel, at
	// column 5 and row 2, lies in the top-right cell; the second is empty.
	pix := make([]float32, 2*8*8)
	pix[2*8+5] = 1
	w := latentWeights(torch.New(pix, 2, 1, 8, 8), 2, 3)
	if s := w.Shape(); !slices.Equal(s, []int64{2, 1, 2, 2}) {
		t.Fatalf("weights are %v, want [2 1 2 2]", s)
	}
	// 1 + 3 on the covered cell and 1 on the seven others, over their
	// mean 11/8.
	want := []float32{1, 4, 1, 1, 1, 1, 1, 1}
	for i := range want {
		want[i] /= 11.0 / 8
	}
	if got := w.Float32s(); !slices.Equal(got, want) {
		t.Errorf("weights %v, want %v", got, want)
	}
}

// A subject weight k on a batch whose first image is all subject and whose
// second has none makes the loss ((1+k)·L0 + L1)/(2+k), L0 and L1 the two
// images' own losses, each a batch of one with the row's own draws. One
// draw, not evalLoss's eight: on some of those a row's loss is up to 0.5%
// apart between a batch of two and a batch of one. Not a row mixing: at
// 64 px the tiny UNet's last down block and mid block run at 1x1 with 64
// channels in 32 groups, so GroupNorm normalises pairs of values, and a
// pair whose spread is near its eps (std 3.5e-3 measured) turns the 1e-5
// by which batched and single kernels differ into 1e-3 at the mid block's
// output. At 128 px rows keep to themselves within 1e-5
// (pipeline's TestConditionAdapterPerRow).
func TestSubjectLossWeightWeighsTheSubjects(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	cond := newTestConditioner(t, m, a, 0)
	b, err := tinyData(2).Next()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	r := b.Images.Size(2)
	b.Masks = torch.Cat([]*torch.Tensor{torch.Ones(1, 1, r, r), torch.Zeros(1, 1, r, r)}, 0)
	lossOf := func(b *Batch, weight float64) float64 {
		tr := &trainer{cfg: Config{SubjectLossWeight: weight}, model: m, adapter: a, ddpm: pipeline.NewDDPM(m.Scheduler)}
		var v float64
		torch.NoGrad(func() {
			d := NewDraws(1234, 1, b.Index)
			embeds, err := cond.Condition(b, d)
			if err != nil {
				t.Fatal(err)
			}
			defer cond.Clear()
			v = tr.loss(b, embeds, d).Item()
		})
		return v
	}
	row := func(i int64) *Batch {
		return &Batch{Images: b.Images.Narrow(0, i, 1), Captions: b.Captions[i : i+1], Index: b.Index[i : i+1]}
	}
	l0, l1 := lossOf(row(0), 0), lossOf(row(1), 0)
	const k = 4
	got, want := lossOf(b, k), ((1+k)*l0+l1)/(2+k)
	t.Logf("image losses %.6f and %.6f; weighted %.6f, want %.6f; plain %.6f", l0, l1, got, want, lossOf(b, 0))
	// fp32 noise of a batch of two against two batches of one.
	if math.Abs(got-want) > 1e-5*want {
		t.Errorf("weighted loss %g, want %g", got, want)
	}
	if math.Abs(l0-l1) < 1e-3*want {
		t.Fatalf("the two images' losses %g and %g are too close to tell weighting from none", l0, l1)
	}
}

// Synthetic data has no subject masks to weigh the loss by: the run stops
// at its first step and says why.
func TestSubjectLossWeightNeedsMasks(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	cond := newTestConditioner(t, m, a, 0)
	cfg := tinyConfig(t.TempDir(), 2, "*fuser*")
	cfg.SubjectLossWeight = 2
	err := Run(context.Background(), nil, cfg, m, a, tinyData(1), cond, Hooks{})
	if err == nil || !strings.Contains(err.Error(), "subject_loss_weight") || !strings.Contains(err.Error(), "step 1") {
		t.Fatalf("Run on data without masks: %v, want an error naming subject_loss_weight at step 1", err)
	}
}
