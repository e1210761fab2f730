package vae

import (
	"fmt"
	"slices"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Decoder is diffusers' VAE Decoder: conv_in from the latent, the mid
// block, one UpDecoderBlock per entry of block_out_channels taken in
// reverse (widest first), then GroupNorm, SiLU and conv_out to the image.
type Decoder struct {
	ConvIn      *nn.Conv2d
	MidBlock    *MidBlock
	UpBlocks    []*UpDecoderBlock
	ConvNormOut *nn.GroupNorm
	ConvOut     *nn.Conv2d

	// Tap sees conv_in, mid_block and up_blocks.{i}.
	Tap Tap
}

// NewDecoder loads the decoder under p (the checkpoint's "decoder").
func NewDecoder(p nn.Path, c Config) *Decoder {
	ch := slices.Clone(c.BlockOutChannels)
	slices.Reverse(ch)
	d := &Decoder{
		ConvIn:   nn.NewConv2d(p.Sub("conv_in"), c.LatentChannels, ch[0], 3, nn.Padding(1)),
		MidBlock: newMidBlock(p.Sub("mid_block"), ch[0], c.NormNumGroups),
	}
	in := ch[0]
	for i, out := range ch {
		last := i == len(ch)-1
		// One resnet more than the encoder's blocks: diffusers' decoder
		// mirrors the encoder's resnets plus its downsampler.
		d.UpBlocks = append(d.UpBlocks,
			newUpDecoderBlock(p.Sub("up_blocks", i), in, out, c.LayersPerBlock+1, c.NormNumGroups, !last))
		in = out
	}
	outer := ch[len(ch)-1]
	d.ConvNormOut = nn.NewGroupNorm(p.Sub("conv_norm_out"), c.NormNumGroups, outer, eps)
	d.ConvOut = nn.NewConv2d(p.Sub("conv_out"), outer, c.OutChannels, 3, nn.Padding(1))
	return d
}

// Forward maps a latent z [B, latent, h, w] to an image [B, out, h*f, w*f],
// f = 2^(blocks-1).
func (d *Decoder) Forward(z *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := d.ConvIn.Forward(z) // [B, Cn, h, w]
		d.Tap.see("conv_in", h)
		h = torch.Replace(h, d.MidBlock.Forward(h))
		d.Tap.see("mid_block", h)
		for i, b := range d.UpBlocks {
			h = torch.Replace(h, b.Forward(h))
			d.Tap.see(fmt.Sprintf("up_blocks.%d", i), h)
		}
		h = torch.Replace(h, d.ConvNormOut.Forward(h)) // [B, C0, h*f, w*f]
		h = torch.Replace(h, h.SiLU())
		return torch.Replace(h, d.ConvOut.Forward(h)) // [B, out, h*f, w*f]
	})
}
