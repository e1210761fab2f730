package train

import (
	"math"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// stepGrads runs the micro-steps of one optimizer step of the LCP
// conditioner on the tiny model m with adapter a under cfg and returns
// their mean loss and every trainable gradient that exists, flattened; it
// leaves no gradient behind.
func stepGrads(t *testing.T, m *pipeline.Model, a *lcp.Adapter, cfg Config) (float64, map[string][]float64) {
	t.Helper()
	cfg.OutDir = t.TempDir() // the trainer opens a log there
	enc := tinyEncoders(t, m)
	data, err := NewManifestBatches(toyManifest(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	cond := NewLCPConditioner(m, a, enc, cfg)
	tr, err := newTrainer(nil, cfg, m, a, data, cond, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	var loss float64
	grads := map[string][]float64{}
	torch.WithGrad(func() {
		for range cfg.GradAccum {
			l, err := tr.microStep()
			if err != nil {
				t.Fatal(err)
			}
			loss += l / float64(cfg.GradAccum)
		}
		for i, p := range tr.train.params {
			if g := p.Grad(); g != nil {
				if p.DType() != torch.Float32 || g.DType() != torch.Float32 {
					t.Fatalf("%s is %v with a %v gradient, want float32 master weights", tr.train.keys[i], p.DType(), g.DType())
				}
				grads[tr.train.keys[i]] = g.Float64s()
				p.ZeroGrad()
			}
		}
	})
	return loss, grads
}

// The whole paper path (static references, image tokens and grounding
// held by attention processors, the UNet's resnets and transformers
// checkpointed) gives the gradients of plain backward: only the order in
// which the kept conditioning graphs sum their parts differs.
func TestGradientCheckpointingGivesTheSameGradients(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := lcpConfig(t.TempDir(), 1)
	cfg.Trainable = append(cfg.Trainable, UNetPrefix+"*")
	m, a := loadTiny(t)
	plainLoss, plain := stepGrads(t, m, a, cfg)
	cfg.GradientCheckpointing = true
	ckptLoss, ckpt := stepGrads(t, m, a, cfg)
	if plainLoss != ckptLoss {
		t.Fatalf("loss %v checkpointed, %v plain: the forward pass must not change", ckptLoss, plainLoss)
	}
	// Measured: 1.4e-5 of the largest gradient, at a time-embedding bias
	// whose gradient sums 16x16 positions in every block that reads it.
	compareGrads(t, ckpt, plain, 1e-4, 0.999999)
}

// bfloat16 autocast on CPU: the loss and gradients of one step stay close
// to float32's while weights and gradients stay float32. The bounds are
// bfloat16's: 8 bits of mantissa give about 0.4% per rounding; measured on
// the tiny model: loss within 0.02%, gradients' cosine to float32's 0.78
// (0.99 before the refiner ran its subjects as one batch, 0.76-0.98 with
// other initialisations): one bias of the layout module's image branch,
// fed by the refiner's bfloat16 features through the static projection,
// holds most of the gradient and moves by 0.36 of it, while the refiner's
// features themselves are as close to float32's batched or not (1-2%).
// Every frozen encoder of the conditioner runs in bfloat16 too. A broken
// cast path gives a cosine near 0.
func TestBFloat16MixedPrecision(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := lcpConfig(t.TempDir(), 1)
	m, a := loadTiny(t)
	fullLoss, full := stepGrads(t, m, a, cfg)
	cfg.MixedPrecision = "bf16"
	cfg.GradientCheckpointing = true // and both at once
	mixedLoss, mixed := stepGrads(t, m, a, cfg)
	if fullLoss == mixedLoss {
		t.Fatal("bf16 gave float32's loss bit for bit: autocast did not act")
	}
	t.Logf("loss %v in bfloat16, %v in float32", mixedLoss, fullLoss)
	if r := math.Abs(mixedLoss-fullLoss) / fullLoss; r > 0.02 {
		t.Fatalf("bf16 loss %v, float32 %v (%.2g relative)", mixedLoss, fullLoss, r)
	}
	compareGrads(t, mixed, full, math.Inf(1), 0.7)
}

// compareGrads checks that got and want have gradients for the same
// parameters, each element within tol times the largest gradient of want,
// and that all of them together point the same way (cosine at least
// minCos).
func compareGrads(t *testing.T, got, want map[string][]float64, tol, minCos float64) {
	t.Helper()
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d parameters have gradients, want %d (and some)", len(got), len(want))
	}
	scale := 0.0
	for _, w := range want {
		for _, v := range w {
			scale = math.Max(scale, math.Abs(v))
		}
	}
	var dot, gg, ww, worst float64
	worstAt := ""
	for k, w := range want {
		g, ok := got[k]
		if !ok || len(g) != len(w) {
			t.Fatalf("%s: gradient missing or of another size", k)
		}
		for i := range w {
			d := math.Abs(g[i] - w[i])
			if d > worst {
				worst, worstAt = d, k
			}
			if d > tol*scale || math.IsNaN(g[i]) {
				t.Fatalf("%s[%d] = %g, want %g (|diff| %.3g, %.3g of its largest)", k, i, g[i], w[i], d, d/scale)
			}
			dot, gg, ww = dot+g[i]*w[i], gg+g[i]*g[i], ww+w[i]*w[i]
		}
	}
	cos := dot / math.Sqrt(gg*ww)
	if cos < minCos {
		t.Fatalf("gradients' cosine %.6f, want at least %g", cos, minCos)
	}
	t.Logf("gradients' cosine %.7f, largest difference %.3g of the largest gradient (%s)", cos, worst/scale, worstAt)
}

func TestFloat16NeedsCUDA(t *testing.T) {
	err := checkPrecision("fp16", torch.CPU)
	if err == nil || !strings.Contains(err.Error(), "use bf16") {
		t.Fatalf("fp16 on the CPU: %v", err)
	}
	cfg := Defaults()
	cfg.MixedPrecision = "fp32"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "mixed_precision") {
		t.Fatalf("mixed_precision fp32: %v", err)
	}
}

// The loss scaler as torch.amp.GradScaler: an overflow anywhere skips the
// step and halves the scale; gradients come back divided by the scale; the
// scale doubles after growthInterval clean steps.
func TestLossScaler(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	sc := newLossScaler()
	params := withGrads(t, []float32{65536, -131072}, []float32{32768})
	if !sc.unscale(params) {
		t.Fatal("finite gradients reported as overflow")
	}
	if g := params[0].Grad().Float64s(); g[0] != 1 || g[1] != -2 {
		t.Fatalf("unscaled gradient %v, want [1 -2]", g)
	}
	sc.update(true)
	params = withGrads(t, []float32{1, float32(math.Inf(1))}, []float32{2})
	if sc.unscale(params) {
		t.Fatal("an infinite gradient went unnoticed")
	}
	sc.update(false)
	if sc.Scale != initialLossScale/2 || sc.Growth != 0 {
		t.Fatalf("after an overflow: %+v", *sc)
	}
	for range growthInterval {
		sc.update(true)
	}
	if sc.Scale != initialLossScale || sc.Growth != 0 {
		t.Fatalf("after %d clean steps: %+v", growthInterval, *sc)
	}
}
