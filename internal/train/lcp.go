package train

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// LCPConditioner is the paper's training condition (III-E): the caption,
// and for every subject of the sample its static reference (the refiner on
// the subject in the target frame), its image tokens (the image encoder on
// the subject in another frame, or an augmented copy) and its grounding
// token (box, phrase and static projection through the layout module). It
// conditions the adapter through pipeline.ConditionAdapter, the very code
// generation uses, with every strength at 1 and each subject restricted to
// its box; the resampler, static projection and layout module run with
// autograd, so they train with the attention layers they feed.
//
// The adapter's state holds one set of subjects for every row of a UNet
// call, so a micro-batch is one sample: train with batch_size 1 and reach
// a larger batch with grad_accum.
type LCPConditioner struct {
	text    *TextConditioner
	model   *pipeline.Model
	adapter *lcp.Adapter
	enc     pipeline.Encoders
	dropout float64 // ImageDropout: all of a sample's subjects are dropped
}

// NewLCPConditioner conditions m's UNet, with a attached, through the
// image encoders enc, with the dropouts of cfg.
func NewLCPConditioner(m *pipeline.Model, a *lcp.Adapter, enc pipeline.Encoders, cfg Config) (*LCPConditioner, error) {
	if cfg.BatchSize != 1 {
		return nil, fmt.Errorf("train: the LCP conditioner takes one sample per micro-batch (batch_size 1, grad_accum for more), got batch_size %d", cfg.BatchSize)
	}
	return &LCPConditioner{
		text: &TextConditioner{Model: m, Dropout: cfg.TextDropout}, model: m, adapter: a, enc: enc, dropout: cfg.ImageDropout,
	}, nil
}

// Condition implements Conditioner.
func (c *LCPConditioner) Condition(b *Batch, d Draws) (*torch.Tensor, error) {
	if n := len(b.Captions); n != 1 {
		return nil, fmt.Errorf("the LCP conditioner takes one sample per micro-batch, got %d", n)
	}
	embeds, err := c.text.Condition(b, d)
	if err != nil {
		return nil, err
	}
	u := d.ImageDropout()[0]
	subjects := b.Subjects[0]
	if u < c.dropout || len(subjects) == 0 {
		return embeds, nil // the adapter stays unconditioned: the null image
	}
	subjects = subjects[:min(len(subjects), gligen.MaxObjects)]
	w, h := int(b.Images.Size(3)), int(b.Images.Size(2))
	f := int64(c.model.VAE.Config.Downsampling())
	cond := pipeline.AdapterCondition{
		Batch: 1, IPScale: 1, StaticScale: 1, GroundingBeta: 1, RegionRestrict: true,
		LatentH: int64(h) / f, LatentW: int64(w) / f,
	}
	for _, sub := range subjects {
		v := sub.Views
		e := c.model.EncodeSubject(c.enc, v.Static, v.Mask, []*data.RGB{v.Dynamic}, sub.Category, w, h)
		e.Box, e.Phrase = sub.Box, sub.Phrase
		cond.Subjects = append(cond.Subjects, e)
	}
	if err := c.model.ConditionAdapter(c.adapter, cond); err != nil {
		embeds.Free()
		return nil, err
	}
	return embeds, nil
}

// Clear implements Conditioner.
func (c *LCPConditioner) Clear() { c.model.ResetAdapter(c.adapter) }
