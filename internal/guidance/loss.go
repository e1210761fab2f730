package guidance

import (
	"github.com/lcpdiff/lcpdiff/internal/model/region"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Map is one text cross-attention layer's attention probabilities averaged
// over heads, A [B, H*W, 77], on the layer's H x W grid (token i*W + j is
// row i, column j).
type Map struct {
	Layer string
	A     *torch.Tensor
	H, W  int
}

// normEps keeps max-normalisation finite on an all-zero map.
const normEps = 1e-8

// Loss is L of Eq. 8: for each batch element the mean over the layers of
// L_pos + L_scale. Batch elements are summed, so that each element's
// gradient is the one it would get alone.
func Loss(maps []Map, subjects []Subject) *torch.Tensor {
	if len(maps) == 0 {
		panic(&torch.Error{Op: "guidance", Msg: "the UNet recorded no cross-attention maps"})
	}
	return torch.Scoped(func() *torch.Tensor {
		var total *torch.Tensor
		for b := range maps[0].A.Size(0) {
			var perLayer []*torch.Tensor
			for _, m := range maps {
				pos, scale := LayerTerms(m.A.Select(0, b), m.H, m.W, subjects)
				perLayer = append(perLayer, pos.Sum().Add(scale.Sum())) // L_pos + L_scale
			}
			l := torch.Stack(perLayer, 0).Mean()
			if total == nil {
				total = l
			} else {
				total = total.Add(l)
			}
		}
		return total
	})
}

// LayerTerms are one layer's per-subject terms of Eq. 5 (pos) and Eq. 6-7
// (scale), [K] each, from its map a [H*W, 77]; L_pos and L_scale are their
// sums. A subject's term is the mean of its tokens' terms.
func LayerTerms(a *torch.Tensor, h, w int, subjects []Subject) (pos, scale *torch.Tensor) {
	s := torch.NewScope()
	defer s.Close()
	opts := torch.OptionsOf(a)
	var posTerms, scaleTerms []*torch.Tensor
	for _, subj := range subjects {
		b := region.BoxBounds(subj.Box, h, w)
		r := target{
			m:  b.Mask(h, w).ToOptions(opts),
			mx: b.ProjX(w).ToOptions(opts), my: b.ProjY(h).ToOptions(opts),
			vx: b.CornerX(w).ToOptions(opts), vy: b.CornerY(h).ToOptions(opts),
		}
		var p, sc []*torch.Tensor
		for _, n := range subj.Tokens {
			tokenMap := a.Select(1, n).View(int64(h), int64(w)) // A[:, n] as H x W
			p = append(p, positionTerm(tokenMap, r))
			sc = append(sc, scaleTerm(tokenMap, r))
		}
		posTerms = append(posTerms, torch.Stack(p, 0).Mean())
		scaleTerms = append(scaleTerms, torch.Stack(sc, 0).Mean())
	}
	return s.Keep(torch.Stack(posTerms, 0)), s.Keep(torch.Stack(scaleTerms, 0))
}

// target is a subject's box on one layer's grid: the mask M [H, W], its
// projections m_x [W], m_y [H] and the corner bands v_x [W], v_y [H].
type target struct {
	m, mx, my, vx, vy *torch.Tensor
}

// positionTerm is (1 - r)^2 with r = sum(a * M) / sum(a), the share of the
// token's attention that falls inside its box.
func positionTerm(a *torch.Tensor, r target) *torch.Tensor {
	inside := a.Mul(r.m).Sum().Div(a.Sum())
	return inside.Rsub(1).Square()
}

// scaleTerm is L_x + L_y: near the box's edges (the corner bands), the
// normalised map's row and column maxima should step from 0 outside the
// box to 1 inside it, so that the subject fills its box, no more.
func scaleTerm(a *torch.Tensor, r target) *torch.Tensor {
	h, w := a.Size(0), a.Size(1)
	// â = a / max(a): the max stays in the graph, as the spec asks.
	aHat := a.Div(a.Amax().AddScalar(normEps))
	// Projections by max: max(dim) sends the gradient to one element, as
	// the reference does (it differs from amax only on ties).
	ax, _ := aHat.Max(0, false) // a_x(j) = max_i â(i, j)
	ay, _ := aHat.Max(1, false) // a_y(i) = max_j â(i, j)
	lx := r.vx.Mul(ax.Sub(r.mx).Abs()).Sum().DivScalar(float64(w))
	ly := r.vy.Mul(ay.Sub(r.my).Abs()).Sum().DivScalar(float64(h))
	return lx.Add(ly)
}

// gridOf is the H x W of a layer with n tokens on an h x w latent.
func gridOf(n int64, h, w int) (int, int, error) {
	gh, gw, err := region.Grid(int64(h), int64(w), n)
	return int(gh), int(gw), err
}
