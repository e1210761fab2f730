// Package lcp holds the parts of LCP-Diffusion that are its own: the static
// detail refiner and static attention, the layout-aware module, and the
// adapter checkpoint that gathers every trainable parameter.
package lcp

import (
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/region"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Reference is one subject's static features: what entered every attn1 of
// the frozen UNet when it saw the subject's reference (the static detail
// refiner), layer by layer in UNet.TransformerBlocks order.
type Reference struct {
	Features []*torch.Tensor // c_s^l [1, N_l, C_l]
	KeyMask  []*torch.Tensor // M_s^l [N_l] bool: the subject's own tokens
	// Empty is set for an all-zero mask: such a subject has no appearance
	// to inject and static attention leaves it out.
	Empty bool
}

// Free releases the features.
func (r *Reference) Free() {
	nn.Free(r.Features)
	nn.Free(r.KeyMask)
}

// Refine is the static detail refiner: the frozen UNet run once at t = 0
// on the subject's reference latent [1, C, h, w] (its background already
// white) conditioned on embeds ("a photo of a {category}"), with the
// subject's mask [1, 1, H, W] limiting every self-attention's keys to the
// subject. It returns the hidden states entering every attn1.
func Refine(u *unet.UNet, latent, mask, embeds *torch.Tensor) (*Reference, error) {
	refs, err := RefineBatch(u, latent, mask, embeds)
	if err != nil {
		return nil, err
	}
	return refs[0], nil
}

// RefineBatch is Refine for S subjects in one UNet pass, rather than S:
// latents [S, C, h, w], masks [S, 1, H, W], embeds [S, 77, D]; a
// Reference per subject, each as Refine gives it alone (up to the
// summation order of a larger batch).
func RefineBatch(u *unet.UNet, latents, masks, embeds *torch.Tensor) (refs []*Reference, err error) {
	defer torch.Recover(&err)
	blocks := u.TransformerBlocks()
	saved := make([]unet.Processor, len(blocks))
	refs = make([]*Reference, latents.Size(0))
	for i := range refs {
		refs[i] = &Reference{Features: make([]*torch.Tensor, len(blocks)), KeyMask: make([]*torch.Tensor, len(blocks))}
		refs[i].Empty = torch.Scoped(func() *torch.Tensor { return masks.Narrow(0, int64(i), 1).Sum() }).Item() == 0
	}
	for i, b := range blocks {
		saved[i] = b.Attn1.Processor
		b.Attn1.Processor = refinerCapture{refs: refs, layer: i, masks: masks, latentH: latents.Size(2), latentW: latents.Size(3)}
	}
	defer func() {
		for i, b := range blocks {
			b.Attn1.Processor = saved[i]
		}
		if err != nil {
			for _, r := range refs {
				r.Free()
			}
		}
	}()
	torch.NoGrad(func() {
		t := torch.Options{DType: torch.Int64, Device: latents.Device()}.Zeros()
		u.Forward(latents, t, embeds).Free()
		t.Free()
	})
	return refs, nil
}

// refinerCapture is attn1's processor during the refiner pass: it keeps
// each subject's input and lets it attend only to the subject's tokens
// (everywhere for an empty mask, rather than nowhere).
type refinerCapture struct {
	refs             []*Reference
	layer            int
	masks            *torch.Tensor // [S, 1, H, W]
	latentH, latentW int64
}

func (c refinerCapture) Process(a *unet.Attention, x, _ *torch.Tensor) *torch.Tensor {
	h, w, err := region.Grid(c.latentH, c.latentW, x.Size(1))
	if err != nil {
		panic(&torch.Error{Op: "static refiner", Msg: err.Error()})
	}
	return torch.Scoped(func() *torch.Tensor {
		attend := make([]*torch.Tensor, len(c.refs))
		allEmpty := true
		for i, ref := range c.refs {
			keep := torch.Persist(region.ResizeMask(c.masks.Narrow(0, int64(i), 1), h, w)) // [N]
			ref.KeyMask[c.layer] = keep
			ref.Features[c.layer] = torch.Persist(x.Narrow(0, int64(i), 1).Clone())
			attend[i] = keep
			if ref.Empty {
				attend[i] = torch.OptionsOf(keep).Ones(keep.Size(0))
			} else {
				allEmpty = false
			}
		}
		q, k, v := a.QKV(x, nil)
		if allEmpty {
			return a.Out(torch.Attention(q, k, v, nil, 0))
		}
		return a.Out(torch.Attention(q, k, v, torch.Stack(attend, 0).Unsqueeze(1).Unsqueeze(1), 0)) // mask [S, 1, 1, N]
	})
}

// StaticLayer is static attention in one attn1 (Eq. 9):
//
//	z_s = SelfAttn(z) + mu * alpha * CrossAttn(z, c_s, M_s)
//
// The cross-attention shares the layer's query and output projections and
// has its own keys and values (initialised as copies of the layer's).
type StaticLayer struct {
	ToK, ToV *nn.Linear
	Mu       *torch.Tensor // learnable scalar, zero at initialisation
	// Base computes SelfAttn(z): the processor this one extends.
	Base unet.Processor
	// State is set per generation.
	State *StaticState
	// Layer is the index of this layer in UNet.TransformerBlocks order.
	Layer int
}

// StaticState is what every StaticLayer reads during one generation, or
// one training micro-batch.
type StaticState struct {
	Alpha    float64      // injection strength; 0 turns static attention off
	Subjects []*Reference // one per subject
	Boxes    [][4]float64 // one per subject, normalised x0, y0, x1, y1
	Restrict bool         // each subject acts only inside its box
	// RowOf, when set, gives each subject the one batch row it conditions:
	// a training micro-batch, each sample with subjects of its own. Nil:
	// every subject conditions every row.
	RowOf []int
	// Rows weights the batch rows [B]: 1 where the subject conditions the
	// row, 0 for classifier-free guidance's unconditional rows.
	Rows             *torch.Tensor
	LatentH, LatentW int64
}

// NewStaticLayer loads the static attention of attn1 at p, or initialises
// it: keys and values as copies of attn1's, mu zero, so that a fresh layer
// leaves the UNet's output unchanged.
func NewStaticLayer(p nn.Path, attn1 *unet.Attention, layer int) *StaticLayer {
	in, inner := attn1.ToK.Weight.Size(1), attn1.ToK.Weight.Size(0)
	copyOf := func(w *torch.Tensor) func() *torch.Tensor { return func() *torch.Tensor { return w } }
	return &StaticLayer{
		ToK:   &nn.Linear{Weight: p.Sub("to_k").ParamInit("weight", copyOf(attn1.ToK.Weight), inner, in)},
		ToV:   &nn.Linear{Weight: p.Sub("to_v").ParamInit("weight", copyOf(attn1.ToV.Weight), inner, in)},
		Mu:    p.ParamInit("mu", func() *torch.Tensor { return torch.Zeros() }),
		Base:  attn1.Processor,
		Layer: layer,
	}
}

// AttachStatic puts a StaticLayer, read from p.Sub(attn1's name), on every
// attn1 of u; they share state.
func AttachStatic(p nn.Path, u *unet.UNet, state *StaticState) []*StaticLayer {
	var layers []*StaticLayer
	for i, b := range u.TransformerBlocks() {
		l := NewStaticLayer(p.Sub(b.Attn1.Name), b.Attn1, i)
		l.State = state
		b.Attn1.Processor = l
		layers = append(layers, l)
	}
	return layers
}

// DetachStatic gives every attn1 its processor back.
func DetachStatic(u *unet.UNet, layers []*StaticLayer) {
	for i, b := range u.TransformerBlocks() {
		b.Attn1.Processor = layers[i].Base
	}
}

// Process implements unet.Processor for attn1.
func (s *StaticLayer) Process(a *unet.Attention, x, context *torch.Tensor) *torch.Tensor {
	base := s.Base.Process(a, x, context)
	st := s.State
	if st == nil || st.Alpha == 0 || len(st.Subjects) == 0 {
		return base
	}
	return torch.Scoped(func() *torch.Tensor {
		h, w, err := region.Grid(st.LatentH, st.LatentW, x.Size(1))
		if err != nil {
			panic(&torch.Error{Op: "static attention", Msg: err.Error()})
		}
		q := a.SplitHeads(a.ToQ.Forward(x)) // [B, heads, N, d]
		var sum *torch.Tensor
		if st.RowOf == nil {
			sum = s.attend(a, q, st.Subjects, st.Boxes, h, w)
		} else {
			sum = unet.PerRow(q, st.RowOf, func(q *torch.Tensor, subjects []int) *torch.Tensor {
				return s.attend(a, q, unet.Pick(st.Subjects, subjects), unet.Pick(st.Boxes, subjects), h, w)
			}, func() *torch.Tensor { return torch.OptionsOf(base).Zeros(1, base.Size(1), base.Size(2)) })
		}
		if sum == nil {
			return base
		}
		rows := st.Rows
		if b := x.Size(0); rows.Size(0) == 2*b {
			// A conditional-only call (box guidance's probe) during a
			// classifier-free-guided generation: the second half is the prompt's.
			rows = rows.Narrow(0, b, b)
		}
		rows = rows.ToOptions(torch.OptionsOf(sum)).Reshape(-1, 1, 1)
		return base.Add(sum.Mul(rows).Mul(s.Mu).MulScalar(st.Alpha))
	})
}

// attend is the sum over subjects of the cross-attention of queries q
// [B, heads, N, d] to each subject's features [1, M, C], each
// restricted to its box when the state says so: [B, N, C], or nil when
// every subject is empty.
func (s *StaticLayer) attend(a *unet.Attention, q *torch.Tensor, subjects []*Reference, boxes [][4]float64, h, w int64) *torch.Tensor {
	var sum *torch.Tensor
	for k, ref := range subjects {
		if ref.Empty {
			continue
		}
		c := ref.Features[s.Layer] // [1, M, C]
		key, value := a.SplitHeads(s.ToK.Forward(c)), a.SplitHeads(s.ToV.Forward(c))
		mask := ref.KeyMask[s.Layer].Reshape(1, 1, 1, -1)
		out := a.Out(torch.Attention(q, key, value, mask, 0)) // [B, N, C]
		if s.State.Restrict {
			out = out.Mul(region.BoxMask(boxes[k], h, w).ToOptions(torch.OptionsOf(out)).Reshape(1, -1, 1))
		}
		if sum == nil {
			sum = out
		} else {
			sum = sum.Add(out)
		}
	}
	return sum
}

// StaticProjection maps a subject's static features to the one vector c_s
// the layout-aware module takes: the masked mean of every layer's
// features, concatenated, through a linear layer.
type StaticProjection struct {
	Linear *nn.Linear
}

// NewStaticProjection loads (or initialises) the projection from the
// concatenated widths of all attn1 inputs to dim.
func NewStaticProjection(p nn.Path, in, dim int64) *StaticProjection {
	return &StaticProjection{Linear: nn.NewLinear(p, in, dim, true)}
}

// Forward maps a Reference to c_s [1, dim].
func (p *StaticProjection) Forward(ref *Reference) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		means := make([]*torch.Tensor, len(ref.Features))
		for l, f := range ref.Features {
			m := ref.KeyMask[l].To(f.DType()).Reshape(1, -1, 1) // [1, N, 1]
			means[l] = f.Mul(m).Sum(1).Div(m.Sum(1))            // [1, C_l]
		}
		return p.Linear.Forward(torch.Cat(means, 1))
	})
}
