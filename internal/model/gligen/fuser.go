package gligen

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Condition is what the fusers of one UNet read at its next forward pass.
// The UNet's Forward carries only the text context, so the grounding
// tokens travel beside it, set once per generation and per step.
type Condition struct {
	// Objs are the grounding tokens [B, N, contextDim], B the batch of
	// the UNet's input (both classifier-free guidance halves). nil turns
	// the fusers off.
	Objs *torch.Tensor
	// Beta scales both gates: GLIGEN's scheduled sampling sets it to 1 for
	// the first steps and 0 after (diffusers' fuser.enabled). 0 turns the
	// fusers off.
	Beta float64
}

// GatedSelfAttentionDense is diffusers' GatedSelfAttentionDense, the GLIGEN
// "fuser" of a transformer block: for image tokens x [B, N, C] and
// grounding tokens objs [B, M, Cctx],
//
//	x = x + beta * tanh(alpha_attn) * Attn(LN1(cat(x, Linear(objs))))[:, :N]
//	x = x + beta * tanh(alpha_dense) * FF(LN2(x))
//
// Attention runs over image and grounding tokens together, but only the
// image tokens' outputs are kept. diffusers has beta in {0, 1} (its
// enabled flag); the original GLIGEN multiplies by it, as here.
type GatedSelfAttentionDense struct {
	Name                  string     // module path, e.g. "mid_block.attentions.0.transformer_blocks.0.fuser"
	Linear                *nn.Linear // grounding tokens to the block's width
	Attn                  *unet.Attention
	FF                    *unet.FeedForward // GEGLU, inner width 4C
	Norm1, Norm2          *nn.LayerNorm
	AlphaAttn, AlphaDense *torch.Tensor // 0-dim gates, passed through tanh
	// Cond, when set, is what Forward fuses (shared by every fuser of a UNet).
	Cond *Condition
}

// FuserConfig sizes a fuser: the block's width and attention heads, and
// the grounding tokens' width.
type FuserConfig struct {
	QueryDim, ContextDim, Heads, HeadDim int64
}

// NewGatedSelfAttentionDense loads a fuser at p.
func NewGatedSelfAttentionDense(p nn.Path, c FuserConfig) *GatedSelfAttentionDense {
	return &GatedSelfAttentionDense{
		Name:       p.Name(),
		Linear:     nn.NewLinear(p.Sub("linear"), c.ContextDim, c.QueryDim, true),
		Attn:       unet.NewAttention(p.Sub("attn"), unet.AttentionConfig{QueryDim: c.QueryDim, Heads: c.Heads, HeadDim: c.HeadDim}),
		FF:         unet.NewFeedForward(p.Sub("ff"), c.QueryDim, 4*c.QueryDim),
		Norm1:      nn.NewLayerNorm(p.Sub("norm1"), c.QueryDim, 1e-5),
		Norm2:      nn.NewLayerNorm(p.Sub("norm2"), c.QueryDim, 1e-5),
		AlphaAttn:  p.Param("alpha_attn"),
		AlphaDense: p.Param("alpha_dense"),
	}
}

// FuserConfigOf sizes the fuser of transformer block b for grounding tokens
// of width contextDim, as diffusers' BasicTransformerBlock does: the
// block's width, heads and head width.
func FuserConfigOf(b *unet.BasicTransformerBlock, contextDim int64) FuserConfig {
	heads := b.Attn1.Heads
	return FuserConfig{
		QueryDim:   b.Norm1.Dim,
		ContextDim: contextDim,
		Heads:      heads,
		HeadDim:    b.Attn1.ToQ.Weight.Size(0) / heads,
	}
}

// Forward implements unet.Fuser with the shared Cond: the identity (x
// itself) while there is no condition, no tokens or beta is 0.
func (f *GatedSelfAttentionDense) Forward(x *torch.Tensor) *torch.Tensor {
	c := f.Cond
	if c == nil || c.Objs == nil || c.Beta == 0 {
		return x
	}
	objs := c.Objs
	if b := x.Size(0); objs.Size(0) == 2*b {
		// A conditional-only call (box guidance's probe) during a
		// classifier-free-guided generation: the second half is the prompt's.
		return torch.Scoped(func() *torch.Tensor { return f.Fuse(x, objs.Narrow(0, b, b), c.Beta) })
	}
	return f.Fuse(x, objs, c.Beta)
}

// Fuse maps image tokens x [B, N, C] and grounding tokens objs [B, M, Cctx]
// to [B, N, C], with both gates scaled by beta.
func (f *GatedSelfAttentionDense) Fuse(x, objs *torch.Tensor, beta float64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		n := x.Size(1)
		tokens := torch.Cat([]*torch.Tensor{x, f.Linear.Forward(objs)}, 1)   // [B, N+M, C]
		attn := f.Attn.Forward(f.Norm1.Forward(tokens), nil).Narrow(1, 0, n) // image tokens only
		x = x.Add(f.gate(f.AlphaAttn, beta).Mul(attn))
		return x.Add(f.gate(f.AlphaDense, beta).Mul(f.FF.Forward(f.Norm2.Forward(x))))
	})
}

// gate is beta * tanh(alpha), 0-dim; with beta 1 it is tanh(alpha) to the
// bit, as diffusers multiplies.
func (f *GatedSelfAttentionDense) gate(alpha *torch.Tensor, beta float64) *torch.Tensor {
	return alpha.Tanh().MulScalar(beta)
}
