// Package ipadapter is IP-Adapter Plus for Stable Diffusion 1.5: the
// perceiver resampler that distils an image encoder's hidden states into a
// few image tokens, and the decoupled cross-attention that lets the UNet
// attend to them beside the text. In LCP-Diffusion this is the DA-Encoder
// and the dynamic attention (shared/DESIGN.md).
package ipadapter

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// ResamplerConfig sizes a Resampler (tencent-ailab's Resampler arguments).
type ResamplerConfig struct {
	Dim          int64 // width of the latents (the queries)
	Depth        int   // attention + feed-forward blocks
	DimHead      int64 // per-head width
	Heads        int64
	NumQueries   int64 // image tokens out
	EmbeddingDim int64 // width of the image encoder's hidden states
	OutputDim    int64 // width of the tokens out: the UNet's cross_attention_dim
	FFMult       int64 // feed-forward expansion
}

// resamplerDimHead is fixed: diffusers' converter hard-codes dim_head 64 and
// derives the heads from it, so no public checkpoint can use another.
const resamplerDimHead = 64

// ResamplerConfigFromShapes reads the sizes off the stored tensors whose
// keys start with prefix ("image_proj." in the public safetensors).
func ResamplerConfigFromShapes(src nn.Source, prefix string) (ResamplerConfig, error) {
	shape := func(key string, dims int) ([]int64, error) {
		s, ok := src.Shape(prefix + key)
		if !ok {
			return nil, fmt.Errorf("no %s%s", prefix, key)
		}
		if len(s) != dims {
			return nil, fmt.Errorf("%s%s is %v, want %d dimensions", prefix, key, s, dims)
		}
		return s, nil
	}
	var c ResamplerConfig
	latents, err := shape("latents", 3)
	if err != nil {
		return c, err
	}
	projIn, err := shape("proj_in.weight", 2)
	if err != nil {
		return c, err
	}
	projOut, err := shape("proj_out.weight", 2)
	if err != nil {
		return c, err
	}
	for {
		if _, ok := src.Shape(fmt.Sprintf("%slayers.%d.0.to_q.weight", prefix, c.Depth)); !ok {
			break
		}
		c.Depth++
	}
	if c.Depth == 0 {
		return c, fmt.Errorf("no %slayers.0.0.to_q.weight", prefix)
	}
	toQ, err := shape("layers.0.0.to_q.weight", 2)
	if err != nil {
		return c, err
	}
	ff, err := shape("layers.0.1.1.weight", 2)
	if err != nil {
		return c, err
	}
	c.NumQueries, c.Dim = latents[1], latents[2]
	c.EmbeddingDim = projIn[1]
	c.OutputDim = projOut[0]
	c.DimHead = resamplerDimHead
	if toQ[0]%c.DimHead != 0 {
		return c, fmt.Errorf("%slayers.0.0.to_q.weight is %v: %d rows are not whole heads of %d", prefix, toQ, toQ[0], c.DimHead)
	}
	c.Heads = toQ[0] / c.DimHead
	if ff[0]%c.Dim != 0 {
		return c, fmt.Errorf("%slayers.0.1.1.weight is %v: not a multiple of the width %d", prefix, ff, c.Dim)
	}
	c.FFMult = ff[0] / c.Dim
	return c, nil
}

// Resampler is IP-Adapter Plus' perceiver (tencent-ailab resampler.py):
// learned queries cross-attend to the image features and to themselves,
// block after block, then project to the UNet's cross-attention width.
type Resampler struct {
	Config  ResamplerConfig
	Latents *torch.Tensor // [1, Q, dim], the learned queries
	ProjIn  *nn.Linear    // embedding_dim -> dim
	Layers  []ResamplerLayer
	ProjOut *nn.Linear // dim -> output_dim
	NormOut *nn.LayerNorm
}

// ResamplerLayer is one block: layers.N.0 and layers.N.1, each residual.
type ResamplerLayer struct {
	Attn *PerceiverAttention
	FF   *PerceiverFeedForward
}

// NewResampler loads the resampler's parameters under p.
func NewResampler(p nn.Path, c ResamplerConfig) *Resampler {
	r := &Resampler{
		Config:  c,
		Latents: p.Param("latents", 1, c.NumQueries, c.Dim),
		ProjIn:  nn.NewLinear(p.Sub("proj_in"), c.EmbeddingDim, c.Dim, true),
		ProjOut: nn.NewLinear(p.Sub("proj_out"), c.Dim, c.OutputDim, true),
		NormOut: nn.NewLayerNorm(p.Sub("norm_out"), c.OutputDim, 1e-5),
	}
	for i := range c.Depth {
		l := p.Sub("layers", i)
		r.Layers = append(r.Layers, ResamplerLayer{
			Attn: NewPerceiverAttention(l.Sub(0), c.Dim, c.Heads, c.DimHead),
			FF:   NewPerceiverFeedForward(l.Sub(1), c.Dim, c.Dim*c.FFMult),
		})
	}
	return r
}

