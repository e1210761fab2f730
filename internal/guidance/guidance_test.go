package guidance

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/region"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The golden case (shared/golden/guidance): "a dog and a cat on the grass",
// dog at token 2 in the left box, cat at token 5 in the right one.
const goldenPrompt = "a dog and a cat on the grass"

var goldenSubjects = []Subject{
	{Tokens: []int64{2}, Box: [4]float64{0.05, 0.3, 0.45, 0.95}},
	{Tokens: []int64{5}, Box: [4]float64{0.55, 0.3, 0.95, 0.95}},
}

func loadUNet(t *testing.T, opts torch.Options) *unet.UNet {
	t.Helper()
	u, err := unet.Load(golden.Path(t, "tiny-sd", "unet"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Free)
	return u
}

func loadTokenizer(t *testing.T) *clip.Tokenizer {
	t.Helper()
	tok, err := clip.LoadTokenizer(golden.Path(t, "tiny-sd", "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// goldenLayers is the report's layer order: the order of the mean, which
// is the UNet's forward order.
func goldenLayers(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(golden.Path(t, "guidance", "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var report struct {
		Layers []struct{ Name string } `json:"layers_in_mean_order"`
	}
	if err := json.Unmarshal(b, &report); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range report.Layers {
		names = append(names, l.Name)
	}
	return names
}

// compareScalar checks a 0-dim or 1-element tensor with a relative tolerance.
func compareScalar(t *testing.T, name string, got, want *torch.Tensor, rtol float64) {
	t.Helper()
	golden.Compare(t, name, got.Reshape(-1), want.Reshape(-1), rtol*math.Abs(want.Reshape(-1).Select(0, 0).Item()))
}

// TestGoldenInputs: the prompt's ids and embedding, the subjects' token
// positions and boxes are the golden's.
func TestGoldenInputs(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "guidance", "golden.safetensors")
	tok := loadTokenizer(t)

	ids, _ := tok.EncodePadded(goldenPrompt)
	if want := torch.Data[int64](golden.Tensor(t, f, "inputs.input_ids")); !slices.Equal(ids, want) {
		t.Errorf("input ids %v, want %v", ids, want)
	}
	text, err := clip.LoadTextEncoder(golden.Path(t, "tiny-sd", "text_encoder"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer text.Free()
	torch.NoGrad(func() {
		out := text.Forward(torch.New(ids, 1, int64(len(ids))))
		defer out.Free()
		golden.Compare(t, "inputs.cond_embeds", out.LastHidden, golden.Tensor(t, f, "inputs.cond_embeds"), 1e-5)
	})

	positions := torch.Data[int64](golden.Tensor(t, f, "inputs.token_positions")) // [2, 1]
	boxes := torch.Data[float32](golden.Tensor(t, f, "inputs.boxes"))             // [2, 4]
	for k, word := range []string{"dog", "cat"} {
		got, err := TokenPositions(tok, goldenPrompt, word)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, positions[k:k+1]) || !slices.Equal(got, goldenSubjects[k].Tokens) {
			t.Errorf("%s at %v, want %v", word, got, positions[k:k+1])
		}
		for c := range 4 {
			if float32(goldenSubjects[k].Box[c]) != boxes[4*k+c] {
				t.Errorf("%s box %v, golden %v", word, goldenSubjects[k].Box, boxes[4*k:4*k+4])
			}
		}
	}
	t.Logf("inputs.input_ids, inputs.token_positions, inputs.boxes: exact")
}

// TestGoldenMasks: M_k, v_x and v_y at every resolution of the golden.
func TestGoldenMasks(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "guidance", "golden.safetensors")
	for _, p := range []int{2, 4, 8, 16} {
		var masks, cx, cy, mx, my []*torch.Tensor
		for _, subj := range goldenSubjects {
			b := region.BoxBounds(subj.Box, p, p)
			masks = append(masks, b.Mask(p, p))
			cx = append(cx, b.CornerX(p))
			cy = append(cy, b.CornerY(p))
			mx = append(mx, b.ProjX(p))
			my = append(my, b.ProjY(p))
		}
		m := torch.Stack(masks, 0)
		golden.Compare(t, fmt.Sprintf("mask.p%d", p), m, golden.Tensor(t, f, fmt.Sprintf("mask.p%d", p)), 0)
		// the projections are the mask's maxima
		golden.Compare(t, fmt.Sprintf("m_x.p%d = max_i mask", p), torch.Stack(mx, 0), m.Amax(1), 0)
		golden.Compare(t, fmt.Sprintf("m_y.p%d = max_j mask", p), torch.Stack(my, 0), m.Amax(2), 0)
		golden.Compare(t, fmt.Sprintf("corner_x.p%d", p), torch.Stack(cx, 0), golden.Tensor(t, f, fmt.Sprintf("corner_x.p%d", p)), 0)
		golden.Compare(t, fmt.Sprintf("corner_y.p%d", p), torch.Stack(cy, 0), golden.Tensor(t, f, fmt.Sprintf("corner_y.p%d", p)), 0)
	}
}

// TestGoldenMapsAndLosses: every attn2 map, each layer's L_pos, L_scale
// and per-subject terms, the total loss, its gradient and the update.
// Tolerances are the README's: maps atol 1e-6, losses rtol 1e-5, gradient
// atol 1e-7.
func TestGoldenMapsAndLosses(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "guidance", "golden.safetensors")
	u := loadUNet(t, torch.Options{})
	z := golden.Tensor(t, f, "inputs.z_t")
	ts := golden.Tensor(t, f, "inputs.t")
	g := &Guide{Subjects: goldenSubjects, Cond: golden.Tensor(t, f, "inputs.cond_embeds"), Probe: UNetProbe(u), Params: Params{Steps: 1}}
	if err := g.Check(77); err != nil {
		t.Fatal(err)
	}

	torch.NoGrad(func() {
		maps := CollectMaps(g.Probe, z, ts, g.Cond)
		var names []string
		for _, m := range maps {
			names = append(names, m.Layer)
		}
		if want := goldenLayers(t); !slices.Equal(names, want) {
			t.Fatalf("layers %v, want %v", names, want)
		}
		for _, m := range maps {
			a := m.A.Select(0, 0)
			golden.Compare(t, "attn."+m.Layer, a, golden.Tensor(t, f, "attn."+m.Layer), 1e-6)
			pos, scale := LayerTerms(a, m.H, m.W, g.Subjects)
			key := "loss." + m.Layer
			compareScalar(t, key+".L_pos", pos.Sum(), golden.Tensor(t, f, key+".L_pos"), 1e-5)
			compareScalar(t, key+".L_scale", scale.Sum(), golden.Tensor(t, f, key+".L_scale"), 1e-5)
			golden.Compare(t, key+".pos_terms", pos, golden.Tensor(t, f, key+".pos_terms"), 1e-5*pos.Amax().Item())
			golden.Compare(t, key+".scale_terms", scale, golden.Tensor(t, f, key+".scale_terms"), 1e-5*scale.Amax().Item())
		}
		compareScalar(t, "loss.L (maps)", Loss(maps, g.Subjects), golden.Tensor(t, f, "loss.L"), 1e-5)

		loss, grad := g.Gradient(z, int64(ts.Item()))
		compareScalar(t, "loss.L", loss, golden.Tensor(t, f, "loss.L"), 1e-5)
		golden.Compare(t, "grad", grad, golden.Tensor(t, f, "grad"), 1e-7)
		if torch.GradEnabled() {
			t.Error("Gradient left autograd on")
		}

		updated := g.Step(0, 1, int64(ts.Item()), z)
		golden.Compare(t, "z_t_updated", updated, golden.Tensor(t, f, "z_t_updated"), 1e-5)
	})
	for _, b := range u.TransformerBlocks() {
		if _, ok := b.Attn2.Processor.(unet.DefaultProcessor); !ok {
			t.Errorf("%s keeps processor %T", b.Attn2.Name, b.Attn2.Processor)
		}
	}
}

// TestGradientFiniteDifference checks dL/dz element by element against
// central differences of L, in f64 through the tiny UNet: the largest
// gradient elements and a few others.
func TestGradientFiniteDifference(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "guidance", "golden.safetensors")
	f64 := torch.Options{DType: torch.Float64}
	u := loadUNet(t, f64)
	z := golden.Tensor(t, f, "inputs.z_t").ToOptions(f64)
	const step int64 = 901
	g := &Guide{Subjects: goldenSubjects, Cond: golden.Tensor(t, f, "inputs.cond_embeds").ToOptions(f64), Probe: UNetProbe(u)}
	torch.NoGrad(func() {
		loss := func(z *torch.Tensor) float64 {
			l, _ := g.Gradient(z, step)
			return l.Item()
		}
		_, grad := g.Gradient(z, step)
		gs := grad.Float64s()
		// the three largest |dL/dz| and three fixed others
		order := make([]int, len(gs))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return int(math.Copysign(1, math.Abs(gs[b])-math.Abs(gs[a]))) })
		const h = 1e-4
		for _, i := range append(order[:3:3], 17, 400, 1000) {
			bump := func(d float64) *torch.Tensor {
				v := z.Clone()
				flat := v.View(-1)
				flat.Narrow(0, int64(i), 1).CopyFrom(flat.Narrow(0, int64(i), 1).AddScalar(d))
				return v
			}
			fd := (loss(bump(h)) - loss(bump(-h))) / (2 * h)
			rel := math.Abs(fd-gs[i]) / math.Max(math.Abs(gs[i]), 1e-6)
			t.Logf("element %4d: autograd %+.9e  finite difference %+.9e  rel %.2g", i, gs[i], fd, rel)
			if rel > 1e-5 {
				t.Errorf("element %d: autograd %g, finite difference %g", i, gs[i], fd)
			}
		}
	})
}

