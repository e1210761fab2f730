package unet

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// DownBlock is CrossAttnDownBlock2D (with Attentions) or DownBlock2D
// (without): resnets, each followed by a transformer, then a downsampler.
type DownBlock struct {
	Resnets    []*ResnetBlock2D
	Attentions []*Transformer2D
	Downsample *Downsample2D // nil in the last block

	checkpointing bool
}

// blockConfig sizes one down, mid or up block.
type blockConfig struct {
	In, Out, PrevOut, TimeEmb int64
	Layers                    int
	Cross                     bool
	Transformer               TransformerConfig
	Groups                    int64
	Eps                       float64
}

func newDownBlock(p nn.Path, c blockConfig, downsample bool, padding int64) *DownBlock {
	d := &DownBlock{}
	for j := range c.Layers {
		in := c.Out
		if j == 0 {
			in = c.In
		}
		d.Resnets = append(d.Resnets, NewResnetBlock2D(p.Sub("resnets", j),
			ResnetConfig{In: in, Out: c.Out, TimeEmb: c.TimeEmb, Groups: c.Groups, Eps: c.Eps}))
		if c.Cross {
			d.Attentions = append(d.Attentions, NewTransformer2D(p.Sub("attentions", j), c.Transformer))
		}
	}
	if downsample {
		d.Downsample = NewDownsample2D(p.Sub("downsamplers", 0), c.Out, padding)
	}
	return d
}

// Forward returns the block's output and the skip connections it hands to
// the up path (the output is the last of them).
func (d *DownBlock) Forward(x, temb, context *torch.Tensor) []*torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	var skips []*torch.Tensor
	for j, r := range d.Resnets {
		x = resnet(d.checkpointing, r, x, temb)
		if d.Attentions != nil {
			x = transformer(d.checkpointing, d.Attentions[j], x, context)
		}
		skips = append(skips, s.Keep(x))
	}
	if d.Downsample != nil {
		x = d.Downsample.Forward(x)
		skips = append(skips, s.Keep(x))
	}
	return skips
}

// MidBlock is UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) pairs.
type MidBlock struct {
	Resnets    []*ResnetBlock2D
	Attentions []*Transformer2D

	checkpointing bool
}

func newMidBlock(p nn.Path, c blockConfig, outputScale float64) *MidBlock {
	m := &MidBlock{}
	rc := ResnetConfig{In: c.In, Out: c.In, TimeEmb: c.TimeEmb, Groups: c.Groups, Eps: c.Eps, OutputScale: outputScale}
	m.Resnets = append(m.Resnets, NewResnetBlock2D(p.Sub("resnets", 0), rc))
	for j := range c.Layers {
		m.Attentions = append(m.Attentions, NewTransformer2D(p.Sub("attentions", j), c.Transformer))
		m.Resnets = append(m.Resnets, NewResnetBlock2D(p.Sub("resnets", j+1), rc))
	}
	return m
}

func (m *MidBlock) Forward(x, temb, context *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		x = resnet(m.checkpointing, m.Resnets[0], x, temb)
		for j, a := range m.Attentions {
			x = resnet(m.checkpointing, m.Resnets[j+1], transformer(m.checkpointing, a, x, context), temb)
		}
		return x
	})
}

// UpBlock is CrossAttnUpBlock2D or UpBlock2D: each resnet takes the
// running features concatenated with one skip connection.
type UpBlock struct {
	Resnets    []*ResnetBlock2D
	Attentions []*Transformer2D
	Upsample   *Upsample2D // nil in the last block

	checkpointing bool
}

func newUpBlock(p nn.Path, c blockConfig, upsample bool) *UpBlock {
	u := &UpBlock{}
	for j := range c.Layers {
		skip := c.Out
		if j == c.Layers-1 {
			skip = c.In
		}
		in := c.Out
		if j == 0 {
			in = c.PrevOut
		}
		u.Resnets = append(u.Resnets, NewResnetBlock2D(p.Sub("resnets", j),
			ResnetConfig{In: in + skip, Out: c.Out, TimeEmb: c.TimeEmb, Groups: c.Groups, Eps: c.Eps}))
		if c.Cross {
			u.Attentions = append(u.Attentions, NewTransformer2D(p.Sub("attentions", j), c.Transformer))
		}
	}
	if upsample {
		u.Upsample = NewUpsample2D(p.Sub("upsamplers", 0), c.Out)
	}
	return u
}

// Forward consumes skips from the last to the first; upsampleSize, when
// set, is the size the upsampler must reach (odd latent sizes).
func (u *UpBlock) Forward(x *torch.Tensor, skips []*torch.Tensor, temb, context *torch.Tensor, upsampleSize [2]int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		for j, r := range u.Resnets {
			skip := skips[len(skips)-1-j]
			x = resnet(u.checkpointing, r, torch.Cat([]*torch.Tensor{x, skip}, 1), temb) // channels: running + skip
			if u.Attentions != nil {
				x = transformer(u.checkpointing, u.Attentions[j], x, context)
			}
		}
		if u.Upsample != nil {
			x = u.Upsample.Forward(x, upsampleSize)
		}
		return x
	})
}

// resnet and transformer run one block, under gradient checkpointing when
// ckpt is set and autograd records: the granularity diffusers checkpoints
// at, each resnet and each transformer on its own.
func resnet(ckpt bool, r *ResnetBlock2D, x, temb *torch.Tensor) *torch.Tensor {
	return checkpointed(ckpt, func(in []*torch.Tensor) *torch.Tensor { return r.Forward(in[0], in[1]) }, x, temb)
}

func transformer(ckpt bool, t *Transformer2D, x, context *torch.Tensor) *torch.Tensor {
	return checkpointed(ckpt, func(in []*torch.Tensor) *torch.Tensor { return t.Forward(in[0], in[1]) }, x, context)
}

func checkpointed(ckpt bool, f func(in []*torch.Tensor) *torch.Tensor, xs ...*torch.Tensor) *torch.Tensor {
	if !ckpt || !torch.GradEnabled() {
		return f(xs)
	}
	return torch.Checkpoint(func(in []*torch.Tensor) []*torch.Tensor { return []*torch.Tensor{f(in)} }, xs...)[0]
}
