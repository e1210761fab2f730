package guidance

import (
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

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

func TestTokenPositions(t *testing.T) {
	tok := loadTokenizer(t)
	for _, c := range []struct {
		words string
		want  []int64
	}{
		{"dog", []int64{2}},
		{"cat", []int64{5}},
		{"a", []int64{1}},        // the first occurrence
		{"a cat", []int64{4, 5}}, // several words: one run of tokens
		{"Grass", []int64{8}},    // as CLIP lowercases
		{"  on  the ", []int64{6, 7}},
	} {
		got, err := TokenPositions(tok, goldenPrompt, c.words)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("TokenPositions(%q) = %v, %v; want %v", c.words, got, err, c.want)
		}
	}
	_, err := TokenPositions(tok, goldenPrompt, "dogs")
	want := `subject words "dogs" are not among the prompt's tokens: a@1 dog@2 and@3 a@4 cat@5 on@6 the@7 grass@8`
	if err == nil || err.Error() != want {
		t.Errorf("missing word: %v\nwant %s", err, want)
	}
	if _, err := TokenPositions(tok, goldenPrompt, " "); err == nil || err.Error() != `subject words " " have no tokens` {
		t.Errorf("blank words: %v", err)
	}
	// A word split into several BPE pieces lists as a span.
	_, err = TokenPositions(tok, "a xylophonist plays", "cat")
	if err == nil || !strings.Contains(err.Error(), "tokens: a@1 xylophonist@2-") || !strings.Contains(err.Error(), " plays@") {
		t.Errorf("multi-piece word: %v", err)
	}
	t.Log(err)
}
