package vae

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Encoder is diffusers' VAE Encoder: conv_in, one DownEncoderBlock per
// entry of block_out_channels, the mid block, then GroupNorm, SiLU and
// conv_out to the mean and log-variance of the posterior (double_z).
type Encoder struct {
	ConvIn      *nn.Conv2d
	DownBlocks  []*DownEncoderBlock
	MidBlock    *MidBlock
	ConvNormOut *nn.GroupNorm
	ConvOut     *nn.Conv2d

	// Tap sees conv_in, down_blocks.{i}, mid_block and conv_out.
	Tap Tap
}

// NewEncoder loads the encoder under p (the checkpoint's "encoder").
func NewEncoder(p nn.Path, c Config) *Encoder {
	ch := c.BlockOutChannels
	e := &Encoder{ConvIn: nn.NewConv2d(p.Sub("conv_in"), c.InChannels, ch[0], 3, nn.Padding(1))}
	in := ch[0]
	for i, out := range ch {
		last := i == len(ch)-1
		e.DownBlocks = append(e.DownBlocks,
			newDownEncoderBlock(p.Sub("down_blocks", i), in, out, c.LayersPerBlock, c.NormNumGroups, !last))
		in = out
	}
	inner := ch[len(ch)-1]
	e.MidBlock = newMidBlock(p.Sub("mid_block"), inner, c.NormNumGroups)
	e.ConvNormOut = nn.NewGroupNorm(p.Sub("conv_norm_out"), c.NormNumGroups, inner, eps)
	e.ConvOut = nn.NewConv2d(p.Sub("conv_out"), inner, 2*c.LatentChannels, 3, nn.Padding(1))
	return e
}

// Forward maps an image x [B, in, H, W] to the posterior's moments
// [B, 2*latent, H/f, W/f], f = 2^(blocks-1), mean channels first.
func (e *Encoder) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := e.ConvIn.Forward(x) // [B, C0, H, W]
		e.Tap.see("conv_in", h)
		for i, b := range e.DownBlocks {
			h = torch.Replace(h, b.Forward(h))
			e.Tap.see(fmt.Sprintf("down_blocks.%d", i), h)
		}
		h = torch.Replace(h, e.MidBlock.Forward(h)) // [B, Cn, H/f, W/f]
		e.Tap.see("mid_block", h)
		h = torch.Replace(h, e.ConvNormOut.Forward(h))
		h = torch.Replace(h, h.SiLU())
		h = torch.Replace(h, e.ConvOut.Forward(h)) // [B, 2*latent, H/f, W/f]
		e.Tap.see("conv_out", h)
		return h
	})
}
