package nn

import "github.com/lcpdiff/lcpdiff/internal/torch"

// Linear is torch.nn.Linear: weight [out, in], optional bias [out].
type Linear struct {
	Weight, Bias *torch.Tensor
}

// NewLinear loads p.weight and, when bias is true, p.bias.
func NewLinear(p Path, in, out int64, bias bool) *Linear {
	m := &Linear{Weight: p.Param("weight", out, in)}
	if bias {
		m.Bias = p.Param("bias", out)
	}
	return m
}

func (m *Linear) Forward(x *torch.Tensor) *torch.Tensor { return torch.Linear(x, m.Weight, m.Bias) }

// Conv2d is torch.nn.Conv2d with a square kernel and a bias.
type Conv2d struct {
	Weight, Bias *torch.Tensor
	Options      torch.ConvOptions
}

// NewConv2d loads p.weight [out, in/groups, k, k] and p.bias [out].
func NewConv2d(p Path, in, out, kernel int64, o torch.ConvOptions) *Conv2d {
	groups := max(o.Groups, 1)
	return &Conv2d{
		Weight:  p.Param("weight", out, in/groups, kernel, kernel),
		Bias:    p.Param("bias", out),
		Options: o,
	}
}

func (m *Conv2d) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Conv2d(x, m.Weight, m.Bias, m.Options)
}

// Padding is the ConvOptions of a stride-1 convolution padded by pad.
func Padding(pad int64) torch.ConvOptions { return torch.ConvOptions{Padding: torch.Square2(pad)} }

// GroupNorm is torch.nn.GroupNorm with affine weight and bias.
type GroupNorm struct {
	Groups       int64
	Eps          float64
	Weight, Bias *torch.Tensor
}

func NewGroupNorm(p Path, groups, channels int64, eps float64) *GroupNorm {
	return &GroupNorm{Groups: groups, Eps: eps, Weight: p.Param("weight", channels), Bias: p.Param("bias", channels)}
}

func (m *GroupNorm) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.GroupNorm(x, m.Groups, m.Weight, m.Bias, m.Eps)
}

// LayerNorm is torch.nn.LayerNorm over the last dimension.
type LayerNorm struct {
	Dim          int64
	Eps          float64
	Weight, Bias *torch.Tensor
}

func NewLayerNorm(p Path, dim int64, eps float64) *LayerNorm {
	return &LayerNorm{Dim: dim, Eps: eps, Weight: p.Param("weight", dim), Bias: p.Param("bias", dim)}
}

func (m *LayerNorm) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.LayerNorm(x, []int64{m.Dim}, m.Weight, m.Bias, m.Eps)
}

// Embedding is torch.nn.Embedding: rows of weight [n, dim] picked by i64 ids.
type Embedding struct {
	Weight *torch.Tensor
}

func NewEmbedding(p Path, n, dim int64) *Embedding {
	return &Embedding{Weight: p.Param("weight", n, dim)}
}

// Forward maps ids [...] to [..., dim].
func (m *Embedding) Forward(ids *torch.Tensor) *torch.Tensor {
	shape := append(ids.Shape(), m.Weight.Size(1))
	return m.Weight.IndexSelect(0, ids.Reshape(-1)).Reshape(shape...)
}
