package pipeline

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// RoundTrip is img through the VAE and back (vae's Reconstruct),
// [1, 3, H, W] in [0, 1] on the CPU. Every generated image passes through
// the decoder, so a benchmark's own targets round-tripped are the best any
// generator with this VAE can score.
func (m *Model) RoundTrip(img *data.RGB) (out *torch.Tensor, err error) {
	if f := m.VAE.Config.Downsampling(); img.W%f != 0 || img.H%f != 0 {
		return nil, fmt.Errorf("round trip: a %dx%d image does not divide into the VAE's latents of %d pixels", img.W, img.H, f)
	}
	err = torch.Try(func() {
		torch.NoGrad(func() {
			out = torch.Scoped(func() *torch.Tensor {
				return m.VAE.Reconstruct(toTensor(img).ToOptions(m.Options)).ToOptions(torch.Options{})
			})
		})
	})
	return out, err
}
