// Package region maps normalised boxes and pixel masks onto the token grids
// of the UNet's attention layers, the one definition that static and
// dynamic attention and box guidance share.
package region

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Grid is the H x W of one attention layer's tokens: the UNet's stride-2
// convolutions take a side s to ceil(s/2) per level, so the layer's grid is
// the latent's halved until it holds that many tokens.
func Grid(latentH, latentW, tokens int64) (h, w int64, err error) {
	h, w = latentH, latentW
	for h*w > tokens && (h > 1 || w > 1) {
		h, w = (h+1)/2, (w+1)/2
	}
	if h*w != tokens {
		return 0, 0, fmt.Errorf("%d tokens are no level of a %dx%d latent", tokens, latentH, latentW)
	}
	return h, w, nil
}

// ResizeMask brings a mask [1, 1, H, W] (values in [0, 1]) to a layer's
// h x w grid and flattens it to [h*w] in diffusers' row-major token order:
// nearest sampling, then > 0.5. A subject smaller than one cell keeps the
// cell under its centre of mass, so no subject vanishes at coarse levels.
func ResizeMask(mask *torch.Tensor, h, w int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		m := torch.Interpolate(mask.To(torch.Float32), torch.InterpolateOptions{Mode: torch.Bilinear, Size: [2]int64{h, w}, Antialias: true})
		keep := m.GtScalar(0.5).Reshape(h * w)
		if keep.Sum().Item() > 0 || mask.Sum().Item() == 0 {
			return keep
		}
		// the cell that holds most of the subject
		brightest := m.Reshape(h * w).Argmax().Item()
		return torch.Options{Device: mask.Device()}.Arange(0, float64(h*w), 1).EqScalar(brightest)
	})
}
