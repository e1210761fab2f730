package train

import (
	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// GroundingConditioner is TextConditioner plus the grounding half of
// the LCP conditioner: each sample's subject boxes and phrases become
// grounding tokens through the adapter's position net, with grad, so that
// the position net and the gated fusers train. The text conditioner alone
// leaves the adapter inert, and then nothing it has can learn. The static
// references and image tokens (which need the static refiner and the CLIP
// image encoder) are not made yet: static attention and the IP-Adapter
// layers get no gradient.
type GroundingConditioner struct {
	text    *TextConditioner
	model   *pipeline.Model
	adapter *lcp.Adapter
	dropout float64       // ImageDropout: a sample's subjects are all dropped
	objs    *torch.Tensor // the current batch's grounding tokens
}

// NewGroundingConditioner conditions on the text and the subjects' boxes
// and phrases, with the dropouts of cfg.
func NewGroundingConditioner(m *pipeline.Model, a *lcp.Adapter, cfg Config) *GroundingConditioner {
	return &GroundingConditioner{
		text: &TextConditioner{Model: m, Dropout: cfg.TextDropout}, model: m, adapter: a, dropout: cfg.ImageDropout,
	}
}

// Condition implements train.Conditioner.
func (c *GroundingConditioner) Condition(b *Batch, d Draws) (*torch.Tensor, error) {
	embeds, err := c.text.Condition(b, d)
	if err != nil {
		return nil, err
	}
	s := torch.NewScope()
	defer s.Close()
	rows := len(b.Captions)
	u := d.ImageDropout()
	const slots = gligen.MaxObjects
	dim := int(c.model.Text.Config.HiddenSize)
	boxes, mask := make([]float32, rows*slots*4), make([]float32, rows*slots)
	phrases := make([]float32, rows*slots*dim)
	for i, subjects := range b.Subjects {
		if u[i] < c.dropout || len(subjects) == 0 {
			continue // mask 0: the position net's null tokens
		}
		subjects = subjects[:min(len(subjects), slots)]
		names := make([]string, len(subjects))
		for k, sub := range subjects {
			names[k] = sub.Phrase
			for j, v := range sub.Box {
				boxes[(i*slots+k)*4+j] = float32(v)
			}
			mask[i*slots+k] = 1
		}
		copy(phrases[i*slots*dim:], c.phraseEmbeddings(names))
	}
	o := c.model.Options
	n := int64(rows)
	objs := c.adapter.Layout.Forward(
		torch.New(boxes, n, slots, 4).ToOptions(o), torch.New(mask, n, slots).ToOptions(o),
		torch.New(phrases, n, slots, int64(dim)).ToOptions(o),
		o.Zeros(n, slots, c.adapter.Meta.StaticDim)) // no static features: the refiner does not run
	c.objs = torch.Persist(objs)
	c.adapter.Grounding.Set(c.objs, 1)
	return embeds, nil
}

// phraseEmbeddings are the phrases' pooled text embeddings, row after row
// (GLIGEN's phrase input), computed as generation computes them.
func (c *GroundingConditioner) phraseEmbeddings(phrases []string) []float32 {
	var rows []float32
	torch.NoGrad(func() {
		rows = torch.Scoped(func() *torch.Tensor { return c.model.PhraseEmbeddings(phrases) }).Float32s()
	})
	return rows
}

// Clear implements train.Conditioner.
func (c *GroundingConditioner) Clear() {
	c.adapter.Grounding.Clear()
	c.objs.Free()
	c.objs = nil
}
