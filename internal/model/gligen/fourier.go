// Package gligen is GLIGEN's text-box grounding as diffusers (v0.27.2)
// implements it: the Fourier embedding of boxes, the position net that
// turns each (phrase, box) into a grounding token, and the gated
// self-attention ("fuser") that every transformer block of the UNet runs
// over its image tokens and the grounding tokens between self- and
// cross-attention.
//
// LCP-Diffusion's layout-aware module and grounding attention are built
// from the same pieces: a Branch per kind of object feature (phrase, image)
// and GatedSelfAttentionDense.
package gligen

import "github.com/lcpdiff/lcpdiff/internal/torch"

// FourierFreqs is the number of frequencies per box coordinate in GLIGEN's
// position net.
const FourierFreqs int64 = 8

// FourierEmbedding is diffusers' get_fourier_embeds_from_boundingbox: boxes
// [B, N, 4] (x0, y0, x1, y1) -> [B, N, 4*2*freqs], laid out as
//
//	emb[b, n, f*8 + s*4 + c] = (sin if s == 0 else cos)(100^(f/freqs) * boxes[b, n, c])
//
// (frequency-major, then sin/cos, then coordinate).
func FourierEmbedding(boxes *torch.Tensor, freqs int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		b, n := boxes.Size(0), boxes.Size(1)
		// diffusers raises 100 to the f/freqs in float32 and only then casts
		// to the boxes' dtype; the rounding of those powers shows at 1e-6.
		freq := torch.Options{Device: boxes.Device()}.Arange(0, float64(freqs), 1).
			DivScalar(float64(freqs)).Rpow(100).To(boxes.DType()) // [F]
		angles := boxes.Unsqueeze(-1).Mul(freq)                             // [B, N, 4, F]
		emb := torch.Stack([]*torch.Tensor{angles.Sin(), angles.Cos()}, -1) // [B, N, 4, F, 2]
		return emb.Permute(0, 1, 3, 4, 2).Reshape(b, n, freqs*2*4)          // [B, N, F, 2, 4] flattened
	})
}