// TestNoSubjectsLeavesLatents: without boxes the latent passes through.
func TestNoSubjectsLeavesLatents(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	z := torch.Randn(torch.NewGenerator(3), 1, 4, 8, 8)
	before := z.Clone()
	g := &Guide{Probe: func(_, _, _ *torch.Tensor, _ Recorder) { t.Fatal("no subjects, yet the UNet ran") }}
	for i := range 10 {
		if got := g.Step(i, 10, 999, z); got != z {
			t.Fatalf("step %d returned a new tensor", i)
		}
	}
	golden.Compare(t, "latents", z, before, 0)
}

func TestAlphaAndGuidedSteps(t *testing.T) {
	for _, c := range []struct {
		i, n int
		want float64
	}{{0, 1, 1}, {0, 4, 1}, {1, 4, 1 - 0.5/3}, {3, 4, 0.5}, {0, 50, 1}, {49, 50, 0.5}} {
		if got := Alpha(c.i, c.n); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("Alpha(%d, %d) = %v, want %v", c.i, c.n, got, c.want)
		}
	}
	one := []Subject{{Tokens: []int64{1}, Box: [4]float64{0, 0, 1, 1}}}
	for _, c := range []struct {
		steps, n, guided int
	}{{0, 50, 25}, {0, 4, 2}, {0, 1, 0}, {0, 3, 1}, {1, 1, 1}, {10, 4, 4}, {3, 50, 3}} {
		g := &Guide{Subjects: one, Params: Params{Steps: c.steps}}
		count := 0
		for i := range c.n {
			if g.Guided(i, c.n) {
				if i != count {
					t.Errorf("steps %d of %d: step %d guided after a gap", c.steps, c.n, i)
				}
				count++
			}
		}
		if count != c.guided {
			t.Errorf("Params.Steps %d, %d steps: %d guided, want %d", c.steps, c.n, count, c.guided)
		}
	}
	if (Params{}).eta() != 20 || (Params{Eta: 5}).eta() != 5 {
		t.Error("eta default")
	}
}

