package ipadapter

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/guidance"
	"github.com/lcpdiff/lcpdiff/internal/model/region"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

const ipScale = 0.6 // the golden run's set_ip_adapter_scale

func loadUNet(t *testing.T) *unet.UNet {
	t.Helper()
	u, err := unet.Load(golden.Path(t, "tiny-sd", "unet"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Free)
	return u
}

func adapterPath(t *testing.T) string {
	return golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors")
}

func loadAdapter(t *testing.T, u *unet.UNet) *Adapter {
	t.Helper()
	a, err := Load(adapterPath(t), u, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Free)
	return a
}

func goldenFile(t *testing.T) *torch.SafetensorsFile {
	return golden.File(t, "tiny-ip-adapter", "golden.safetensors")
}

func TestResamplerConfigFromShapes(t *testing.T) {
	u := loadUNet(t)
	a := loadAdapter(t, u)
	want := ResamplerConfig{Dim: 32, Depth: 4, DimHead: 64, Heads: 2, NumQueries: 16, EmbeddingDim: 32, OutputDim: 32, FFMult: 4}
	if a.Resampler.Config != want {
		t.Fatalf("config %+v, want %+v", a.Resampler.Config, want)
	}
}

// TestGoldenResampler: diffusers' IPAdapterPlusImageProjection on the
// image encoder's hidden states, the zero image's, and a random batch.
// The README's tolerance is 1e-5 (diffusers vs tencent order: 1.8e-6).
func TestGoldenResampler(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	a := loadAdapter(t, u)
	f := goldenFile(t)
	torch.NoGrad(func() {
		for _, c := range []struct{ in, out string }{
			{"resampler.input", "resampler.output"},
			{"image_encoder.uncond_penultimate", "resampler.uncond_output"},
			{"resampler.batch_input", "resampler.batch_output"},
		} {
			golden.Compare(t, c.out, a.Resampler.Forward(golden.Tensor(t, f, c.in)), golden.Tensor(t, f, c.out), 1e-5)
		}
		// The pipeline's tokens: [negative, positive] x 1 image each.
		embeds := golden.Tensor(t, f, "pipeline.image_embeds") // [2, 1, 17, 32]
		var got []*torch.Tensor
		for i := range int64(2) {
			got = append(got, a.ImageTokens(embeds.Select(0, i)))
		}
		golden.Compare(t, "pipeline.ip_tokens", torch.Stack(got, 0), golden.Tensor(t, f, "pipeline.ip_tokens"), 1e-5)
	})
}

// TestGoldenUNetSteps runs the UNet with the adapter on each step's golden
// input and compares both halves of the noise prediction (atol 1e-4, the
// latents' tolerance).
func TestGoldenUNetSteps(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	a := loadAdapter(t, u)
	a.Scale = ipScale
	f := goldenFile(t)
	timesteps := golden.Tensor(t, f, "pipeline.timesteps").Float64s()
	torch.NoGrad(func() {
		embeds := golden.Tensor(t, f, "pipeline.image_embeds") // [negative, positive]
		c := Condition{
			Uncond:   []*torch.Tensor{a.ImageTokens(embeds.Select(0, 0))},
			Subjects: []*torch.Tensor{a.ImageTokens(embeds.Select(0, 1))},
		}
		if err := a.SetCondition(c); err != nil {
			t.Fatal(err)
		}
		context := golden.Tensor(t, f, "pipeline.prompt_embeds")
		for i, ts := range timesteps {
			step := fmt.Sprintf("pipeline.step%d.", i)
			noise := u.Forward(golden.Tensor(t, f, step+"unet_input"), torch.New([]int64{int64(ts)}).Reshape(), context)
			halves := noise.Chunk(2, 0)
			golden.Compare(t, step+"noise_pred_uncond", halves[0], golden.Tensor(t, f, step+"noise_pred_uncond"), 1e-4)
			golden.Compare(t, step+"noise_pred_text", halves[1], golden.Tensor(t, f, step+"noise_pred_text"), 1e-4)
		}
	})
}

// baseAndAdapted runs the UNet on a fixed input before and after
// attaching an adapter conditioned on random tokens.
type unetRun struct {
	u                  *unet.UNet
	sample, t, context *torch.Tensor
}

func newRun(t *testing.T, u *unet.UNet) unetRun {
	g := torch.NewGenerator(3)
	t.Cleanup(g.Close)
	return unetRun{u: u, sample: torch.Randn(g, 2, 4, 16, 16), t: torch.New([]int64{501}).Reshape(), context: torch.Randn(g, 2, 77, 32)}
}

func (r unetRun) forward() []float32 {
	var out []float32
	torch.NoGrad(func() { out = r.u.Forward(r.sample, r.t, r.context).Float32s() })
	return out
}

func randomTokens(seed uint64, n int) []*torch.Tensor {
	g := torch.NewGenerator(seed)
	defer g.Close()
	var out []*torch.Tensor
	for range n {
		out = append(out, torch.Randn(g, 2, 16, 32))
	}
	return out
}

// TestScaleZeroAndDetachGiveTheBaseUNet: with lambda = 0 the image term
// adds exact zeros, and Detach puts the original processors back; both
// must reproduce the plain UNet bit for bit.
func TestScaleZeroAndDetachGiveTheBaseUNet(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	run := newRun(t, u)
	base := run.forward()

	a := loadAdapter(t, u)
	if err := a.SetCondition(Condition{Subjects: randomTokens(5, 2)}); err != nil {
		t.Fatal(err)
	}
	withImages := run.forward()
	if slices.Equal(withImages, base) {
		t.Fatal("the adapter at scale 1 changed nothing")
	}
	a.Scale = 0
	if got := run.forward(); !slices.Equal(got, base) {
		t.Errorf("scale 0 differs from the base UNet (max abs %g)", maxAbsDiff(got, base))
	}
	a.Detach()
	for _, attn := range u.Attentions() {
		if _, ok := attn.Processor.(unet.DefaultProcessor); !ok {
			t.Fatalf("%s keeps %T after Detach", attn.Name, attn.Processor)
		}
	}
	a.Scale = 1
	if got := run.forward(); !slices.Equal(got, base) {
		t.Errorf("detached adapter differs from the base UNet (max abs %g)", maxAbsDiff(got, base))
	}
	a.Attach()
	if got := run.forward(); !slices.Equal(got, withImages) {
		t.Errorf("re-attached adapter differs from its first run (max abs %g)", maxAbsDiff(got, withImages))
	}
}

func maxAbsDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = max(m, float64(max(a[i]-b[i], b[i]-a[i])))
	}
	return m
}

