package region

import (
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
	for _, c := range []struct{ lh, lw, n, h, w int64 }{{64, 64, 4096, 64, 64}, {64, 48, 192, 16, 12}, {16, 16, 4, 2, 2}, {16, 12, 4, 2, 2}, {9, 9, 25, 5, 5}} {
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
