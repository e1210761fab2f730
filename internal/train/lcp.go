package train

import (
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
// autograd, so they train with the attention layers they feed. Each row
// of a micro-batch attends to its own sample's subjects (AdapterCondition's
// RowOf); a row whose subjects are dropped sees, as classifier-free
// guidance's unconditional rows do, the null grounding tokens and no
// static term, and (DroppedImage "zero") the zero image's tokens in its
// subjects' boxes.
type LCPConditioner struct {
	text      *TextConditioner
	model     *pipeline.Model
	adapter   *lcp.Adapter
	enc       pipeline.Encoders
	dropout   float64       // ImageDropout: all of a sample's subjects are dropped
	phrases   float64       // PhraseDropout: a sample's subjects named by category
	zeroImage bool          // DroppedImage "zero"
	zero      *torch.Tensor // the zero image's states [1, S, E], once for the run
}

// NewLCPConditioner conditions m's UNet, with a attached, through the
// image encoders enc, with the dropouts of cfg.
func NewLCPConditioner(m *pipeline.Model, a *lcp.Adapter, enc pipeline.Encoders, cfg Config) *LCPConditioner {
	return &LCPConditioner{
		text: &TextConditioner{Model: m, Dropout: cfg.TextDropout}, model: m, adapter: a, enc: enc,
		dropout: cfg.ImageDropout, phrases: cfg.PhraseDropout, zeroImage: cfg.DroppedImage == "zero",
	}
}

// Condition implements Conditioner.
func (c *LCPConditioner) Condition(b *Batch, d Draws) (*torch.Tensor, error) {
	b = dropPhrases(b, d, c.phrases)
	embeds, err := c.text.Condition(b, d)
	if err != nil {
		return nil, err
	}
	w, h := int(b.Images.Size(3)), int(b.Images.Size(2))
	f := int64(c.model.VAE.Config.Downsampling())
	cond := pipeline.AdapterCondition{
		Batch: len(b.Captions), IPScale: 1, StaticScale: 1, GroundingBeta: 1, RegionRestrict: true,
		LatentH: int64(h) / f, LatentW: int64(w) / f,
	}
	var views []pipeline.SubjectViews
	var subjects []Subject
	var dropped []pipeline.EncodedSubject
	var droppedRows []int
	for row, u := range d.ImageDropout() {
		mine := b.Subjects[row]
		for _, sub := range mine[:min(len(mine), gligen.MaxObjects)] {
			switch {
			case u >= c.dropout:
				v := sub.Views
				views = append(views, pipeline.SubjectViews{Static: v.Static, Mask: v.Mask, Dynamic: []*data.RGB{v.Dynamic}, Category: sub.Category})
				subjects = append(subjects, sub)
				cond.RowOf = append(cond.RowOf, row)
			case c.zeroImage:
				dropped = append(dropped, pipeline.DroppedSubject(c.zeroImageHidden(), sub.Box))
				droppedRows = append(droppedRows, row)
			}
		}
	}
	if len(views)+len(dropped) == 0 {
		return embeds, nil // the adapter stays unconditioned
	}
	if len(views) > 0 {
		cond.Subjects = c.model.EncodeSubjects(c.enc, views, w, h)
	}
	for k, sub := range subjects {
		cond.Subjects[k].Box, cond.Subjects[k].Phrase = sub.Box, sub.Phrase
	}
	cond.Subjects, cond.RowOf = append(cond.Subjects, dropped...), append(cond.RowOf, droppedRows...)
	if cond.Batch == 1 {
		cond.RowOf = nil // one row: the shared path generation takes
	}
	if err := c.model.ConditionAdapter(c.adapter, cond); err != nil {
		embeds.Free()
		return nil, err
	}
	return embeds, nil
}

// zeroImageHidden is the frozen image encoder's states of the zero image,
// computed on first use and kept for the run: they never change.
func (c *LCPConditioner) zeroImageHidden() *torch.Tensor {
	if c.zero == nil {
		torch.NoGrad(func() { c.zero = torch.Persist(pipeline.ZeroImageHidden(c.enc)) })
	}
	return c.zero
}

// Clear implements Conditioner.
func (c *LCPConditioner) Clear() { c.model.ResetAdapter(c.adapter) }
