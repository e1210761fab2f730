package data

import "fmt"

// Filter is a Pillow resampling filter; the values are Pillow's own
// (Image.Resampling), which preprocessor configs store as "resample".
type Filter int

const (
	Nearest  Filter = 0
	Bilinear Filter = 2
	Bicubic  Filter = 3
)

func (f Filter) String() string {
	switch f {
	case Nearest:
		return "nearest"
	case Bilinear:
		return "bilinear"
	case Bicubic:
		return "bicubic"
	}
	return fmt.Sprintf("filter(%d)", int(f))
}

// Supported reports whether Resize implements f (Pillow's LANCZOS, BOX and
// HAMMING are not).
func (f Filter) Supported() bool { return f == Nearest || f == Bilinear || f == Bicubic }

// Resize is Pillow's Image.resize((w, h), f) (reducing_gap None), value for
// value: see resample.
func (m *RGB) Resize(w, h int, f Filter) *RGB {
	return &RGB{W: w, H: h, Pix: resample(m.Pix, m.W, m.H, 3, w, h, f)}
}

// Resize is Pillow's Image.resize((w, h), f) of an "L" image.
func (m *Gray) Resize(w, h int, f Filter) *Gray {
	return &Gray{W: w, H: h, Pix: resample(m.Pix, m.W, m.H, 1, w, h, f)}
}

// resample resizes a w x h image of c interleaved 8-bit channels to ow x oh
// as Pillow 9 does (libImaging/Resample.c and Geometry.c). Bilinear and
// bicubic are convolutions, widened by the scale factor when shrinking so
// that every source pixel counts (antialiasing). They run in two separable
// passes, horizontal first, with the weights in 22-bit fixed point and the
// result rounded and clipped to 8 bits after each pass: that intermediate
// rounding is why a float resize (libtorch's antialiased bicubic) misses
// about one value in ten by a level.
func resample(src []uint8, w, h, c, ow, oh int, f Filter) []uint8 {
	if ow <= 0 || oh <= 0 {
		panic(fmt.Sprintf("data: resize to %dx%d: sizes must be positive", ow, oh))
	}
	if !f.Supported() {
		panic(fmt.Sprintf("data: resize with %v: unsupported filter", f))
	}
	if ow == w && oh == h {
		return append([]uint8(nil), src...)
	}
	if f == Nearest {
		return resampleNearest(src, w, h, c, ow, oh)
	}
	k := resampleKernels[f]
	if ow != w {
		src = resampleRows(src, w, h, c, pillowWeights(w, ow, k), ow)
		w = ow
	}
	if oh != h {
		src = resampleColumns(src, w, c, pillowWeights(h, oh, k), oh)
	}
	return src
}

// precisionBits is the fixed-point precision of the weights: 8 bits are
// left for the pixel value and 2 for sums that overshoot (bicubic's
// negative lobes).
const precisionBits = 32 - 8 - 2

// resampleKernel is a filter and its support: its radius in source pixels
// when not shrinking.
type resampleKernel struct {
	fn      func(x float64) float64
	support float64
}

var resampleKernels = map[Filter]resampleKernel{
	Bilinear: {triangleFilter, 1},
	Bicubic:  {cubicFilter, 2},
}

func triangleFilter(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return 1 - x
	}
	return 0
}

// cubicFilter is Keys' cubicFilter convolution with a = -0.5, in Pillow's order of
// operations. The float64() conversions round each product, as x86-64 C
// does: they stop Go fusing multiply-adds on arm64 and elsewhere, which
// would change the last bit of a weight now and then.
func cubicFilter(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		t := float64((a+2)*x) - (a + 3)
		return float64(t*x*x) + 1
	}
	if x < 2 {
		t := float64((x-5)*x) + 8
		t = float64(t*x) - 4
		return t * a
	}
	return 0
}

// passWeights are one pass's weights: output pixel i is the weighted sum of
// input pixels start[i], start[i]+1, ... with weights fixed[i].
type passWeights struct {
	start []int
	fixed [][]int32
}