// TestBoxesConfineEachSubject checks the per-subject restriction on single
// layers of every grid size: changing subject 1's tokens changes the
// layer's output inside its box only, and one subject boxed to the whole
// image is plain IP-Adapter.
func TestBoxesConfineEachSubject(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	a := loadAdapter(t, u)
	const latentH, latentW = 16, 12 // not square, and halving to odd sides
	boxes := [][4]float64{{0.05, 0.1, 0.45, 0.9}, {0.5, 0.2, 0.95, 0.7}}
	tokens := randomTokens(7, 2)
	changed := slices.Clone(tokens)
	changed[1] = randomTokens(8, 1)[0]
	g := torch.NewGenerator(9)
	defer g.Close()
	context := torch.Randn(g, 2, 77, 32)

	checked := map[int64]bool{}
	for _, attn := range a.layers {
		h, w := int64(latentH), int64(latentW)
		switch {
		case strings.HasPrefix(attn.Name, "down_blocks.1"), strings.HasPrefix(attn.Name, "up_blocks.2"):
			h, w = 8, 6
		case strings.HasPrefix(attn.Name, "down_blocks.2"), strings.HasPrefix(attn.Name, "up_blocks.1"):
			h, w = 4, 3
		case strings.HasPrefix(attn.Name, "mid_block"):
			h, w = 2, 2
		}
		if checked[h*w] {
			continue
		}
		checked[h*w] = true
		x := torch.Randn(g, 2, h*w, attn.ToQ.Weight.Size(1))
		run := func(subjects []*torch.Tensor, boxes [][4]float64) []float32 {
			if err := a.SetCondition(Condition{Subjects: subjects, Boxes: boxes, LatentH: latentH, LatentW: latentW}); err != nil {
				t.Fatal(err)
			}
			var out []float32
			torch.NoGrad(func() { out = attn.Forward(x, context).Float32s() })
			return out
		}
		before, after := run(tokens, boxes), run(changed, boxes)
		mask := region.BoxMask(boxes[1], h, w).Float32s()
		c := int64(len(before)) / (2 * h * w)
		insideChanged := false
		for i := range before {
			n := int64(i) / c % (h * w)
			if mask[n] == 0 && before[i] != after[i] {
				t.Fatalf("%s (%dx%d): query %d outside subject 1's box changed", attn.Name, h, w, n)
			}
			insideChanged = insideChanged || (mask[n] == 1 && before[i] != after[i])
		}
		if !insideChanged {
			t.Errorf("%s (%dx%d): subject 1's tokens change nothing inside its box", attn.Name, h, w)
		}
		whole, plain := run(tokens[:1], [][4]float64{{0, 0, 1, 1}}), run(tokens[:1], nil)
		if !slices.Equal(whole, plain) {
			t.Errorf("%s: one subject boxed to the whole image differs from plain IP-Adapter (max abs %g)", attn.Name, maxAbsDiff(whole, plain))
		}
	}
	if len(checked) != 4 {
		t.Errorf("checked grids %v, want 4 sizes", checked)
	}
}

