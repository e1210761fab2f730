package unet

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Attention is diffusers' Attention module: multi-head attention with
// to_q / to_k / to_v projections and an output projection to_out.0. How it
// computes is its Processor's business, as in diffusers, so that adapters
// can add keys and values (IP-Adapter), more terms (static attention) or
// read the probabilities (box guidance) without touching the network.
type Attention struct {
	Name          string // module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
	Heads         int64
	ToQ, ToK, ToV *nn.Linear
	ToOut         *nn.Linear
	Processor     Processor
	ResidualScale float64 // VAE mid-block attention adds its input (rescale 1); 0: no residual
}

// Processor computes an attention layer's output from its input x
// [B, N, C] and context [B, M, Ccross] (nil for self-attention).
type Processor interface {
	Process(a *Attention, x, context *torch.Tensor) *torch.Tensor
}

// AttentionConfig sizes an Attention layer.
type AttentionConfig struct {
	QueryDim   int64
	ContextDim int64 // 0: self-attention
	Heads      int64
	HeadDim    int64
	QKVBias    bool // the VAE's attention has biases on q, k, v; the UNet's not
}

func NewAttention(p nn.Path, c AttentionConfig) *Attention {
	inner := c.Heads * c.HeadDim
	ctx := c.ContextDim
	if ctx == 0 {
		ctx = c.QueryDim
	}
	return &Attention{
		Name:      p.Name(),
		Heads:     c.Heads,
		ToQ:       nn.NewLinear(p.Sub("to_q"), c.QueryDim, inner, c.QKVBias),
		ToK:       nn.NewLinear(p.Sub("to_k"), ctx, inner, c.QKVBias),
		ToV:       nn.NewLinear(p.Sub("to_v"), ctx, inner, c.QKVBias),
		ToOut:     nn.NewLinear(p.Sub("to_out", 0), inner, c.QueryDim, true),
		Processor: DefaultProcessor{},
	}
}

// Forward runs the layer through its processor.
func (a *Attention) Forward(x, context *torch.Tensor) *torch.Tensor {
	return a.Processor.Process(a, x, context)
}

// SplitHeads maps [B, N, H*D] to [B, H, N, D].
func (a *Attention) SplitHeads(x *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	return x.View(s[0], s[1], a.Heads, s[2]/a.Heads).Transpose(1, 2)
}

// MergeHeads maps [B, H, N, D] back to [B, N, H*D].
func (a *Attention) MergeHeads(x *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	return x.Transpose(1, 2).Reshape(s[0], s[2], s[1]*s[3])
}

// QKV projects x (and context, for cross-attention) to per-head queries,
// keys and values, each [B, H, N, D].
func (a *Attention) QKV(x, context *torch.Tensor) (q, k, v *torch.Tensor) {
	if context == nil {
		context = x
	}
	return a.SplitHeads(a.ToQ.Forward(x)), a.SplitHeads(a.ToK.Forward(context)), a.SplitHeads(a.ToV.Forward(context))
}

// Out merges heads and applies the output projection.
func (a *Attention) Out(h *torch.Tensor) *torch.Tensor { return a.ToOut.Forward(a.MergeHeads(h)) }

// DefaultProcessor is plain scaled dot-product attention (diffusers'
// AttnProcessor / AttnProcessor2_0), scale head_dim^-0.5.
type DefaultProcessor struct{}

func (DefaultProcessor) Process(a *Attention, x, context *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		q, k, v := a.QKV(x, context)
		return a.Out(torch.Attention(q, k, v, nil, 0))
	})
}

// Recordable is a processor (an adapter's) that can hand out the
// probabilities of its text attention: Recording returns a processor that
// computes exactly what it does and passes those probabilities to record.
// Box guidance reads the maps through it with the adapter active.
type Recordable interface {
	Recording(record func(a *Attention, probs *torch.Tensor)) Processor
}

// ProbsProcessor computes the same attention while handing the attention
// probabilities [B, H, N, M] to Record, still in the autograd graph: the box
// guidance builds its loss on them. Record runs inside the layer's scope, so
// it must Keep (or Persist) whatever it stores.
type ProbsProcessor struct {
	Record func(a *Attention, probs *torch.Tensor)
}

func (p ProbsProcessor) Process(a *Attention, x, context *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		q, k, v := a.QKV(x, context)
		out, probs := torch.AttentionProbs(q, k, v, nil, 0)
		p.Record(a, probs)
		return a.Out(out)
	})
}