// pillowWeights is Pillow's precompute_coeffs followed by normalize_coeffs_8bpc
// for resizing n input pixels to out.
func pillowWeights(n, out int, k resampleKernel) passWeights {
	scale := float64(n) / float64(out)
	filterScale := max(scale, 1)
	support := k.support * filterScale
	invScale := 1 / filterScale
	pw := passWeights{start: make([]int, out), fixed: make([][]int32, out)}
	for i := range out {
		center := float64((float64(i) + 0.5) * scale)
		// Pillow rounds the bounds as (int)(x + 0.5), which truncates
		// towards zero below zero too; the clamp makes that harmless.
		lo := max(int(center-support+0.5), 0)
		hi := min(int(center+support+0.5), n)
		ws := make([]float64, hi-lo)
		sum := 0.0
		for j := range ws {
			ws[j] = k.fn((float64(lo+j) - center + 0.5) * invScale)
			sum += ws[j]
		}
		fixed := make([]int32, len(ws))
		for j, wt := range ws {
			if sum != 0 {
				wt /= sum
			}
			fixed[j] = toFixed(wt)
		}
		pw.start[i], pw.fixed[i] = lo, fixed
	}
	return pw
}

// toFixed rounds a weight half away from zero to precisionBits bits.
func toFixed(w float64) int32 {
	if w < 0 {
		return int32(w*(1<<precisionBits) - 0.5)
	}
	return int32(w*(1<<precisionBits) + 0.5)
}

// clip8 rounds a fixed-point sum (which started at one half) down to 8
// bits, clipping.
func clip8(sum int32) uint8 { return uint8(min(max(sum>>precisionBits, 0), 255)) }

// resampleRows is the horizontal pass: w x h to ow x h.
func resampleRows(src []uint8, w, h, c int, pw passWeights, ow int) []uint8 {
	dst := make([]uint8, ow*h*c)
	for y := range h {
		row := src[y*w*c : (y+1)*w*c]
		for x := range ow {
			ks, at := pw.fixed[x], pw.start[x]*c
			for ch := range c {
				sum := int32(1 << (precisionBits - 1))
				for j, k := range ks {
					sum += int32(row[at+j*c+ch]) * k
				}
				dst[(y*ow+x)*c+ch] = clip8(sum)
			}
		}
	}
	return dst
}

// resampleColumns is the vertical pass: w x h to w x oh.
func resampleColumns(src []uint8, w, c int, pw passWeights, oh int) []uint8 {
	stride := w * c
	dst := make([]uint8, oh*stride)
	for y := range oh {
		ks, top := pw.fixed[y], pw.start[y]
		out := dst[y*stride : (y+1)*stride]
		for i := range out {
			sum := int32(1 << (precisionBits - 1))
			for j, k := range ks {
				sum += int32(src[(top+j)*stride+i]) * k
			}
			out[i] = clip8(sum)
		}
	}
	return dst
}

// nearest is Pillow's NEAREST resize (ImagingScaleAffine): output pixel i
// takes source pixel floor((i + 1/2) * n/out), the position accumulated in
// float64 step by step as Pillow does. A position outside the source stays
// black.
func resampleNearest(src []uint8, w, h, c, ow, oh int) []uint8 {
	xs, ys := nearestSource(w, ow), nearestSource(h, oh)
	dst := make([]uint8, ow*oh*c)
	for y, sy := range ys {
		if sy < 0 {
			continue
		}
		for x, sx := range xs {
			if sx >= 0 {
				copy(dst[(y*ow+x)*c:(y*ow+x+1)*c], src[(sy*w+sx)*c:(sy*w+sx+1)*c])
			}
		}
	}
	return dst
}

// nearestSource maps each of out positions to a source index in [0, n), or
// -1 outside.
func nearestSource(n, out int) []int {
	step := float64(n) / float64(out)
	idx := make([]int, out)
	pos := step * 0.5
	for i := range idx {
		idx[i] = -1
		if pos >= 0 && int(pos) < n {
			idx[i] = int(pos)
		}
		pos += step
	}
	return idx
}
