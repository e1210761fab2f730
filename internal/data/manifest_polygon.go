package data

import (
	"math"
	"slices"
)

// RasterisePolygons is the union of COCO polygons (each x1,y1,x2,y2,... in
// pixels, x right, y down) on a w x h mask, 255 inside: what pycocotools'
// annToMask makes of them (frPyObjects, then merge).
//
// Each polygon goes through polygonRLE, a line-by-line port of
// pycocotools' rleFrPoly, so that edge pixels fall on the same side as
// there; it is checked against hand-worked cases, as shared/golden has no
// pycocotools masks. In effect a pixel is inside when its centre is inside
// the polygon after the vertices are rounded (half up) to a 1/5-pixel
// grid, and a centre exactly on a slanted edge is inside when the edge is
// above it and outside when the edge is below it: the triangle
// (0,0),(8,0),(0,8) covers the 28 pixels with x+y < 7 and leaves out the 8
// whose centres are on its slanted edge, while (0,8),(8,0),(8,8) covers
// 36, those 8 included. A rectangle with integer corners (x0,y0)-(x1,y1)
// covers exactly columns x0..x1-1 and rows y0..y1-1. The one departure
// from the C: a repeated vertex makes it compute 0/0 and then ignore the
// result; here that point is the vertex itself, which changes nothing.
func RasterisePolygons(polys [][]float64, w, h int) *Gray {
	g := NewGray(w, h)
	for _, p := range polys {
		for i, v := range polygonRLE(p, h, w).Decode().Pix {
			g.Pix[i] |= v
		}
	}
	return g
}

// polygonRLE is rleFrPoly. It walks the polygon's outline on a grid five
// times finer than the pixels, keeps the points where the outline crosses a
// column of pixel centres, takes each as the start or end of a run down
// that column, and turns the sorted starts and ends into RLE counts.
func polygonRLE(xy []float64, h, w int) RLE {
	const scale = 5
	k := len(xy) / 2
	// The vertices on the fine grid, closed. int() truncates towards zero,
	// as C's cast does, so this is C's (int)(scale*x+.5) for negative
	// coordinates too.
	x, y := make([]int, k+1), make([]int, k+1)
	for j := range k {
		x[j] = int(float64(scale*xy[2*j]) + .5)
		y[j] = int(float64(scale*xy[2*j+1]) + .5)
	}
	x[k], y[k] = x[0], y[0]

	// Every fine-grid point along each edge, one per step along its
	// longer axis; an edge is walked from its lower end and emitted in
	// its own direction, so rounding is the same either way round.
	var u, v []int
	for j := range k {
		xs, xe, ys, ye := x[j], x[j+1], y[j], y[j+1]
		dx, dy := abs(xe-xs), abs(ys-ye)
		flip := (dx >= dy && xs > xe) || (dx < dy && ys > ye)
		if flip {
			xs, xe, ys, ye = xe, xs, ye, ys
		}
		if dx >= dy {
			s := 0.0 // a repeated vertex: see RasterisePolygons
			if dx > 0 {
				s = float64(ye-ys) / float64(dx)
			}
			for d := 0; d <= dx; d++ {
				t := d
				if flip {
					t = dx - d
				}
				u = append(u, t+xs)
				v = append(v, int(float64(ys)+float64(s*float64(t))+.5))
			}
		} else {
			s := float64(xe-xs) / float64(dy)
			for d := 0; d <= dy; d++ {
				t := d
				if flip {
					t = dy - d
				}
				v = append(v, t+ys)
				u = append(u, int(float64(xs)+float64(s*float64(t))+.5))
			}
		}
	}

	// Where the outline steps across a column of pixel centres, the run
	// down that column starts or ends at the first pixel centre below it.
	var ends []uint32
	for j := 1; j < len(u); j++ {
		if u[j] == u[j-1] {
			continue
		}
		xd := float64(u[j] - 1)
		if u[j] < u[j-1] {
			xd = float64(u[j])
		}
		xd = (xd+.5)/scale - .5
		if math.Floor(xd) != xd || xd < 0 || xd > float64(w-1) {
			continue
		}
		yd := (float64(min(v[j], v[j-1]))+.5)/scale - .5
		yd = math.Ceil(min(max(yd, 0), float64(h)))
		ends = append(ends, uint32(int(xd)*h+int(yd)))
	}

	// Sorted column-major positions, as differences, are the run lengths;
	// a zero-length run merges its neighbours.
	ends = append(ends, uint32(h*w))
	slices.Sort(ends)
	prev := uint32(0)
	for j, e := range ends {
		ends[j], prev = e-prev, e
	}
	counts := []uint32{ends[0]}
	for j := 1; j < len(ends); j++ {
		if ends[j] > 0 {
			counts = append(counts, ends[j])
			continue
		}
		if j++; j < len(ends) {
			counts[len(counts)-1] += ends[j]
		}
	}
	return RLE{H: h, W: w, Counts: counts}
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}
