package lcp

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// forward runs the tiny UNet on fixed inputs.
func forward(t *testing.T, u interface {
	Forward(sample, timesteps, context *torch.Tensor) *torch.Tensor
}) *torch.Tensor {
	g := torch.NewGenerator(11)
	sample, ctx := torch.Randn(g, 2, 4, 16, 16), torch.Randn(g, 2, 77, 32)
	var out *torch.Tensor
	torch.NoGrad(func() { out = u.Forward(sample, torch.New([]int64{400}).Reshape(), ctx) })
	return out
}

func TestAdapterFromPartsIsInertUntilConditioned(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{})
	base := forward(t, u)

	for _, c := range []struct{ name, ip, gligen string }{
		{"IP-Adapter and GLIGEN", golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"), golden.Path(t, "tiny-gligen", "unet")},
		{"no public parts", "", ""},
	} {
		a, err := FromParts(c.ip, c.gligen, u, torch.Options{})
		if err != nil {
			t.Fatal(err)
		}
		golden.Compare(t, c.name+": attached, unconditioned", forward(t, u), base, 0)
		a.Free()
		golden.Compare(t, c.name+": detached", forward(t, u), base, 0)
	}
}

func TestAdapterSaveLoadRoundTrip(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{})
	a, err := FromParts(golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"), golden.Path(t, "tiny-gligen", "unet"), u, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Make every part act: open the static gates and the fusers.
	for _, l := range a.Static {
		l.Mu.Fill(0.5)
	}
	g := torch.NewGenerator(12)
	ref, err := Refine(u, torch.Randn(g, 1, 4, 16, 16), subjectMask(10, 10, 100, 100), torch.Randn(g, 1, 77, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Free()
	*a.State = StaticState{Alpha: 1, Subjects: []*Reference{ref}, Boxes: [][4]float64{{0, 0, 0.5, 1}}, Restrict: true,
		Rows: torch.Ones(2), LatentH: 16, LatentW: 16}
	objs := torch.Randn(g, 2, 30, 32)
	a.Grounding.Set(objs, 1)
	want := forward(t, u)

	path := filepath.Join(t.TempDir(), "lcp.safetensors")
	if err := a.Save(path); err != nil {
		t.Fatal(err)
	}
	state := *a.State
	a.Free()

	b, err := Load(path, u, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if b.Meta.Source != "public parts" || b.Meta.Format != FormatVersion {
		t.Fatalf("metadata %+v", b.Meta)
	}
	if len(b.Params()) != len(a.Params()) {
		t.Fatalf("%d parameters saved, %d loaded", len(a.Params()), len(b.Params()))
	}
	*b.State = state
	b.Grounding.Set(objs, 1)
	golden.Compare(t, "save then load", forward(t, u), want, 0)

	if _, err := Load(golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"), u, torch.Options{}); err == nil ||
		!strings.Contains(err.Error(), "not an lcpdiff adapter") {
		t.Fatalf("loading a foreign file: %v", err)
	}
}

// A fresh adapter's random parts are the same however many adapters the
// process built before it.
func TestFreshAdaptersAreInitialisedAlike(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	u := tinyUNet(t, torch.Options{})
	r := DefaultResampler(u.Config.CrossAttentionDim)
	r.Dim, r.Depth, r.DimHead, r.Heads, r.NumQueries, r.EmbeddingDim = 32, 1, 8, 4, 4, 32
	a, err := Fresh(u, r, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]*torch.Tensor{}
	for k, p := range a.Params() {
		first[k] = p.Clone()
	}
	a.Free()
	b, err := Fresh(u, r, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	random := 0
	for k, p := range b.Params() {
		golden.Compare(t, k, p, first[k], 0)
		if strings.HasSuffix(k, "image_proj.latents") || strings.HasSuffix(k, "to_q.weight") {
			random++
		}
	}
	if random == 0 {
		t.Fatal("no randomly initialised parameter was compared")
	}
}
