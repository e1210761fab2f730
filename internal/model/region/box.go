package region

import (
	"math"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// BoxMask is a normalised box (x0, y0, x1, y1) on an h x w grid, flattened
// row-major to [h*w] f32, with the cell rule of ../shared/spec/guidance.md:
// floor of the low edge, ceil of the high edge, at least one cell.
func BoxMask(box [4]float64, h, w int64) *torch.Tensor {
	lx, hx := span(box[0], box[2], w)
	ly, hy := span(box[1], box[3], h)
	m := make([]float32, h*w)
	for i := ly; i < hy; i++ {
		for j := lx; j < hx; j++ {
			m[i*w+j] = 1
		}
	}
	return torch.New(m)
}

// span is the cells [lo, hi) a normalised interval covers at size n.
func span(a, b float64, n int64) (lo, hi int64) {
	lo = min(max(int64(math.Floor(a*float64(n))), 0), n)
	hi = min(max(int64(math.Ceil(b*float64(n))), 0), n)
	if hi <= lo {
		hi = min(lo+1, n)
		if hi <= lo {
			lo = hi - 1
		}
	}
	return lo, hi
}