// TestStepAtOneStep: with N = 1, alpha_t = 1, so the update is eta * grad.
func TestStepAtOneStep(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "guidance", "golden.safetensors")
	u := loadUNet(t, torch.Options{})
	z := golden.Tensor(t, f, "inputs.z_t")
	var seen float64
	g := &Guide{Subjects: goldenSubjects, Cond: golden.Tensor(t, f, "inputs.cond_embeds"), Probe: UNetProbe(u),
		Params: Params{Steps: 1, Eta: 3}, Observe: func(_ int, alpha float64, _, _ *torch.Tensor) { seen = alpha }}
	torch.NoGrad(func() {
		got := g.Step(0, 1, 901, z)
		if seen != 1 {
			t.Errorf("alpha %v at N = 1", seen)
		}
		want := z.Sub(golden.Tensor(t, f, "grad").MulScalar(3))
		golden.Compare(t, "z - 3 grad", got, want, 1e-6)
	})
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		g    Guide
		want string
	}{
		{Guide{Subjects: []Subject{{Box: [4]float64{0, 0, 1, 1}}}}, "subject 1 has no token positions"},
		{Guide{Subjects: []Subject{{Tokens: []int64{77}}}}, "subject 1: token position 77 is outside the prompt's 77 tokens"},
		{Guide{Subjects: []Subject{{Tokens: []int64{1}, Box: [4]float64{0, math.NaN(), 1, 1}}}}, "subject 1: box [0 NaN 1 1] is not finite"},
		{Guide{Params: Params{Eta: -1}}, "guidance eta must be positive, got -1"},
		{Guide{Params: Params{Steps: -1}}, "guided steps must be 0 (half) or more, got -1"},
		{Guide{Subjects: goldenSubjects}, ""},
	} {
		err := c.g.Check(77)
		if got := fmt.Sprint(err); (err == nil && c.want != "") || (err != nil && got != c.want) {
			t.Errorf("Check: %v, want %q", err, c.want)
		}
	}
}

