package unet

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// ResnetBlock2D is diffusers' ResnetBlock2D (time_embedding_norm "default"):
// two GroupNorm-SiLU-conv stages, the time embedding added between them, and
// a 1x1 conv shortcut when the channel count changes. The VAE uses it
// without a time embedding.
type ResnetBlock2D struct {
	Norm1, Norm2 *nn.GroupNorm
	Conv1, Conv2 *nn.Conv2d
	TimeEmbProj  *nn.Linear // nil without a time embedding
	ConvShortcut *nn.Conv2d // nil when in == out
	OutputScale  float64
}

// ResnetConfig sizes a ResnetBlock2D.
type ResnetConfig struct {
	In, Out     int64
	TimeEmb     int64 // 0: no time embedding
	Groups      int64
	Eps         float64
	OutputScale float64 // output_scale_factor; 0 means 1
}

func NewResnetBlock2D(p nn.Path, c ResnetConfig) *ResnetBlock2D {
	r := &ResnetBlock2D{
		Norm1:       nn.NewGroupNorm(p.Sub("norm1"), c.Groups, c.In, c.Eps),
		Conv1:       nn.NewConv2d(p.Sub("conv1"), c.In, c.Out, 3, nn.Padding(1)),
		Norm2:       nn.NewGroupNorm(p.Sub("norm2"), c.Groups, c.Out, c.Eps),
		Conv2:       nn.NewConv2d(p.Sub("conv2"), c.Out, c.Out, 3, nn.Padding(1)),
		OutputScale: c.OutputScale,
	}
	if r.OutputScale == 0 {
		r.OutputScale = 1
	}
	if c.TimeEmb > 0 {
		r.TimeEmbProj = nn.NewLinear(p.Sub("time_emb_proj"), c.TimeEmb, c.Out, true)
	}
	if c.In != c.Out {
		r.ConvShortcut = nn.NewConv2d(p.Sub("conv_shortcut"), c.In, c.Out, 1, torch.ConvOptions{})
	}
	return r
}

// Forward maps x [B, In, H, W] (and temb [B, TimeEmb], or nil) to [B, Out, H, W].
// Each activation is freed as soon as the next exists: at 512x512 one is
// 100-300 MB, and a VAE decode would otherwise hold eight at a time.
func (r *ResnetBlock2D) Forward(x, temb *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := r.Norm1.Forward(x)
		h = torch.Replace(h, h.SiLU())
		h = torch.Replace(h, r.Conv1.Forward(h))
		if r.TimeEmbProj != nil && temb != nil {
			t := r.TimeEmbProj.Forward(temb.SiLU())                    // [B, Out]
			h = torch.Replace(h, h.Add(t.Unsqueeze(-1).Unsqueeze(-1))) // broadcast over H, W
		}
		h = torch.Replace(h, r.Norm2.Forward(h))
		h = torch.Replace(h, h.SiLU())
		h = torch.Replace(h, r.Conv2.Forward(h))
		shortcut := x
		if r.ConvShortcut != nil {
			shortcut = r.ConvShortcut.Forward(x)
		}
		out := torch.Replace(h, shortcut.Add(h))
		if r.OutputScale != 1 {
			out = torch.Replace(out, out.DivScalar(r.OutputScale))
		}
		return out
	})
}

// Downsample2D halves the resolution with a stride-2 3x3 conv. The VAE
// encoder pads only right and bottom by one and convolves unpadded
// (padding 0); the UNet pads symmetrically (padding 1).
type Downsample2D struct {
	Conv          *nn.Conv2d
	AsymmetricPad bool
}

func NewDownsample2D(p nn.Path, channels, padding int64) *Downsample2D {
	return &Downsample2D{
		Conv:          nn.NewConv2d(p.Sub("conv"), channels, channels, 3, torch.ConvOptions{Stride: torch.Square2(2), Padding: torch.Square2(padding)}),
		AsymmetricPad: padding == 0,
	}
}

func (d *Downsample2D) Forward(x *torch.Tensor) *torch.Tensor {
	if !d.AsymmetricPad {
		return d.Conv.Forward(x)
	}
	return torch.Scoped(func() *torch.Tensor {
		// F.pad(x, (0, 1, 0, 1)): one zero column on the right, one row at the bottom.
		s := x.Shape()
		o := torch.OptionsOf(x)
		x = torch.Cat([]*torch.Tensor{x, o.Zeros(s[0], s[1], s[2], 1)}, 3)
		x = torch.Cat([]*torch.Tensor{x, o.Zeros(s[0], s[1], 1, s[3]+1)}, 2)
		return d.Conv.Forward(x)
	})
}

// Upsample2D doubles the resolution (nearest) and smooths with a 3x3 conv.
type Upsample2D struct {
	Conv *nn.Conv2d
}

func NewUpsample2D(p nn.Path, channels int64) *Upsample2D {
	return &Upsample2D{Conv: nn.NewConv2d(p.Sub("conv"), channels, channels, 3, nn.Padding(1))}
}

// Forward upsamples x by 2, or to size when it is given (an odd-sized
// latent, whose skip connections are not exactly twice as large).
func (u *Upsample2D) Forward(x *torch.Tensor, size [2]int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		dtype := x.DType()
		if dtype == torch.BFloat16 {
			// nearest upsampling has no bf16 kernel in older libtorch; diffusers upcasts too.
			x = x.To(torch.Float32)
		}
		o := torch.InterpolateOptions{Mode: torch.Nearest, Scale: [2]float64{2, 2}}
		if size != [2]int64{} {
			o = torch.InterpolateOptions{Mode: torch.Nearest, Size: size}
		}
		h := torch.Interpolate(x, o)
		if dtype == torch.BFloat16 {
			h = h.To(dtype)
		}
		return u.Conv.Forward(h)
	})
}