// TestGuidanceProbeRecordsTextProbs: box guidance's probe of the UNet
// with the adapter attached gets every cross-attention layer's text
// probabilities from the adapter's processors, and a recording processor
// computes what the plain one does.
func TestGuidanceProbeRecordsTextProbs(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	run := newRun(t, u)
	a := loadAdapter(t, u)
	a.Scale = ipScale
	if err := a.SetCondition(Condition{Subjects: randomTokens(5, 1)}); err != nil {
		t.Fatal(err)
	}
	var names []string
	torch.NoGrad(func() {
		guidance.UNetProbe(u)(run.sample, run.t, run.context, func(layer string, probs *torch.Tensor) {
			names = append(names, layer)
			if shape := probs.Shape(); len(shape) != 4 || shape[0] != 2 || shape[3] != 77 {
				t.Errorf("%s: probs %v, want [2, heads, N, 77]", layer, shape)
			}
			if d := probs.Sum(-1).AddScalar(-1).Abs().Amax().Item(); d > 1e-5 {
				t.Errorf("%s: rows sum to 1 within %g", layer, d)
			}
		})
	})
	if len(names) != len(a.Layers) {
		t.Errorf("recorded %d layers, want %d", len(names), len(a.Layers))
	}
	for _, attn := range u.Attentions() {
		_, adapted := attn.Processor.(*Processor)
		if adapted != strings.HasSuffix(attn.Name, "attn2") {
			t.Fatalf("%s: the probe left %T", attn.Name, attn.Processor)
		}
	}

	attn, p := a.layers[0], a.Layers[0]
	g := torch.NewGenerator(4)
	defer g.Close()
	x := torch.Randn(g, 2, 16*16, attn.ToQ.Weight.Size(1))
	torch.NoGrad(func() {
		plain := p.Process(attn, x, run.context)
		recorded := p.Recording(func(*unet.Attention, *torch.Tensor) {}).Process(attn, x, run.context)
		if d := recorded.Sub(plain).Abs().Amax().Item(); d > 1e-6 {
			t.Errorf("recording changed the output by %g", d)
		}
	})
}