// TestUNetProbeRefusesForeignProcessor: an adapter's attn2 processor that
// cannot record must not be silently replaced (its adapter would be off).
func TestUNetProbeRefusesForeignProcessor(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t, torch.Options{})
	first := u.TransformerBlocks()[0].Attn2
	first.Processor = foreign{}
	defer func() { first.Processor = unet.DefaultProcessor{} }()
	err := torch.Try(func() {
		torch.NoGrad(func() {
			CollectMaps(UNetProbe(u), torch.Zeros(1, 4, 16, 16), torch.New([]int64{1}).Reshape(), torch.Zeros(1, 77, 32))
		})
	})
	if err == nil || err.Error() != "torch: guidance: down_blocks.0.attentions.0.transformer_blocks.0.attn2 has processor guidance.foreign, which cannot record its attention probabilities (make it unet.Recordable)" {
		t.Fatalf("error %v", err)
	}
	if _, ok := u.TransformerBlocks()[1].Attn2.Processor.(unet.DefaultProcessor); !ok {
		t.Error("processors not restored after the failure")
	}
}

type foreign struct{}

func (foreign) Process(a *unet.Attention, x, context *torch.Tensor) *torch.Tensor {
	return unet.DefaultProcessor{}.Process(a, x, context)
}

// TestRecordableProcessorIsUsed: a Recordable adapter processor records in
// place of the default.
func TestRecordableProcessorIsUsed(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t, torch.Options{})
	calls := 0
	for _, b := range u.TransformerBlocks() {
		b.Attn2.Processor = recordable{calls: &calls}
	}
	defer func() {
		for _, b := range u.TransformerBlocks() {
			b.Attn2.Processor = unet.DefaultProcessor{}
		}
	}()
	torch.NoGrad(func() {
		maps := CollectMaps(UNetProbe(u), torch.Zeros(1, 4, 16, 16), torch.New([]int64{1}).Reshape(), torch.Zeros(1, 77, 32))
		if len(maps) != 16 || calls != 16 {
			t.Errorf("%d maps from %d recording processors, want 16", len(maps), calls)
		}
	})
	if _, ok := u.TransformerBlocks()[0].Attn2.Processor.(recordable); !ok {
		t.Error("adapter processor not restored")
	}
}

type recordable struct{ calls *int }

func (recordable) Process(a *unet.Attention, x, context *torch.Tensor) *torch.Tensor {
	return unet.DefaultProcessor{}.Process(a, x, context)
}

func (r recordable) Recording(record func(a *unet.Attention, probs *torch.Tensor)) unet.Processor {
	*r.calls++
	return unet.ProbsProcessor{Record: record}
}

// TestGuidedBatchIsPerElement: with a batch of two copies of z, each
// element's gradient is the batch-of-one gradient.
func TestGuidedBatchIsPerElement(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "guidance", "golden.safetensors")
	u := loadUNet(t, torch.Options{})
	z := golden.Tensor(t, f, "inputs.z_t")
	g := &Guide{Subjects: goldenSubjects, Cond: golden.Tensor(t, f, "inputs.cond_embeds"), Probe: UNetProbe(u)}
	torch.NoGrad(func() {
		loss, grad := g.Gradient(torch.Cat([]*torch.Tensor{z, z}, 0), 901)
		compareScalar(t, "batch loss / 2", loss.DivScalar(2), golden.Tensor(t, f, "loss.L"), 1e-5)
		for b := range int64(2) {
			golden.Compare(t, fmt.Sprintf("grad[%d]", b), grad.Narrow(0, b, 1), golden.Tensor(t, f, "grad"), 1e-7)
		}
	})
}
