package pipeline

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// tinyLCP is tiny-sd with an adapter assembled from the tiny public parts
// and the tiny image encoder.
func tinyLCP(t *testing.T) (*Model, *lcp.Adapter, Encoders) {
	t.Helper()
	m := loadTinySD(t)
	a, err := lcp.FromParts(golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"),
		golden.Path(t, "tiny-gligen", "unet"), m.UNet, m.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Free)
	vision, err := clip.LoadVisionEncoder(golden.Path(t, "tiny-ip-adapter", "image_encoder"), m.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vision.Free)
	proc, err := clip.LoadImageProcessorConfig(golden.Path(t, "tiny-ip-adapter", "feature_extractor", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m, a, Encoders{Vision: vision, Processor: proc}
}

func dogSubjects(t *testing.T) []Subject {
	img, err := data.ReadImage(golden.Path(t, "tiny-ip-adapter", "dog00.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	mask := data.NewGray(img.W, img.H)
	for y := img.H / 4; y < img.H*3/4; y++ {
		for x := img.W / 4; x < img.W*3/4; x++ {
			mask.Pix[y*img.W+x] = 255
		}
	}
	return []Subject{
		{References: []*data.RGB{img, img}, Masks: []*data.Gray{mask, nil}, Box: [4]float64{0.05, 0.3, 0.45, 0.95}, Words: "dog", Category: "dog"},
		{References: []*data.RGB{img}, Box: [4]float64{0.55, 0.1, 0.95, 0.6}, Words: "red ball", Category: "ball"},
	}
}

func TestLCPOffEqualsTextToImage(t *testing.T) {
	m, a, enc := tinyLCP(t)
	r := LCP{Text2Image: Text2Image{Prompt: "a dog and a red ball on the beach", Steps: 3, CFGScale: 7.5, Seed: 1,
		Width: 128, Height: 128, Batch: 1}, Subjects: dogSubjects(t)}
	got, err := m.GenerateLCP(r, a, enc)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Free()
	want, err := m.Generate(r.Text2Image)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Free()
	golden.Compare(t, "every strength 0", got, want, 0)
}

func TestLCPMultiSubjectRuns(t *testing.T) {
	m, a, enc := tinyLCP(t)
	var live []int64
	r := LCP{
		Text2Image: Text2Image{Prompt: "a dog and a red ball on the beach", Steps: 4, CFGScale: 7.5, Seed: 2,
			Width: 128, Height: 128, Batch: 1, OnStep: func(int, int64, *torch.Tensor) { live = append(live, torch.LiveTensors()) }},
		Subjects: dogSubjects(t), IPScale: 1, StaticScale: 1, GroundingTau: 0.5, Guidance: true, RegionRestrict: true,
	}
	for _, l := range a.Static {
		l.Mu.Fill(1) // as if trained: static attention acts
	}
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	img, err := m.GenerateLCP(r, a, enc)
	if err != nil {
		t.Fatal(err)
	}
	if sh := img.Shape(); sh[0] != 1 || sh[2] != 128 {
		t.Fatalf("image %v", sh)
	}
	// A guided step holds one tensor more (the moved latents) than the
	// steps after guidance ends; within each phase nothing may grow.
	for i := range live {
		if first := live[min(i/2*2, 2)]; live[i] != first {
			t.Fatalf("live tensors per step drift: %v", live)
		}
	}
	img.Free()
	// Finalisers of earlier garbage may free tensors meanwhile: no growth
	// is the claim.
	if d := torch.LiveTensors() - before; d > 0 {
		t.Fatalf("generation left %d tensors", d)
	}
	plain, err := m.Generate(r.Text2Image)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Free()
	r.OnStep = nil
	again, err := m.GenerateLCP(r, a, enc)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Free()
	if d := again.Sub(plain).Abs().Amax().Item(); d < 1e-3 {
		t.Fatalf("subjects changed the image by only %g", d)
	}
}

func TestLCPBadRequests(t *testing.T) {
	m, a, enc := tinyLCP(t)
	base := LCP{Text2Image: Text2Image{Prompt: "a dog on the beach", Steps: 1, CFGScale: 7.5, Width: 64, Height: 64, Batch: 1}}
	subj := dogSubjects(t)[0]
	for _, c := range []struct {
		mutate func(s *Subject)
		want   string
	}{
		{func(s *Subject) { s.Box = [4]float64{0.5, 0, 1.2, 1} }, "outside [0, 1]"},
		{func(s *Subject) { s.Box = [4]float64{0.5, 0, 0.5, 1} }, "empty"},
		{func(s *Subject) { s.Words = "cat" }, "cat"},
		{func(s *Subject) { s.Masks = []*data.Gray{data.NewGray(3, 3), nil} }, "mask 1 is 3x3"},
	} {
		s := subj
		c.mutate(&s)
		r := base
		r.Subjects = []Subject{s}
		if _, err := m.GenerateLCP(r, a, enc); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}

// conditionedUNet is the UNet's prediction at timestep 500 for latents
// [B, 4, h, w] and embeds with a conditioned by c (every strength 1, each
// subject kept to its box), the adapter reset afterwards.
func conditionedUNet(t *testing.T, m *Model, a *lcp.Adapter, c AdapterCondition, latents, embeds *torch.Tensor) *torch.Tensor {
	t.Helper()
	c.IPScale, c.StaticScale, c.GroundingBeta, c.RegionRestrict = 1, 1, 1, true
	c.LatentH, c.LatentW = latents.Size(2), latents.Size(3)
	if err := m.ConditionAdapter(a, c); err != nil {
		t.Fatal(err)
	}
	defer m.ResetAdapter(a)
	var out *torch.Tensor
	torch.NoGrad(func() { out = m.UNet.Forward(latents, torch.New([]int64{500}).Reshape(), embeds) })
	return out
}

// An adapter conditioned per row (a training micro-batch, each sample with
// subjects of its own) gives each row of a UNet call what that row's
// subjects alone give it: static, dynamic and grounding attention all
// keep to their row.
func TestConditionAdapterPerRow(t *testing.T) {
	m, a, enc := tinyLCP(t)
	for _, l := range a.Static {
		l.Mu.Fill(1) // as if trained: static attention acts
	}
	a.Layout.ImageTrained = true // and the layout module's image tokens flow
	const side = 128
	subjects := dogSubjects(t)
	boxes := [][4]float64{subjects[0].Box, subjects[1].Box, {0.2, 0.2, 0.7, 0.9}}
	encode := func(k int) EncodedSubject {
		s := subjects[k%2]
		e := m.EncodeSubjects(enc, []SubjectViews{{Static: whiten(s.References[0], maskOf(s, 0)), Mask: maskOf(s, 0), Dynamic: s.References, Category: s.Category}}, side, side)[0]
		e.Box, e.Phrase = boxes[k], s.Words
		return e
	}
	g := torch.NewGenerator(3)
	latents, embeds := torch.Randn(g, 2, 4, side/8, side/8), torch.Randn(g, 2, 77, 32)
	run := func(c AdapterCondition, latents, embeds *torch.Tensor) *torch.Tensor {
		return conditionedUNet(t, m, a, c, latents, embeds)
	}

	rows := run(AdapterCondition{Batch: 2, Subjects: []EncodedSubject{encode(0), encode(1), encode(2)}, RowOf: []int{0, 0, 1}}, latents, embeds)
	defer rows.Free()
	for r, mine := range [][]int{{0, 1}, {2}} {
		c := AdapterCondition{Batch: 1}
		for _, k := range mine {
			c.Subjects = append(c.Subjects, encode(k))
		}
		alone := run(c, latents.Narrow(0, int64(r), 1), embeds.Narrow(0, int64(r), 1))
		// A batch of 2 against 1 sums in another order: 1.6e-6 measured.
		golden.Compare(t, fmt.Sprintf("row %d", r), rows.Narrow(0, int64(r), 1), alone, 1e-5)
		alone.Free()
	}

	for _, c := range []struct {
		cond AdapterCondition
		want string
	}{
		{AdapterCondition{Batch: 2, RowOf: []int{0, 1}}, "rows for 2 subjects, 1 subjects"},
		{AdapterCondition{Batch: 2, RowOf: []int{2}}, "row 2 of a batch of 2"},
		{AdapterCondition{Batch: 2, RowOf: []int{0}, Guided: true}, "classifier-free guidance"},
	} {
		c.cond.Subjects = []EncodedSubject{encode(0)}
		if err := m.ConditionAdapter(a, c.cond); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RowOf %v: error %v, want %q", c.cond.RowOf, err, c.want)
		}
	}
}

// A training row whose subjects are dropped sees what classifier-free
// guidance's unconditional row sees at generation (the zero image's
// tokens in each box, no static term, the null grounding tokens), and its
// conditioned row what guidance's conditional row sees.
func TestDroppedRowsAreGuidanceUnconditionalRows(t *testing.T) {
	m, a, enc := tinyLCP(t)
	for _, l := range a.Static {
		l.Mu.Fill(1) // as if trained: static attention acts
	}
	a.Layout.ImageTrained = true
	const side = 128
	subjects := dogSubjects(t)
	encode := func() []EncodedSubject {
		views := make([]SubjectViews, len(subjects))
		for k, s := range subjects {
			views[k] = SubjectViews{Static: whiten(s.References[0], maskOf(s, 0)), Mask: maskOf(s, 0), Dynamic: s.References, Category: s.Category}
		}
		e := m.EncodeSubjects(enc, views, side, side)
		for k, s := range subjects {
			e[k].Box, e[k].Phrase = s.Box, s.Words
		}
		return e
	}
	zero := ZeroImageHidden(enc)
	defer zero.Free()
	g := torch.NewGenerator(5)
	latents, embeds := torch.Randn(g, 2, 4, side/8, side/8), torch.Randn(g, 2, 77, 32)
	run := func(c AdapterCondition) *torch.Tensor { return conditionedUNet(t, m, a, c, latents, embeds) }

	guided := run(AdapterCondition{Batch: 1, Guided: true, Subjects: encode(), Uncond: zero.Clone()})
	defer guided.Free()
	train := AdapterCondition{Batch: 2, RowOf: []int{0, 0, 1, 1}}
	for _, s := range subjects {
		views := zero.Repeat(int64(len(s.References)), 1, 1) // as many zero images as views, as guidance has
		train.Subjects = append(train.Subjects, DroppedSubject(views, s.Box))
		views.Free()
	}
	train.Subjects = append(train.Subjects, encode()...)
	rows := run(train)
	defer rows.Free()
	// The per-row path sums in another order: as TestConditionAdapterPerRow.
	golden.Compare(t, "dropped rows", rows, guided, 1e-5)

	// Without the zero image's tokens the dropped row is another one.
	plain := run(AdapterCondition{Batch: 2, RowOf: []int{1, 1}, Subjects: encode()})
	defer plain.Free()
	if d := plain.Narrow(0, 0, 1).Sub(guided.Narrow(0, 0, 1)).Abs().Amax().Float32s()[0]; d < 1e-3 {
		t.Errorf("a row without subjects differs from guidance's unconditional row by %g only: the test cannot tell them apart", d)
	}

	c := AdapterCondition{Batch: 1, Guided: true, Subjects: []EncodedSubject{DroppedSubject(zero, subjects[0].Box)}}
	if err := m.ConditionAdapter(a, c); err == nil || !strings.Contains(err.Error(), "dropped subjects are training's") {
		t.Errorf("dropped subjects with guidance: error %v", err)
	}
}
