package unet

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Transformer2D is diffusers' Transformer2DModel over an image feature map:
// GroupNorm, proj_in, transformer blocks on the H*W tokens, proj_out, and a
// residual add.
type Transformer2D struct {
	Norm            *nn.GroupNorm
	ProjIn, ProjOut *nn.Linear // SD 2.x: Linear over the tokens
	ConvIn, ConvOut *nn.Conv2d // SD 1.x: 1x1 convolutions over the map
	Blocks          []*BasicTransformerBlock
}

// TransformerConfig sizes a Transformer2D.
type TransformerConfig struct {
	Channels, Heads, ContextDim, Groups int64
	Layers                              int
	LinearProjection                    bool
}

func NewTransformer2D(p nn.Path, c TransformerConfig) *Transformer2D {
	headDim := c.Channels / c.Heads
	t := &Transformer2D{
		Norm: nn.NewGroupNorm(p.Sub("norm"), c.Groups, c.Channels, 1e-6),
	}
	if c.LinearProjection { // SD 2.x stores proj_in/out as Linear
		t.ProjIn = nn.NewLinear(p.Sub("proj_in"), c.Channels, c.Channels, true)
		t.ProjOut = nn.NewLinear(p.Sub("proj_out"), c.Channels, c.Channels, true)
	} else {
		// A 1x1 conv is a linear map too, but the convolution kernel rounds
		// differently from a matrix product: diffusers convolves.
		t.ConvIn = nn.NewConv2d(p.Sub("proj_in"), c.Channels, c.Channels, 1, torch.ConvOptions{})
		t.ConvOut = nn.NewConv2d(p.Sub("proj_out"), c.Channels, c.Channels, 1, torch.ConvOptions{})
	}
	for i := range c.Layers {
		t.Blocks = append(t.Blocks, NewBasicTransformerBlock(p.Sub("transformer_blocks", i), c.Channels, c.Heads, headDim, c.ContextDim))
	}
	return t
}

// Forward maps x [B, C, H, W] and context [B, M, Cctx] to [B, C, H, W].
func (t *Transformer2D) Forward(x, context *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		s := x.Shape()
		b, c, h, w := s[0], s[1], s[2], s[3]
		hidden := t.Norm.Forward(x)
		if t.ConvIn != nil {
			hidden = t.ConvIn.Forward(hidden)
		}
		tokens := hidden.Permute(0, 2, 3, 1).Reshape(b, h*w, c) // [B, HW, C]
		if t.ProjIn != nil {
			tokens = t.ProjIn.Forward(tokens)
		}
		for _, blk := range t.Blocks {
			tokens = blk.Forward(tokens, context)
		}
		if t.ProjOut != nil {
			tokens = t.ProjOut.Forward(tokens)
		}
		out := tokens.Reshape(b, h, w, c).Permute(0, 3, 1, 2) // [B, C, H, W]
		if t.ConvOut != nil {
			out = t.ConvOut.Forward(out.Contiguous())
		}
		return out.Add(x)
	})
}

// BasicTransformerBlock is self-attention (attn1), cross-attention to the
// text (attn2) and a GEGLU feed-forward, each pre-LayerNorm with a residual.
// A Fuser, when attached, runs between attn1 and attn2 (GLIGEN's gated
// self-attention over the image and grounding tokens).
type BasicTransformerBlock struct {
	Name                string // module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0"
	Norm1, Norm2, Norm3 *nn.LayerNorm
	Attn1, Attn2        *Attention
	FF                  *FeedForward
	Fuser               Fuser
}

// Fuser adds to the image tokens x [B, N, C] after self-attention; it
// returns the new tokens (input plus its gated contribution).
type Fuser interface {
	Forward(x *torch.Tensor) *torch.Tensor
}

func NewBasicTransformerBlock(p nn.Path, dim, heads, headDim, contextDim int64) *BasicTransformerBlock {
	return &BasicTransformerBlock{
		Name:  p.Name(),
		Norm1: nn.NewLayerNorm(p.Sub("norm1"), dim, 1e-5),
		Attn1: NewAttention(p.Sub("attn1"), AttentionConfig{QueryDim: dim, Heads: heads, HeadDim: headDim}),
		Norm2: nn.NewLayerNorm(p.Sub("norm2"), dim, 1e-5),
		Attn2: NewAttention(p.Sub("attn2"), AttentionConfig{QueryDim: dim, ContextDim: contextDim, Heads: heads, HeadDim: headDim}),
		Norm3: nn.NewLayerNorm(p.Sub("norm3"), dim, 1e-5),
		FF:    NewFeedForward(p.Sub("ff"), dim, 4*dim),
	}
}

// Forward maps tokens x [B, N, C] with context [B, M, Cctx] to [B, N, C].
func (b *BasicTransformerBlock) Forward(x, context *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		x = b.Attn1.Forward(b.Norm1.Forward(x), nil).Add(x)
		if b.Fuser != nil {
			x = b.Fuser.Forward(x)
		}
		x = b.Attn2.Forward(b.Norm2.Forward(x), context).Add(x)
		return b.FF.Forward(b.Norm3.Forward(x)).Add(x)
	})
}

// FeedForward is GEGLU (net.0.proj to 2x the inner width, a * gelu(b)) then
// Linear back (net.2).
type FeedForward struct {
	Proj, Out *nn.Linear
}

func NewFeedForward(p nn.Path, dim, inner int64) *FeedForward {
	return &FeedForward{
		Proj: nn.NewLinear(p.Sub("net", 0, "proj"), dim, 2*inner, true),
		Out:  nn.NewLinear(p.Sub("net", 2), inner, dim, true),
	}
}

func (f *FeedForward) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := f.Proj.Forward(x).Chunk(2, -1)
		return f.Out.Forward(h[0].Mul(h[1].GELU()))
	})
}