// TestBatchPicksTheTokens: with unconditional tokens set, a UNet batch of
// 2B attends to [uncond; cond] and a batch of B (the guidance probe's
// conditional branch) to the subject's tokens, as its half of the 2B run.
func TestBatchPicksTheTokens(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	a := loadAdapter(t, u)
	g := torch.NewGenerator(12)
	defer g.Close()
	cond, uncond := torch.Randn(g, 1, 16, 32), torch.Randn(g, 1, 16, 32)
	if err := a.SetCondition(Condition{Subjects: []*torch.Tensor{cond}, Uncond: []*torch.Tensor{uncond}}); err != nil {
		t.Fatal(err)
	}
	sample, context := torch.Randn(g, 1, 4, 16, 16), torch.Randn(g, 2, 77, 32)
	ts := torch.New([]int64{251}).Reshape()
	torch.NoGrad(func() {
		both := u.Forward(torch.Cat([]*torch.Tensor{sample, sample}, 0), ts, context).Chunk(2, 0)
		single := u.Forward(sample, ts, context.Narrow(0, 1, 1))
		if d := single.Sub(both[1]).Abs().Amax().Item(); d > 1e-5 {
			t.Errorf("batch 1 differs from the conditional half of batch 2 by %g", d)
		}
		if d := both[0].Sub(both[1]).Abs().Amax().Item(); d == 0 {
			t.Error("the halves are equal: the unconditional tokens were not used")
		}
		err := torch.Try(func() {
			u.Forward(torch.Cat([]*torch.Tensor{sample, sample, sample}, 0), ts, context.Narrow(0, 0, 1).Expand(3, 77, 32))
		})
		if err == nil || !strings.Contains(err.Error(), "image tokens are set for a batch of 1 or 2, the UNet runs 3") {
			t.Errorf("batch 3: %v", err)
		}
	})
}

func TestLayerOrderFollowsTheCheckpoint(t *testing.T) {
	u := loadUNet(t)
	a := loadAdapter(t, u)
	var got []string
	for _, l := range a.layers {
		got = append(got, strings.TrimSuffix(l.Name, ".transformer_blocks.0.attn2"))
	}
	want := []string{
		"down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "down_blocks.1.attentions.0",
		"down_blocks.1.attentions.1", "down_blocks.2.attentions.0", "down_blocks.2.attentions.1",
		"up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
		"up_blocks.2.attentions.0", "up_blocks.2.attentions.1", "up_blocks.2.attentions.2",
		"up_blocks.3.attentions.0", "up_blocks.3.attentions.1", "up_blocks.3.attentions.2",
		"mid_block.attentions.0",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("layers %v\nwant %v", got, want)
	}
	// ip_adapter.31 is the only [64, 32] pair: the mid block's.
	if r := a.Layers[15].ToKIP.Weight.Size(0); r != 64 {
		t.Errorf("mid block to_k_ip has %d rows, want 64", r)
	}
}

