package vae

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// eps is the GroupNorm epsilon of every norm in the VAE: diffusers builds
// the encoder and decoder with resnet_eps 1e-6 and their conv_norm_out with
// eps 1e-6 (the UNet's resnets use 1e-5).
const eps = 1e-6

// Tap, when set, is shown intermediate activations by name, for tests and
// debugging. The tensor is only valid during the call: clone it to keep it.
type Tap func(name string, x *torch.Tensor)

func (t Tap) see(name string, x *torch.Tensor) {
	if t != nil {
		t(name, x)
	}
}

// newResnet is the VAE's ResnetBlock2D: no time embedding, eps 1e-6.
func newResnet(p nn.Path, in, out, groups int64) *unet.ResnetBlock2D {
	return unet.NewResnetBlock2D(p, unet.ResnetConfig{In: in, Out: out, Groups: groups, Eps: eps})
}

// DownEncoderBlock is diffusers' DownEncoderBlock2D: resnets at one
// resolution, then a downsampler that halves it (every block but the last).
type DownEncoderBlock struct {
	Resnets     []*unet.ResnetBlock2D
	Downsampler *unet.Downsample2D // nil in the last block
}

func newDownEncoderBlock(p nn.Path, in, out, layers, groups int64, downsample bool) *DownEncoderBlock {
	b := &DownEncoderBlock{}
	for j := range layers {
		b.Resnets = append(b.Resnets, newResnet(p.Sub("resnets", j), in, out, groups))
		in = out
	}
	if downsample {
		// padding 0: the VAE pads right and bottom only (F.pad(x, (0, 1, 0, 1))).
		b.Downsampler = unet.NewDownsample2D(p.Sub("downsamplers", 0), out, 0)
	}
	return b
}

// Forward maps x [B, in, H, W] to [B, out, H/2, W/2] (H, W in the last block).
func (b *DownEncoderBlock) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := b.Resnets[0].Forward(x, nil)
		for _, r := range b.Resnets[1:] {
			h = torch.Replace(h, r.Forward(h, nil))
		}
		if b.Downsampler != nil {
			h = torch.Replace(h, b.Downsampler.Forward(h))
		}
		return h
	})
}

// UpDecoderBlock is diffusers' UpDecoderBlock2D: resnets at one resolution,
// then an upsampler that doubles it (every block but the last).
type UpDecoderBlock struct {
	Resnets   []*unet.ResnetBlock2D
	Upsampler *unet.Upsample2D // nil in the last block
}

func newUpDecoderBlock(p nn.Path, in, out, layers, groups int64, upsample bool) *UpDecoderBlock {
	b := &UpDecoderBlock{}
	for j := range layers {
		b.Resnets = append(b.Resnets, newResnet(p.Sub("resnets", j), in, out, groups))
		in = out
	}
	if upsample {
		b.Upsampler = unet.NewUpsample2D(p.Sub("upsamplers", 0), out)
	}
	return b
}

// Forward maps x [B, in, H, W] to [B, out, 2H, 2W] (H, W in the last block).
func (b *UpDecoderBlock) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := b.Resnets[0].Forward(x, nil)
		for _, r := range b.Resnets[1:] {
			h = torch.Replace(h, r.Forward(h, nil))
		}
		if b.Upsampler != nil {
			h = torch.Replace(h, b.Upsampler.Forward(h, [2]int64{}))
		}
		return h
	})
}

// MidBlock is diffusers' UNetMidBlock2D as the VAE builds it: resnet,
// self-attention over pixels, resnet, all at the innermost resolution.
type MidBlock struct {
	Resnets   [2]*unet.ResnetBlock2D
	Attention *SpatialAttention
}

func newMidBlock(p nn.Path, channels, groups int64) *MidBlock {
	return &MidBlock{
		Resnets: [2]*unet.ResnetBlock2D{
			newResnet(p.Sub("resnets", 0), channels, channels, groups),
			newResnet(p.Sub("resnets", 1), channels, channels, groups),
		},
		Attention: newSpatialAttention(p.Sub("attentions", 0), channels, groups),
	}
}

// Forward keeps the shape [B, C, H, W].
func (m *MidBlock) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := m.Resnets[0].Forward(x, nil)
		h = torch.Replace(h, m.Attention.Forward(h))
		return torch.Replace(h, m.Resnets[1].Forward(h, nil))
	})
}

// SpatialAttention is the mid block's attention: GroupNorm, then one head
// as wide as the channels attending over the H*W pixels as tokens, and the
// input added back (residual_connection, rescale_output_factor 1).
type SpatialAttention struct {
	GroupNorm *nn.GroupNorm
	Attention *unet.Attention
}

func newSpatialAttention(p nn.Path, channels, groups int64) *SpatialAttention {
	return &SpatialAttention{
		GroupNorm: nn.NewGroupNorm(p.Sub("group_norm"), groups, channels, eps),
		Attention: unet.NewAttention(p, unet.AttentionConfig{
			QueryDim: channels,
			Heads:    1,
			HeadDim:  channels,
			QKVBias:  true,
		}),
	}
}

// Forward keeps the shape [B, C, H, W].
func (a *SpatialAttention) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		s := x.Shape()
		b, c, h, w := s[0], s[1], s[2], s[3]
		// GroupNorm normalises per channel group whatever the layout, so it
		// runs on the image before the pixels become tokens.
		tokens := a.GroupNorm.Forward(x).View(b, c, h*w).Transpose(1, 2) // [B, HW, C]
		out := a.Attention.Forward(tokens, nil)                          // [B, HW, C]
		return x.Add(out.Transpose(1, 2).Reshape(b, c, h, w))
	})
}
