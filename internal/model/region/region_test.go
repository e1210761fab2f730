package region

import (
	"slices"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestBoxMaskCellRule(t *testing.T) {
	for _, c := range []struct {
		box  [4]float64
		n    int64
		want []float32 // one row (the box spans all rows)
	}{
		{[4]float64{0.25, 0, 0.75, 1}, 4, []float32{0, 1, 1, 0}},
		{[4]float64{0.3, 0, 0.6, 1}, 4, []float32{0, 1, 1, 0}}, // floor 1.2 = 1, ceil 2.4 = 3
		{[4]float64{0.5, 0, 0.5, 1}, 4, []float32{0, 0, 1, 0}}, // empty: one cell from lo
		{[4]float64{1, 0, 1, 1}, 4, []float32{0, 0, 0, 1}},     // empty at the border: the last cell
		{[4]float64{-0.5, 0, 2, 1}, 4, []float32{1, 1, 1, 1}},  // clamped
	} {
		got := BoxMask(c.box, c.n, c.n).Float32s()[:c.n]
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("box %v at %d: row %v, want %v", c.box, c.n, got, c.want)
				break
			}
		}
	}
}

func TestGrid(t *testing.T) {
	// A 60x44 latent's levels are 60x44, 30x22, 15x11 and 8x6 (ceil at each
	// stride-2 step), which no single factor describes.
	for _, c := range []struct{ lh, lw, n, h, w int64 }{
		{60, 44, 60 * 44, 60, 44}, {60, 44, 30 * 22, 30, 22}, {60, 44, 15 * 11, 15, 11}, {60, 44, 8 * 6, 8, 6}, {1, 1, 1, 1, 1}, {64, 64, 4096, 64, 64}, {64, 48, 192, 16, 12}, {16, 16, 4, 2, 2}, {16, 12, 4, 2, 2}, {9, 9, 25, 5, 5}} {
		h, w, err := Grid(c.lh, c.lw, c.n)
		if err != nil || h != c.h || w != c.w {
			t.Errorf("Grid(%d, %d, %d) = %d, %d, %v", c.lh, c.lw, c.n, h, w, err)
		}
	}
	if _, _, err := Grid(64, 64, 1000); err == nil {
		t.Error("1000 tokens made a grid of 64x64")
	}
}

func TestResizeMask(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := make([]float32, 64*64)
	m[10*64+50] = 1 // a one-pixel subject: still one cell at 4x4
	got := ResizeMask(torch.New(m, 1, 1, 64, 64), 4, 4).Float32s()
	cells := 0
	for _, v := range got {
		cells += int(v)
	}
	if cells != 1 || got[0*4+3] != 1 {
		t.Fatalf("tiny subject at 4x4: %v", got)
	}
	if ResizeMask(torch.Zeros(1, 1, 64, 64), 4, 4).Sum().Item() != 0 {
		t.Fatal("an empty mask gained cells")
	}
}

// TestBoxBounds walks the spec's cell rule through its edge cases.
func TestBoxBounds(t *testing.T) {
	for _, c := range []struct {
		name string
		box  [4]float64
		h, w int
		want Bounds
	}{
		{"golden dog at 4", [4]float64{0.05, 0.3, 0.45, 0.95}, 4, 4, Bounds{0, 2, 1, 4}},
		{"golden cat at 2", [4]float64{0.55, 0.3, 0.95, 0.95}, 2, 2, Bounds{1, 2, 0, 2}},
		{"whole image", [4]float64{0, 0, 1, 1}, 8, 8, Bounds{0, 8, 0, 8}},
		{"edges on cell borders", [4]float64{0.25, 0.5, 0.5, 0.75}, 4, 4, Bounds{1, 2, 2, 3}},
		{"non-square grid", [4]float64{0.25, 0.5, 0.5, 0.75}, 4, 8, Bounds{2, 4, 2, 3}},
		{"beyond the image clamps", [4]float64{-0.5, -1, 1.5, 2}, 4, 4, Bounds{0, 4, 0, 4}},
		{"huge values do not overflow", [4]float64{-1e300, -1e300, 1e300, 1e300}, 4, 4, Bounds{0, 4, 0, 4}},
		// empty: hi <= lo, so hi = lo + 1
		{"zero width inside", [4]float64{0.3, 0.6, 0.3, 0.6}, 4, 4, Bounds{1, 2, 2, 3}},
		{"zero width on a border", [4]float64{0.5, 0.5, 0.5, 0.5}, 4, 4, Bounds{2, 3, 2, 3}},
		{"inverted", [4]float64{0.8, 0.9, 0.2, 0.1}, 4, 4, Bounds{3, 4, 3, 4}},
		// empty at the far edge: hi = min(lo + 1, n) is still empty, so lo = hi - 1
		{"zero width at the right and bottom edge", [4]float64{1, 1, 1, 1}, 4, 4, Bounds{3, 4, 3, 4}},
		{"entirely right of and below the image", [4]float64{1.2, 1.5, 1.4, 3}, 4, 4, Bounds{3, 4, 3, 4}},
		{"entirely left of and above the image", [4]float64{-0.5, -0.4, -0.2, -0.1}, 4, 4, Bounds{0, 1, 0, 1}},
		{"zero width at the left edge", [4]float64{0, 0, 0, 0}, 2, 2, Bounds{0, 1, 0, 1}},
		{"one-cell grid", [4]float64{0.2, 0.2, 0.4, 0.4}, 1, 1, Bounds{0, 1, 0, 1}},
	} {
		if got := BoxBounds(c.box, c.h, c.w); got != c.want {
			t.Errorf("%s: BoxBounds(%v, %d, %d) = %+v, want %+v", c.name, c.box, c.h, c.w, got, c.want)
		}
	}
}