// TestLoadErrors: a checkpoint that does not fit the UNet fails with one
// line that names the file.
func TestLoadErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	f, err := torch.OpenSafetensors(adapterPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all := map[string]*torch.Tensor{}
	for _, k := range f.Header.Names() {
		all[k] = golden.Tensor(t, f, k)
	}
	write := func(name string, edit func(map[string]*torch.Tensor)) string {
		m := map[string]*torch.Tensor{}
		for k, v := range all {
			m[k] = v
		}
		edit(m)
		p := filepath.Join(t.TempDir(), name)
		if err := torch.SaveSafetensors(p, m, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unprefixed := write("unprefixed.safetensors", func(m map[string]*torch.Tensor) {
		for k, v := range m {
			delete(m, k)
			k = strings.TrimPrefix(strings.TrimPrefix(k, "image_proj."), "ip_adapter.")
			m[k] = v
		}
	})
	if a, err := Load(unprefixed, u, torch.Options{}); err != nil {
		t.Errorf("keys without prefixes: %v", err)
	} else {
		a.Free()
	}

	for _, c := range []struct {
		name, want string
		edit       func(map[string]*torch.Tensor)
	}{
		{"missing-layer.safetensors", "15 cross-attention layers (ip_adapter.N.to_k_ip), the UNet has 16", func(m map[string]*torch.Tensor) {
			delete(m, "ip_adapter.31.to_k_ip.weight")
			delete(m, "ip_adapter.31.to_v_ip.weight")
		}},
		{"wrong-width.safetensors", "ip_adapter.31.to_v_ip.weight is [32 32], want [64 32]", func(m map[string]*torch.Tensor) {
			m["ip_adapter.31.to_v_ip.weight"] = m["ip_adapter.1.to_v_ip.weight"]
		}},
		{"wrong-tokens.safetensors", "image tokens are 16 wide (image_proj.proj_out), the UNet's cross_attention_dim is 32", func(m map[string]*torch.Tensor) {
			m["image_proj.proj_out.weight"] = m["image_proj.proj_out.weight"].Narrow(0, 0, 16).Contiguous()
		}},
		{"plain.safetensors", "a plain IP-Adapter (image_proj.proj), not IP-Adapter Plus", func(m map[string]*torch.Tensor) {
			delete(m, "image_proj.latents")
			m["image_proj.proj.weight"] = m["image_proj.proj_in.weight"]
		}},
	} {
		p := write(c.name, c.edit)
		_, err := Load(p, u, torch.Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming the file with %q", c.name, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.safetensors"), u, torch.Options{}); err == nil || !strings.Contains(err.Error(), "none.safetensors") {
		t.Errorf("missing file: %v", err)
	}
	for _, attn := range u.Attentions() {
		if _, ok := attn.Processor.(unet.DefaultProcessor); !ok {
			t.Fatalf("a failed load left %T on %s", attn.Processor, attn.Name)
		}
	}
}

// TestRowsKeepToTheirSubjects: with subjects set per row (a training
// micro-batch), each row of a UNet call attends to its own subjects' tokens
// alone, as a batch of one with only them would.
func TestRowsKeepToTheirSubjects(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := loadUNet(t)
	a := loadAdapter(t, u)
	g := torch.NewGenerator(13)
	defer g.Close()
	tokens := []*torch.Tensor{torch.Randn(g, 1, 16, 32), torch.Randn(g, 1, 16, 32), torch.Randn(g, 1, 16, 32)}
	sample, context := torch.Randn(g, 2, 4, 16, 16), torch.Randn(g, 2, 77, 32)
	ts := torch.New([]int64{251}).Reshape()
	if err := a.SetCondition(Condition{Subjects: tokens, RowOf: []int{0, 1, 1}}); err != nil {
		t.Fatal(err)
	}
	var rows *torch.Tensor
	torch.NoGrad(func() { rows = u.Forward(sample, ts, context) })
	for r, mine := range [][]*torch.Tensor{tokens[:1], tokens[1:]} {
		if err := a.SetCondition(Condition{Subjects: mine}); err != nil {
			t.Fatal(err)
		}
		torch.NoGrad(func() {
			alone := u.Forward(sample.Narrow(0, int64(r), 1), ts, context.Narrow(0, int64(r), 1))
			// A batch of 2 against 1 sums in another order.
			golden.Compare(t, fmt.Sprintf("row %d", r), rows.Narrow(0, int64(r), 1), alone, 1e-5)
		})
	}

	if err := a.SetCondition(Condition{Subjects: tokens, RowOf: []int{0, 3, 1}}); err != nil {
		t.Fatal(err)
	}
	err := torch.Try(func() { u.Forward(sample, ts, context) })
	if err == nil || !strings.Contains(err.Error(), "subject 1 is set for row 3 of a batch of 2") {
		t.Errorf("a row past the batch: %v", err)
	}
	for _, c := range []struct {
		cond Condition
		want string
	}{
		{Condition{Subjects: tokens, RowOf: []int{0, 1}}, "rows for 2 subjects, 3 subjects"},
		{Condition{Subjects: randomTokens(1, 1), RowOf: []int{0}}, "tokens [1, Q, C], got a batch of 2"},
		{Condition{Subjects: tokens[:1], Uncond: tokens[1:2], RowOf: []int{0}}, "no unconditional tokens"},
	} {
		if err := a.SetCondition(c.cond); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}
