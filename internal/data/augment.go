package data

import (
	"math"
	"math/rand/v2"
)

// Augment sets how far an image sample's DA-Encoder input is changed. A
// still image has no second frame to give another view of its subjects, so
// without this the reference would be the target's own pixels and the
// model would learn to paste them (paper III-E; IP-Adapter trains the same
// way). The colour ranges are torchvision ColorJitter's convention, the
// adjustments Pillow's (see Jitter).
type Augment struct {
	FlipProb float64 // chance of a horizontal flip
	// MinScale and MaxScale bound the zoom; below 1 the subject shrinks
	// inside the reference.
	MinScale, MaxScale float64
	MaxAngle           float64 // rotation up to this many degrees either way
	MaxShift           float64 // translation up to this fraction of the side, each axis, either way
	// Brightness, Contrast and Saturation draw a factor uniformly from
	// [1-v, 1+v] (never below 0); Hue draws a shift from [-v, v] turns,
	// v at most 0.5.
	Brightness, Contrast, Saturation, Hue float64
}

// DefaultAugment is mild: the subject must stay recognisably itself, and
// the reference is already a tight crop, so a large zoom or shift would cut
// it off.
func DefaultAugment() Augment {
	return Augment{
		FlipProb: 0.5,
		MinScale: 0.8, MaxScale: 1.05,
		MaxAngle:   10,
		MaxShift:   0.08,
		Brightness: 0.3, Contrast: 0.3, Saturation: 0.3, Hue: 0.05,
	}
}

// Geometry is one draw of the geometric augmentation. It maps a point p of
// a w x h image to c + shift + Scale * R(Angle) * F(p - c), c the image's
// centre and F the flip, if any, of x.
type Geometry struct {
	Flip           bool
	Scale          float64 // zoom, above 0
	Angle          float64 // degrees, anticlockwise as seen, as Pillow's rotate
	ShiftX, ShiftY float64 // fractions of the width and height, y down
}

// Apply augments a reference: the colours, then the geometry, with
// the box found again in the moved mask. A draw that moves the subject off
// the image is drawn again, and after a few such draws the geometry is
// left alone, so the result always shows the subject.
func (a Augment) Apply(r *rand.Rand, ref Ref) Ref {
	ref = a.drawJitter(r).Apply(ref)
	for range 8 {
		if out, ok := a.drawGeometry(r).Apply(ref); ok {
			return out
		}
	}
	return ref
}

func (a Augment) drawGeometry(r *rand.Rand) Geometry {
	return Geometry{
		Flip:   r.Float64() < a.FlipProb,
		Scale:  a.MinScale + r.Float64()*(a.MaxScale-a.MinScale),
		Angle:  symmetric(r, a.MaxAngle),
		ShiftX: symmetric(r, a.MaxShift),
		ShiftY: symmetric(r, a.MaxShift),
	}
}

// symmetric is uniform in [-v, v].
func symmetric(r *rand.Rand, v float64) float64 { return (2*r.Float64() - 1) * v }

// Apply moves the image (bilinear, white where it comes from outside) and
// the mask (nearest, so it stays binary) by the same map, and boxes the
// moved mask: the box is the mask's bounding box, so the mask is inside it
// by construction. ok is false when no pixel of the mask is left.
func (g Geometry) Apply(ref Ref) (out Ref, ok bool) {
	w, h := ref.Image.W, ref.Image.H
	out = Ref{Image: NewRGB(w, h), Mask: NewGray(w, h)}
	rad := g.Angle * math.Pi / 180
	cos, sin := math.Cos(rad), math.Sin(rad)
	cx, cy := float64(w)/2, float64(h)/2
	tx, ty := g.ShiftX*float64(w), g.ShiftY*float64(h)
	for y := range h {
		for x := range w {
			// The inverse map, from the output pixel's centre to where
			// it comes from: unshift, unrotate, unscale, unflip. With
			// only a flip this lands exactly on the mirrored pixel's
			// centre, so image and mask are mirrored exactly.
			qx := float64(x) + .5 - cx - tx
			qy := float64(y) + .5 - cy - ty
			px := (cos*qx - sin*qy) / g.Scale
			py := (sin*qx + cos*qy) / g.Scale
			if g.Flip {
				px = -px
			}
			px, py = px+cx, py+cy
			i := y*w + x
			out.Image.Pix[3*i], out.Image.Pix[3*i+1], out.Image.Pix[3*i+2] = bilinearWhite(ref.Image, px-.5, py-.5)
			if mx, my := int(math.Floor(px)), int(math.Floor(py)); mx >= 0 && mx < w && my >= 0 && my < h {
				out.Mask.Pix[i] = ref.Mask.Pix[my*w+mx]
			}
		}
	}
	out.Box, ok = maskBox(out.Mask)
	return out, ok
}

// bilinearWhite samples m at (x, y) in pixel-index coordinates, white
// beyond the edges.
func bilinearWhite(m *RGB, x, y float64) (r, g, b uint8) {
	x0, y0 := math.Floor(x), math.Floor(y)
	fx, fy := x-x0, y-y0
	var acc [3]float64
	for _, n := range [4]struct {
		dx, dy int
		wt     float64
	}{{0, 0, (1 - fx) * (1 - fy)}, {1, 0, fx * (1 - fy)}, {0, 1, (1 - fx) * fy}, {1, 1, fx * fy}} {
		if n.wt == 0 {
			continue
		}
		sx, sy := int(x0)+n.dx, int(y0)+n.dy
		for c := range 3 {
			v := 255.0
			if sx >= 0 && sx < m.W && sy >= 0 && sy < m.H {
				v = float64(m.Pix[(sy*m.W+sx)*3+c])
			}
			acc[c] += n.wt * v
		}
	}
	return uint8(min(acc[0]+.5, 255)), uint8(min(acc[1]+.5, 255)), uint8(min(acc[2]+.5, 255))
}

// maskBox is the normalised bounding box of a mask's inside pixels.
func maskBox(m *Gray) (Box, bool) {
	x0, y0, x1, y1 := m.W, m.H, -1, -1
	for y := range m.H {
		for x, v := range m.Pix[y*m.W : (y+1)*m.W] {
			if v != 0 {
				x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
			}
		}
	}
	if x1 < 0 {
		return Box{}, false
	}
	w, h := float64(m.W), float64(m.H)
	return Box{float64(x0) / w, float64(y0) / h, float64(x1+1) / w, float64(y1+1) / h}, true
}