// TestMaskAndCorners: a box's mask, projections and corner bands, at
// the border (the band is cut off there) and for a one-cell box (both
// edges' bands coincide).
func TestMaskAndCorners(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	b := Bounds{LoX: 0, HiX: 2, LoY: 1, HiY: 4} // columns 0-1, rows 1-3 of a 4 x 5 grid (h = 4, w = 5)
	wantMask := []float32{
		0, 0, 0, 0, 0,
		1, 1, 0, 0, 0,
		1, 1, 0, 0, 0,
		1, 1, 0, 0, 0,
	}
	for _, c := range []struct {
		name      string
		got       *torch.Tensor
		want      []float32
		wantShape []int64
	}{
		{"mask", b.Mask(4, 5), wantMask, []int64{4, 5}},
		{"m_x", b.ProjX(5), []float32{1, 1, 0, 0, 0}, []int64{5}},
		{"m_y", b.ProjY(4), []float32{0, 1, 1, 1}, []int64{4}},
		// |j - 0| <= 1 or |j - 1| <= 1
		{"v_x at the left border", b.CornerX(5), []float32{1, 1, 1, 0, 0}, []int64{5}},
		// |i - 1| <= 1 or |i - 3| <= 1: the bands meet
		{"v_y at the bottom border", b.CornerY(4), []float32{1, 1, 1, 1}, []int64{4}},
		{"v_x of one middle cell", Bounds{LoX: 4, HiX: 5}.CornerX(9), []float32{0, 0, 0, 1, 1, 1, 0, 0, 0}, []int64{9}},
		{"v_x of a wide box", Bounds{LoX: 1, HiX: 8}.CornerX(9), []float32{1, 1, 1, 0, 0, 0, 1, 1, 1}, []int64{9}},
	} {
		if !slices.Equal(c.got.Shape(), c.wantShape) || !slices.Equal(c.got.Float32s(), c.want) {
			t.Errorf("%s: %v %v, want %v %v", c.name, c.got.Shape(), c.got.Float32s(), c.wantShape, c.want)
		}
	}
}

func TestGridOfUnevenLatents(t *testing.T) {
	for _, c := range []struct{ n, lh, lw, h, w int64 }{
		{256, 16, 16, 16, 16}, {64, 16, 16, 8, 8}, {4, 16, 16, 2, 2},
		{8 * 6, 15, 11, 8, 6}, {4 * 3, 15, 11, 4, 3}, {2 * 2, 15, 11, 2, 2}, {1, 15, 11, 1, 1},
		{64 * 48, 64, 48, 64, 48}, {8 * 6, 64, 48, 8, 6},
	} {
		h, w, err := Grid(c.lh, c.lw, c.n)
		if err != nil || h != c.h || w != c.w {
			t.Errorf("Grid(%d, %dx%d) = %dx%d, %v; want %dx%d", c.n, c.lh, c.lw, h, w, err, c.h, c.w)
		}
	}
	if _, _, err := Grid(16, 16, 50); err == nil {
		t.Error("Grid(50, 16x16) found a grid")
	}
}
