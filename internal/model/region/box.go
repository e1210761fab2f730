package region

import (
	"math"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Bounds are the cells [LoX, HiX) x [LoY, HiY) a box covers on a layer's
// grid: columns j (x, to the right) and rows i (y, downwards).
type Bounds struct {
	LoX, HiX, LoY, HiY int
}

// BoxBounds places a normalised box (x0, y0, x1, y1) on an h x w grid with
// the spec's rule: the low edge rounds down and the high edge up, both
// clamped to the grid, and a box that covers no cell keeps one, so that
// no subject vanishes at a coarse layer.
func BoxBounds(box [4]float64, h, w int) Bounds {
	loX, hiX := cells(box[0], box[2], w)
	loY, hiY := cells(box[1], box[3], h)
	return Bounds{LoX: loX, HiX: hiX, LoY: loY, HiY: hiY}
}

// cells is the interval [lo, hi) of n cells that the normalised interval
// (a, b) covers.
func cells(a, b float64, n int) (lo, hi int) {
	// Clamping before the conversion keeps huge values from overflowing int.
	clamp := func(v float64) int { return int(min(max(v, 0), float64(n))) }
	lo, hi = clamp(math.Floor(a*float64(n))), clamp(math.Ceil(b*float64(n)))
	if hi <= lo {
		hi = min(lo+1, n)
		if hi <= lo { // lo was n: take the last cell
			lo = hi - 1
		}
	}
	return lo, hi
}

// Mask is M_k [h, w]: 1 inside the bounds, 0 elsewhere.
func (b Bounds) Mask(h, w int) *torch.Tensor {
	m := make([]float32, h*w)
	for i := b.LoY; i < b.HiY; i++ {
		for j := b.LoX; j < b.HiX; j++ {
			m[i*w+j] = 1
		}
	}
	return torch.New(m, int64(h), int64(w))
}

// ProjX is m_x [w] = max_i M(i, j): 1 on the box's columns.
func (b Bounds) ProjX(w int) *torch.Tensor { return indicator(w, b.LoX, b.HiX) }

// ProjY is m_y [h] = max_j M(i, j): 1 on the box's rows.
func (b Bounds) ProjY(h int) *torch.Tensor { return indicator(h, b.LoY, b.HiY) }

// cornerWidth is L, the half-width in cells of the band around each box
// edge where the scale loss looks.
const cornerWidth = 1

// CornerX is v_x [w]: 1 within cornerWidth cells of the box's first or
// last column.
func (b Bounds) CornerX(w int) *torch.Tensor { return corners(w, b.LoX, b.HiX) }

// CornerY is v_y [h]: 1 within cornerWidth cells of the box's first or
// last row.
func (b Bounds) CornerY(h int) *torch.Tensor { return corners(h, b.LoY, b.HiY) }

func indicator(n, lo, hi int) *torch.Tensor {
	v := make([]float32, n)
	for j := lo; j < hi; j++ {
		v[j] = 1
	}
	return torch.New(v)
}

func corners(n, lo, hi int) *torch.Tensor {
	v := make([]float32, n)
	for j := range v {
		if abs(j-lo) <= cornerWidth || abs(j-(hi-1)) <= cornerWidth {
			v[j] = 1
		}
	}
	return torch.New(v)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// BoxMask is a normalised box on an h x w grid, flattened row-major to
// [h*w] f32 (diffusers' token order).
func BoxMask(box [4]float64, h, w int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return BoxBounds(box, int(h), int(w)).Mask(int(h), int(w)).Reshape(h * w)
	})
}