// Forward maps image features x [B, S, embedding_dim] (the image encoder's
// penultimate hidden states; several views of one subject concatenated
// along S) to image tokens [B, Q, output_dim].
func (r *Resampler) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		latents := r.Latents.Repeat(x.Size(0), 1, 1) // [B, Q, dim]
		x = r.ProjIn.Forward(x)                      // [B, S, dim]
		for _, l := range r.Layers {
			latents = l.Attn.Forward(x, latents).Add(latents)
			latents = l.FF.Forward(latents).Add(latents)
		}
		return r.NormOut.Forward(r.ProjOut.Forward(latents)) // [B, Q, output_dim]
	})
}

// PerceiverAttention lets the queries attend to the image features and to
// themselves: keys and values come from cat(norm1(x), norm2(latents)).
type PerceiverAttention struct {
	Heads, DimHead int64
	Norm1, Norm2   *nn.LayerNorm // on the image features, on the latents
	ToQ            *nn.Linear    // dim -> inner, no bias
	ToKV           *nn.Linear    // dim -> 2*inner, no bias: [K; V] stacked by rows
	ToOut          *nn.Linear    // inner -> dim, no bias
}

func NewPerceiverAttention(p nn.Path, dim, heads, dimHead int64) *PerceiverAttention {
	inner := heads * dimHead
	return &PerceiverAttention{
		Heads: heads, DimHead: dimHead,
		Norm1: nn.NewLayerNorm(p.Sub("norm1"), dim, 1e-5),
		Norm2: nn.NewLayerNorm(p.Sub("norm2"), dim, 1e-5),
		ToQ:   nn.NewLinear(p.Sub("to_q"), dim, inner, false),
		ToKV:  nn.NewLinear(p.Sub("to_kv"), dim, 2*inner, false),
		ToOut: nn.NewLinear(p.Sub("to_out"), inner, dim, false),
	}
}

// Forward maps image features x [B, S, dim] and latents [B, Q, dim] to the
// latents' update [B, Q, dim].
func (a *PerceiverAttention) Forward(x, latents *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		x = a.Norm1.Forward(x)
		latents = a.Norm2.Forward(latents)
		q := a.ToQ.Forward(latents)                                     // [B, Q, inner]
		kv := a.ToKV.Forward(torch.Cat([]*torch.Tensor{x, latents}, 1)) // [B, S+Q, 2*inner]
		kvs := kv.Chunk(2, -1)
		k, v := kvs[0], kvs[1]
		q, k, v = a.splitHeads(q), a.splitHeads(k), a.splitHeads(v) // [B, H, *, D]
		// tencent's resampler.py scales q and k by d^-1/4 each (for f16);
		// diffusers, which made the golden run, scales the product by
		// d^-1/2. Its order reproduces the golden tokens bit for bit on the
		// CPU; tencent's is 1.8e-6 away.
		out := torch.Attention(q, k, v, nil, 0) // [B, H, Q, D]
		return a.ToOut.Forward(a.mergeHeads(out))
	})
}

// splitHeads maps [B, N, H*D] to [B, H, N, D].
func (a *PerceiverAttention) splitHeads(x *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	return x.View(s[0], s[1], a.Heads, a.DimHead).Transpose(1, 2)
}

// mergeHeads maps [B, H, N, D] back to [B, N, H*D].
func (a *PerceiverAttention) mergeHeads(x *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	return x.Transpose(1, 2).Reshape(s[0], s[2], s[1]*s[3])
}

// PerceiverFeedForward is LayerNorm (.0), Linear without bias (.1), exact
// GELU, Linear without bias (.3): an nn.Sequential whose index 2 is the
// parameterless GELU.
type PerceiverFeedForward struct {
	Norm    *nn.LayerNorm
	In, Out *nn.Linear
}

func NewPerceiverFeedForward(p nn.Path, dim, inner int64) *PerceiverFeedForward {
	return &PerceiverFeedForward{
		Norm: nn.NewLayerNorm(p.Sub(0), dim, 1e-5),
		In:   nn.NewLinear(p.Sub(1), dim, inner, false),
		Out:  nn.NewLinear(p.Sub(3), inner, dim, false),
	}
}

// Forward maps [B, Q, dim] to [B, Q, dim].
func (f *PerceiverFeedForward) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return f.Out.Forward(f.In.Forward(f.Norm.Forward(x)).GELU())
	})
}
