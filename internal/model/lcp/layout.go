package lcp

import (
	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Layout is the layout-aware module (Eq. 4): each subject becomes two
// grounding tokens, one from its entity phrase's pooled text embedding and
// one from its static features c_s, each concatenated with the Fourier
// features of its box and passed through an MLP; empty slots hold learned
// null features. It is diffusers' text-image GLIGEN position net, with the
// text branch keyed as GLIGEN's text-only net, so that public GLIGEN
// text-box weights load into it.
type Layout struct {
	Net   *gligen.PositionNet // box embedding, null position, text branch
	Image *gligen.Branch      // linears_image, null_image_feature
	// ImageTrained is false for a module assembled from public parts: its
	// image branch was never trained, and its tokens are left out so that
	// the grounding is exactly GLIGEN's.
	ImageTrained bool
}

// NewLayout loads the module at p ("position_net") for phrase embeddings
// of width textDim and static features of width staticDim, giving tokens
// of width outDim.
func NewLayout(p nn.Path, textDim, staticDim, outDim int64) *Layout {
	net := gligen.NewPositionNet(p, textDim, outDim)
	return &Layout{
		Net:   net,
		Image: gligen.NewBranch(p, "linears_image", "null_image_feature", staticDim, net.NullPosition.Size(0), outDim),
	}
}

// Forward maps boxes [B, N, 4], masks [B, N] (1 = a subject, 0 = an empty
// slot), phrase embeddings [B, N, textDim] and static features [B, N,
// staticDim] to grounding tokens [B, 2N, outDim] (text tokens first), or
// [B, N, outDim] while the image branch is untrained.
func (l *Layout) Forward(boxes, masks, phrases, statics *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		positions := l.Net.Positions(boxes, masks)
		text := l.Net.Text.Forward(phrases, positions, masks)
		if !l.ImageTrained {
			return text
		}
		image := l.Image.Forward(statics, positions, masks)
		return torch.Cat([]*torch.Tensor{text, image}, 1)
	})
}
