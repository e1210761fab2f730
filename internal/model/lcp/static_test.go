package lcp

import (
	"fmt"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/region"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func tinyUNet(t *testing.T, o torch.Options) *unet.UNet {
	t.Helper()
	u, err := unet.Load(golden.Path(t, "tiny-sd", "unet"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Free)
	return u
}

// newStatic attaches freshly initialised static layers (mu = 0).
func newStatic(t *testing.T, u *unet.UNet, st *StaticState) []*StaticLayer {
	l := nn.NewLoader("lcp", nn.Empty{}, torch.OptionsOf(u.ConvIn.Weight))
	l.Init = nn.RandomInit(5, 0.02)
	layers := AttachStatic(l.Root().Sub("static"), u, st)
	if err := l.Err(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DetachStatic(u, layers); nn.Free(l.Params()) })
	return layers
}

// subjectMask is a [1, 1, 128, 128] mask: a filled rectangle.
func subjectMask(x0, y0, x1, y1 int) *torch.Tensor {
	m := make([]float32, 128*128)
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			m[y*128+x] = 1
		}
	}
	return torch.New(m, 1, 1, 128, 128)
}

func TestStaticAttentionInvariants(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{})
	g := torch.NewGenerator(3)
	sample, ctx := torch.Randn(g, 2, 4, 16, 16), torch.Randn(g, 2, 77, 32)
	ts := torch.New([]int64{500}).Reshape()
	var base *torch.Tensor
	torch.NoGrad(func() { base = u.Forward(sample, ts, ctx) })

	ref, err := Refine(u, torch.Randn(g, 1, 4, 16, 16), subjectMask(20, 30, 90, 110), torch.Randn(g, 1, 77, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Free()
	if len(ref.Features) != 16 || ref.Empty {
		t.Fatalf("reference of %d layers (empty %v)", len(ref.Features), ref.Empty)
	}
	st := &StaticState{Alpha: 1, Subjects: []*Reference{ref}, Boxes: [][4]float64{{0.1, 0.1, 0.6, 0.9}},
		Restrict: true, Rows: torch.New([]float32{0, 1}), LatentH: 16, LatentW: 16}
	layers := newStatic(t, u, st)
	run := func() *torch.Tensor {
		var out *torch.Tensor
		torch.NoGrad(func() { out = u.Forward(sample, ts, ctx) })
		return out
	}
	golden.Compare(t, "mu = 0 gives the base UNet", run(), base, 0)

	for _, l := range layers {
		l.Mu.Fill(1)
	}
	withStatic := run()
	uncond, cond := withStatic.Select(0, 0), withStatic.Select(0, 1)
	golden.Compare(t, "unconditional row untouched", uncond, base.Select(0, 0), 0)
	if d := cond.Sub(base.Select(0, 1)).Abs().Amax().Item(); d < 1e-4 {
		t.Fatalf("mu = 1 changed the conditional row by only %g", d)
	}
	st.Alpha = 0
	golden.Compare(t, "alpha = 0 gives the base UNet", run(), base, 0)
	st.Alpha = 1

	empty, err := Refine(u, torch.Randn(g, 1, 4, 16, 16), torch.Zeros(1, 1, 128, 128), torch.Randn(g, 1, 77, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Free()
	st.Subjects = []*Reference{empty}
	golden.Compare(t, "an all-zero mask changes nothing", run(), base, 0)
}

// TestStaticStaysInItsBox checks one layer directly: changing a subject's
// features changes the layer's output only at queries inside its box.
func TestStaticStaysInItsBox(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{})
	g := torch.NewGenerator(4)
	mask := subjectMask(0, 0, 128, 128)
	refA, _ := Refine(u, torch.Randn(g, 1, 4, 16, 16), mask, torch.Randn(g, 1, 77, 32))
	refB, _ := Refine(u, torch.Randn(g, 1, 4, 16, 16), mask, torch.Randn(g, 1, 77, 32))
	defer refA.Free()
	defer refB.Free()
	box := [4]float64{0.25, 0.5, 0.75, 1}
	st := &StaticState{Alpha: 0.7, Boxes: [][4]float64{box}, Restrict: true, Rows: torch.Ones(1), LatentH: 16, LatentW: 16}
	layers := newStatic(t, u, st)
	layer, attn := layers[0], u.TransformerBlocks()[0].Attn1
	layer.Mu.Fill(1)
	x := torch.Randn(g, 1, 256, 32)
	var outA, outB *torch.Tensor
	torch.NoGrad(func() {
		st.Subjects = []*Reference{refA}
		outA = layer.Process(attn, x, nil)
		st.Subjects = []*Reference{refB}
		outB = layer.Process(attn, x, nil)
	})
	inside := region.BoxMask(box, 16, 16).Reshape(1, 256, 1)
	diff := outA.Sub(outB).Abs()
	if out := diff.Mul(inside.Rsub(1)).Amax().Item(); out != 0 {
		t.Fatalf("a subject changed queries outside its box by %g", out)
	}
	if in := diff.Mul(inside).Amax().Item(); in < 1e-6 {
		t.Fatalf("a subject changed queries inside its box by only %g", in)
	}
}

// TestStaticGradients checks d(output)/d(mu) and d(output)/d(to_k) of one
// layer against central finite differences, in f64.
func TestStaticGradients(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{DType: torch.Float64})
	g := torch.NewGenerator(6)
	opts := torch.Options{DType: torch.Float64}
	ref, err := Refine(u, opts.Randn(g, 1, 4, 16, 16), subjectMask(10, 10, 100, 100), opts.Randn(g, 1, 77, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Free()
	st := &StaticState{Alpha: 0.5, Subjects: []*Reference{ref}, Boxes: [][4]float64{{0, 0, 1, 1}},
		Restrict: true, Rows: torch.Ones(2), LatentH: 16, LatentW: 16}
	layers := newStatic(t, u, st)
	layer, attn := layers[3], u.TransformerBlocks()[3].Attn1
	n := int64(64) // layer 3 works on the 8x8 grid
	x := opts.Randn(g, 2, n, 32)
	w := opts.Randn(g, 2, n, 32)
	loss := func() float64 {
		var v float64
		torch.NoGrad(func() {
			v = torch.Scoped(func() *torch.Tensor { return layer.Process(attn, x, nil).Mul(w).Sum() }).Item()
		})
		return v
	}
	layer.Mu.Fill(0.3)
	layer.Mu.SetRequiresGrad(true)
	layer.ToK.Weight.SetRequiresGrad(true)
	defer layer.Mu.SetRequiresGrad(false)
	defer layer.ToK.Weight.SetRequiresGrad(false)
	l := layer.Process(attn, x, nil).Mul(w).Sum()
	grads := torch.Grad([]*torch.Tensor{l}, []*torch.Tensor{layer.Mu, layer.ToK.Weight}, torch.GradOptions{})

	const h = 1e-6
	numeric := func(p *torch.Tensor, i int64) float64 {
		flat := p.Detach().Reshape(-1)
		orig := flat.Select(0, i).Item()
		flat.Select(0, i).Fill(orig + h)
		up := loss()
		flat.Select(0, i).Fill(orig - h)
		down := loss()
		flat.Select(0, i).Fill(orig)
		return (up - down) / (2 * h)
	}
	if got, want := grads[0].Item(), numeric(layer.Mu, 0); abs(got-want) > 1e-6*(1+abs(want)) {
		t.Fatalf("d/d mu: autograd %g, finite differences %g", got, want)
	}
	gk := grads[1].Reshape(-1).Float64s()
	for _, i := range []int64{0, 17, 500, 1023} {
		if got, want := gk[i], numeric(layer.ToK.Weight, i); abs(got-want) > 1e-6*(1+abs(want)) {
			t.Fatalf("d/d to_k[%d]: autograd %g, finite differences %g", i, got, want)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestStaticProjectionIsMaskedMean(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	ref := &Reference{
		Features: []*torch.Tensor{torch.New([]float32{1, 2, 3, 4, 5, 6}, 1, 3, 2), torch.New([]float32{10, 20}, 1, 2, 1)},
		KeyMask:  []*torch.Tensor{torch.New([]bool{true, false, true}), torch.New([]bool{false, true})},
	}
	l := nn.NewLoader("p", nn.Empty{}, torch.Options{})
	l.Init = func(key string, shape []int64) *torch.Tensor {
		if len(shape) == 2 {
			return torch.New([]float32{1, 1, 0, 0, 0, 1}, 2, 3) // sums the first two, keeps the third
		}
		return torch.Zeros(shape...)
	}
	p := NewStaticProjection(l.Root(), 3, 2)
	// layer 0 masked mean: ([1 2] + [5 6]) / 2 = [3 4]; layer 1: [20]
	golden.Compare(t, "projection", p.Forward(ref), torch.New([]float32{7, 20}, 1, 2), 0)
}

// One refiner pass over several subjects gives each the reference it gets
// alone: the same key masks, and features within the summation order of a
// larger batch (an empty mask among them too).
func TestRefineBatchEqualsOneAtATime(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{})
	g := torch.NewGenerator(5)
	latents, embeds := torch.Randn(g, 3, 4, 16, 16), torch.Randn(g, 3, 77, 32)
	masks := torch.Cat([]*torch.Tensor{subjectMask(20, 30, 90, 110), torch.Zeros(1, 1, 128, 128), subjectMask(0, 64, 128, 128)}, 0)
	batch, err := RefineBatch(u, latents, masks, embeds)
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range batch {
		defer got.Free()
		row := func(x *torch.Tensor) *torch.Tensor { return x.Narrow(0, int64(i), 1) }
		want, err := Refine(u, row(latents), row(masks), row(embeds))
		if err != nil {
			t.Fatal(err)
		}
		defer want.Free()
		if got.Empty != want.Empty || got.Empty != (i == 1) {
			t.Fatalf("subject %d: empty %v, alone %v", i, got.Empty, want.Empty)
		}
		for l := range want.Features {
			golden.Compare(t, fmt.Sprintf("subject %d layer %d key mask", i, l), got.KeyMask[l], want.KeyMask[l], 0)
			// A batch of 3 against 1: measured 6.3e-6 (1.5e-6 of the
			// largest feature) by the last layer.
			golden.Compare(t, fmt.Sprintf("subject %d layer %d features", i, l), got.Features[l], want.Features[l], 3e-5)
		}
	}
}
