package ipadapter

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/region"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Condition is what the adapter's layers attend to besides the text, for
// the UNet calls that follow SetCondition.
type Condition struct {
	// Subjects are each subject's image tokens [B, Q, C].
	Subjects []*torch.Tensor
	// Uncond are, with classifier-free guidance, each subject's tokens of
	// the all-zero image [B, Q, C]. The UNet's batch picks the tokens: 2B
	// rows (negative first, as the text embeddings are stacked) attend to
	// Uncond then Subjects, B rows (box guidance's probe of the
	// conditional branch) to Subjects alone.
	Uncond []*torch.Tensor
	// Boxes, one per subject as (x0, y0, x1, y1) normalised to the image,
	// restrict each subject's image attention to its box; nil puts all
	// subjects' tokens in one attention (plain IP-Adapter).
	Boxes [][4]float64
	// LatentH, LatentW are the size of the UNet's input latent; with boxes
	// they place each layer's grid.
	LatentH, LatentW int64
	// RowOf, when set, gives each subject the one batch row it conditions
	// (a training micro-batch, each sample with subjects of its own); each
	// subject's tokens are then [1, Q, C] and there is no Uncond. Nil:
	// every subject conditions every row.
	RowOf []int
}

// Processor is IP-Adapter's decoupled cross-attention for one attn2 layer
// (diffusers' IPAdapterAttnProcessor): the layer's own attention to the
// text plus, with the same queries and heads, an attention to the image
// tokens c through keys and values of its own,
//
//	out = to_out( Attn(q, K_text, V_text) + lambda * Attn(q, to_k_ip(c), to_v_ip(c)) )
//
// or with boxes lambda * sum_k M_k * Attn(q, to_k_ip(c_k), to_v_ip(c_k)) for
// the image term, M_k subject k's box mask at the layer's grid. The
// condition and lambda belong to the Adapter, which all its layers share.
type Processor struct {
	adapter      *Adapter
	ToKIP, ToVIP *nn.Linear // cross_attention_dim -> the layer's inner width, no bias
}

// Process maps the layer's input x [B, N, C] and the text context [B, 77, D]
// to its output [B, N, C].
func (p *Processor) Process(a *unet.Attention, x, context *torch.Tensor) *torch.Tensor {
	return p.process(a, x, context, nil)
}

// Recording is the processor that computes the same and hands the TEXT
// attention probabilities [B, H, N, 77] to record, still in the autograd
// graph, as unet.ProbsProcessor does: box guidance regulates them with the
// adapter active (unet.Recordable). record runs inside the layer's
// scope, so it must Keep (or Persist) what it stores.
func (p *Processor) Recording(record func(a *unet.Attention, probs *torch.Tensor)) unet.Processor {
	return recording{p, record}
}

var _ unet.Recordable = (*Processor)(nil)

type recording struct {
	p      *Processor
	record func(a *unet.Attention, probs *torch.Tensor)
}

func (r recording) Process(a *unet.Attention, x, context *torch.Tensor) *torch.Tensor {
	return r.p.process(a, x, context, r.record)
}

func (p *Processor) process(a *unet.Attention, x, context *torch.Tensor, record func(*unet.Attention, *torch.Tensor)) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		q, k, v := a.QKV(x, context) // [B, H, N, D], [B, H, M, D]
		var out *torch.Tensor
		if record != nil {
			var probs *torch.Tensor
			out, probs = torch.AttentionProbs(q, k, v, nil, 0)
			record(a, probs)
		} else {
			out = torch.Attention(q, k, v, nil, 0)
		}
		if image := p.imageAttention(a, q); image != nil {
			out = out.Add(image.MulScalar(p.adapter.Scale))
		}
		return a.Out(out)
	})
}

// imageAttention is the image term before lambda, [B, H, N, D], or nil
// when no condition is set.
func (p *Processor) imageAttention(a *unet.Attention, q *torch.Tensor) *torch.Tensor {
	subjects := p.adapter.tokens(a.Name, q.Size(0))
	if subjects == nil {
		return nil
	}
	var masks []*torch.Tensor
	if p.adapter.cond.Boxes != nil {
		masks = p.adapter.boxMasks(a.Name, q.Size(2), torch.OptionsOf(q))
	}
	rowOf := p.adapter.cond.RowOf
	if rowOf == nil {
		return p.imageTerm(a, q, subjects, masks)
	}
	return unet.PerRow(q, rowOf, func(q *torch.Tensor, mine []int) *torch.Tensor {
		return p.imageTerm(a, q, unet.Pick(subjects, mine), unet.Pick(masks, mine))
	}, func() *torch.Tensor { return torch.OptionsOf(q).Zeros(1, q.Size(1), q.Size(2), q.Size(3)) })
}

// imageTerm is queries q [B, H, N, D] attending to the subjects' tokens,
// [B, H, N, D]: one attention over all of them, or with box masks each
// subject's attention zero outside its box, summed.
func (p *Processor) imageTerm(a *unet.Attention, q *torch.Tensor, subjects, masks []*torch.Tensor) *torch.Tensor {
	if masks == nil {
		return p.attend(a, q, torch.Cat(subjects, 1)) // [B, K*Q, C]: one attention over every subject
	}
	var sum *torch.Tensor
	for k, tokens := range subjects {
		term := p.attend(a, q, tokens).Mul(masks[k]) // zero outside subject k's box
		if sum == nil {
			sum = term
		} else {
			sum = sum.Add(term)
		}
	}
	return sum
}

// attend is Attn(q, to_k_ip(tokens), to_v_ip(tokens)) with the layer's heads.
func (p *Processor) attend(a *unet.Attention, q, tokens *torch.Tensor) *torch.Tensor {
	k := a.SplitHeads(p.ToKIP.Forward(tokens)) // [B, H, Q, D]
	v := a.SplitHeads(p.ToVIP.Forward(tokens))
	return torch.Attention(q, k, v, nil, 0)
}

// tokens are the subjects' tokens for a UNet batch of the given size (see
// Condition), or nil without a condition.
func (a *Adapter) tokens(layer string, batch int64) []*torch.Tensor {
	if len(a.cond.Subjects) == 0 {
		return nil
	}
	switch b := a.cond.Subjects[0].Size(0); {
	case a.cond.RowOf != nil, batch == b: // per row, PerRow checks the rows
		return a.cond.Subjects
	case batch == 2*b && a.guided != nil:
		return a.guided
	default:
		want := fmt.Sprint(b)
		if a.guided != nil {
			want = fmt.Sprintf("%d or %d", b, 2*b)
		}
		panic(&torch.Error{Op: "ip-adapter " + layer, Msg: fmt.Sprintf("image tokens are set for a batch of %s, the UNet runs %d", want, batch)})
	}
}

// boxMasks are the subjects' box masks at the grid of a layer with n
// queries, each [n, 1] to broadcast over [B, H, n, D]; made once per grid
// size and kept until the condition changes.
func (a *Adapter) boxMasks(layer string, n int64, o torch.Options) []*torch.Tensor {
	if m, ok := a.masks[n]; ok {
		return m
	}
	h, w, err := region.Grid(a.cond.LatentH, a.cond.LatentW, n)
	if err != nil {
		panic(&torch.Error{Op: "ip-adapter " + layer, Msg: err.Error()})
	}
	masks := make([]*torch.Tensor, len(a.cond.Boxes))
	for k, b := range a.cond.Boxes {
		masks[k] = torch.Persist(torch.Scoped(func() *torch.Tensor {
			return region.BoxMask(b, h, w).Reshape(n, 1).ToOptions(o)
		}))
	}
	a.masks[n] = masks
	return masks
}
