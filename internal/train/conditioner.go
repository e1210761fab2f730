package train

import (
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TextConditioner conditions the UNet on the captions alone, through the
// frozen text encoder, and leaves the adapter unconditioned (inert). It is
// the text half of the LCP conditioner, which adds, per sample and with
// ImageDropout applied per row:
//
//   - static references: lcp.Refine on the VAE latent of each subject's
//     Static view and Mask (frozen UNet, no grad) into a.State, with
//     State.Rows zero for dropped rows;
//   - image tokens: the frozen image encoder on each Dynamic view, then
//     a.IP.ImageTokens with grad (the resampler trains) into
//     a.IP.SetCondition, the zero image's tokens for dropped rows;
//   - grounding tokens: a.Layout.Forward over the boxes, phrase embeddings
//     and a.Projection.Forward of the references, with grad, into
//     a.Grounding.Set, masks zero for dropped rows;
//
// and whose Clear undoes all three as pipeline's resetAdapter does.
type TextConditioner struct {
	Model *pipeline.Model
	// Dropout is the probability that a caption is replaced by "", the
	// unconditional prompt of classifier-free guidance.
	Dropout float64
}

// Condition implements Conditioner: the embeddings [B, 77, D] of the
// captions after dropout.
func (c *TextConditioner) Condition(b *Batch, d Draws) (*torch.Tensor, error) {
	return c.Encode(c.Prompts(b.Captions, d)), nil
}

// Clear implements Conditioner; there is nothing to undo.
func (c *TextConditioner) Clear() {}

// Prompts applies the caption dropout, row i by its own number
// d.TextDropout()[i].
func (c *TextConditioner) Prompts(captions []string, d Draws) []string {
	u := d.TextDropout()
	prompts := make([]string, len(captions))
	for i, caption := range captions {
		if u[i] >= c.Dropout {
			prompts[i] = caption
		}
	}
	return prompts
}

// Encode is the prompts' text embeddings [B, 77, D] (last hidden state, as
// SD 1.5 was trained), outside the autograd graph: the text encoder is
// frozen. Long prompts are truncated silently, as diffusers' training
// scripts do.
func (c *TextConditioner) Encode(prompts []string) *torch.Tensor {
	var embeds *torch.Tensor
	torch.NoGrad(func() { embeds = c.Model.EncodePrompts(prompts, 0, nil) })
	return embeds
}
