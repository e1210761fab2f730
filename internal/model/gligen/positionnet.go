package gligen

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// MaxObjects is how many grounding tokens diffusers' GLIGEN pipeline
// always passes: real objects first, the rest padding with mask 0.
const MaxObjects = 30

// mlpHidden is the position net's hidden width, fixed in diffusers
// whatever the UNet's size.
const mlpHidden = 512

// PositionNet is diffusers' GLIGENTextBoundingboxProjection with
// feature_type "text-only": the grounding token of object n is
//
//	objs[b, n] = MLP(cat(phrase[b, n], Fourier(box[b, n])))
//
// where a padding object (mask 0) has the learned null features in place of
// both its phrase embedding and its box embedding.
type PositionNet struct {
	Freqs        int64
	NullPosition *torch.Tensor // null_position_feature [4*2*Freqs]: a padding object's box embedding
	Text         *Branch       // linears, null_positive_feature
}

// NewPositionNet loads a text-only position net at p ("position_net") for
// phrase embeddings of width featureDim, giving tokens of width outDim
// (both the UNet's cross_attention_dim in diffusers).
func NewPositionNet(p nn.Path, featureDim, outDim int64) *PositionNet {
	positionDim := FourierFreqs * 2 * 4
	return &PositionNet{
		Freqs:        FourierFreqs,
		NullPosition: p.Param("null_position_feature", positionDim),
		Text:         NewBranch(p, "linears", "null_positive_feature", featureDim, positionDim, outDim),
	}
}

// Forward maps boxes [B, N, 4], masks [B, N] (1 = a real object, 0 =
// padding) and phrase embeddings [B, N, featureDim] to grounding tokens
// [B, N, outDim].
func (n *PositionNet) Forward(boxes, masks, phrases *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return n.Text.Forward(phrases, n.Positions(boxes, masks), masks)
	})
}

// Positions is the box part of every branch's input: the Fourier embedding
// of boxes [B, N, 4], or the null position feature where masks [B, N] is 0;
// [B, N, 4*2*Freqs].
func (n *PositionNet) Positions(boxes, masks *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return WithNull(FourierEmbedding(boxes, n.Freqs), n.NullPosition, masks)
	})
}

// Branch turns one kind of object feature (a phrase's pooled text
// embedding; in LCP's layout-aware module also a subject's image feature)
// and its box embedding into a grounding token. diffusers' text-only net
// has one (linears, null_positive_feature), its text-image net two
// (linears_text / null_text_feature, linears_image / null_image_feature)
// sharing one null position feature.
type Branch struct {
	Null *torch.Tensor // [featureDim]: a padding object's feature
	MLP  *MLP
}

// NewBranch loads the MLP named linears and the null feature named null
// under p.
func NewBranch(p nn.Path, linears, null string, featureDim, positionDim, outDim int64) *Branch {
	return &Branch{
		Null: p.Param(null, featureDim),
		MLP:  NewMLP(p.Sub(linears), featureDim+positionDim, outDim),
	}
}

// Forward maps features [B, N, featureDim], box embeddings [B, N, P]
// (Positions) and masks [B, N] to tokens [B, N, outDim].
func (b *Branch) Forward(features, positions, masks *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		features = WithNull(features, b.Null, masks)
		return b.MLP.Forward(torch.Cat([]*torch.Tensor{features, positions}, -1))
	})
}

// MLP is the position net's nn.Sequential(Linear(in, 512), SiLU,
// Linear(512, 512), SiLU, Linear(512, out)), stored as linears.{0,2,4}.
type MLP struct {
	Layers [3]*nn.Linear
}

// NewMLP loads the three linear layers under p.
func NewMLP(p nn.Path, in, out int64) *MLP {
	return &MLP{Layers: [3]*nn.Linear{
		nn.NewLinear(p.Sub(0), in, mlpHidden, true),
		nn.NewLinear(p.Sub(2), mlpHidden, mlpHidden, true),
		nn.NewLinear(p.Sub(4), mlpHidden, out, true),
	}}
}

// Forward maps x [..., in] to [..., out].
func (m *MLP) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		h := m.Layers[0].Forward(x).SiLU()
		h = m.Layers[1].Forward(h).SiLU()
		return m.Layers[2].Forward(h)
	})
}

// WithNull is x [B, N, D] where masks [B, N] is 1 and null [D] where it is
// 0, written as diffusers writes it, x*m + (1-m)*null, so that the values
// agree to the bit (and a fractional mask blends the same way).
func WithNull(x, null, masks *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		m := masks.Unsqueeze(-1).To(x.DType()) // [B, N, 1]
		return x.Mul(m).Add(m.Rsub(1).Mul(null))
	})
}
