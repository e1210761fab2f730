package train

import (
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// loadTiny loads the tiny SD model with an LCP adapter assembled from the
// tiny public parts; both are freed when the test ends.
func loadTiny(t *testing.T) (*pipeline.Model, *lcp.Adapter) {
	t.Helper()
	m, err := pipeline.LoadModel(golden.Path(t, "tiny-sd"), pipeline.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := lcp.FromParts(golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"), golden.Path(t, "tiny-gligen", "unet"), m.UNet, m.Options)
	if err != nil {
		m.Free()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Free()
		m.Free()
	})
	return m, a
}

// testConditioner is a stand-in for the LCP conditioner: the captions
// through the text conditioner, plus one fixed subject whose image tokens
// come from fixed random image-encoder states through the resampler (with
// grad) and whose grounding token comes from a fixed box and phrase
// through the position net (with grad). It makes the IP-Adapter layers,
// the resampler, the position net and the fusers act, so they train.
type testConditioner struct {
	text    *TextConditioner
	adapter *lcp.Adapter
	hidden  *torch.Tensor // [1, S, E] image-encoder states of the subject
	phrase  *torch.Tensor // [1, 1, D]
	objs    *torch.Tensor // grounding tokens of the current batch
}

func newTestConditioner(t *testing.T, m *pipeline.Model, a *lcp.Adapter, textDropout float64) *testConditioner {
	g := torch.NewGenerator(99)
	defer g.Close()
	c := &testConditioner{
		text:    &TextConditioner{Model: m, Dropout: textDropout},
		adapter: a,
		hidden:  torch.Persist(torch.Randn(g, 1, 5, a.IP.Resampler.Config.EmbeddingDim)),
		phrase:  torch.Persist(torch.Randn(g, 1, 1, m.UNet.Config.CrossAttentionDim)),
	}
	t.Cleanup(c.free)
	return c
}

func (c *testConditioner) Condition(b *Batch, d Draws) (*torch.Tensor, error) {
	embeds, err := c.text.Condition(b, d)
	if err != nil {
		return nil, err
	}
	n := int64(len(b.Captions))
	s := torch.NewScope()
	defer s.Close()
	tokens := c.adapter.IP.ImageTokens(c.hidden).Repeat(n, 1, 1)
	if err := c.adapter.IP.SetCondition(ipadapter.Condition{Subjects: []*torch.Tensor{tokens}}); err != nil {
		return nil, err
	}
	boxes := torch.New([]float32{0.1, 0.2, 0.6, 0.9}, 1, 1, 4).Repeat(n, 1, 1)
	c.objs = torch.Persist(c.adapter.Grounding.PositionNet.Forward(boxes, torch.Ones(n, 1), c.phrase.Repeat(n, 1, 1)))
	c.adapter.Grounding.Set(c.objs, 1)
	return embeds, nil
}

func (c *testConditioner) Clear() {
	c.adapter.IP.ClearCondition()
	c.adapter.Grounding.Clear()
	c.objs.Free()
}

func (c *testConditioner) free() {
	c.hidden.Free()
	c.phrase.Free()
}

// snapshot copies every tensor of named.
func snapshot(named map[string]*torch.Tensor) map[string]*torch.Tensor {
	out := make(map[string]*torch.Tensor, len(named))
	for k, p := range named {
		torch.NoGrad(func() { out[k] = torch.Persist(p.Detach().Clone()) })
	}
	return out
}

// restore copies a snapshot back into the live tensors.
func restore(named, saved map[string]*torch.Tensor) {
	torch.NoGrad(func() {
		for k, p := range named {
			p.CopyFrom(saved[k])
		}
	})
}

// freeAll frees a snapshot.
func freeAll(named map[string]*torch.Tensor) {
	for _, p := range named {
		p.Free()
	}
}

// sameBits reports whether a and b hold the same bytes.
func sameBits(a, b *torch.Tensor) bool {
	x, y := a.Bytes(), b.Bytes()
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// tinyConfig is a short run on the tiny model writing into dir.
func tinyConfig(dir string, steps int, trainable ...string) Config {
	c := Defaults()
	c.Steps, c.BatchSize, c.GradAccum, c.Resolution = steps, 2, 1, 64
	c.LR, c.LogEvery, c.CheckpointEvery = 1e-3, 1, 0
	c.TextDropout, c.ImageDropout = 0.3, 0
	c.Seed = 7
	c.OutDir = dir
	c.Trainable = trainable
	return c
}

func tinyData(distinct int) *Synthetic {
	return &Synthetic{BatchSize: 2, Resolution: 64, Seed: 3, Distinct: distinct,
		Captions: []string{"a dog on the grass", "a red car", "two cats", "a photo of a bird"}}
}
