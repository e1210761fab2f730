package data

import (
	"slices"
	"testing"
)

// The expected masks below are worked through rleFrPoly by hand. Vertices
// are scaled by 5; a column x of pixel centres is crossed where the
// outline steps between fine x = 5x+2 and 5x+3; there the run down that
// column starts (or ends) at row ceil((v+.5)/5-.5), v the upper of the two
// fine points.

// TestPolygonRectangle: (1,1),(5,1),(5,4),(1,4). Fine corners (5,5) and
// (25,20): both horizontal edges cross columns 1..4, at fine v = 5 (row
// ceil(0.6) = 1) and v = 20 (row ceil(3.6) = 4), so rows 1..3: 12 pixels,
// the pixels whose centres are inside.
func TestPolygonRectangle(t *testing.T) {
	m := RasterisePolygons([][]float64{{1, 1, 5, 1, 5, 4, 1, 4}}, 8, 6)
	for y := range 6 {
		for x := range 8 {
			want := x >= 1 && x <= 4 && y >= 1 && y <= 3
			if (m.At(x, y) == 255) != want {
				t.Fatalf("pixel (%d,%d) = %d", x, y, m.At(x, y))
			}
		}
	}
}

// TestPolygonTriangle: (0,0),(8,0),(0,8) on 10 x 10. The top edge crosses
// columns 0..7 at row 0. The slanted edge, walked from fine (40,0) to
// (0,40), is at v = 40-u; column n is crossed between u = 5n+3 and 5n+2,
// where the upper point has v = 37-5n, so the run ends at row
// ceil((37.5-5n)/5-.5) = 7-n. Column n has 7-n pixels: 7+6+...+1+0 = 28,
// those with x+y < 7; the 8 with x+y = 7 have their centres on the edge
// and are out. The column-major ends 0,7 | 10,16 | 20,25 | ... | 70,70
// and 100 give the counts below (column 7's empty run merges its
// neighbours).
func TestPolygonTriangle(t *testing.T) {
	tri := []float64{0, 0, 8, 0, 0, 8}
	r := polygonRLE(tri, 10, 10)
	want := []uint32{0, 7, 3, 6, 4, 5, 5, 4, 6, 3, 7, 2, 8, 1, 39}
	if !slices.Equal(r.Counts, want) {
		t.Fatalf("counts %v, want %v", r.Counts, want)
	}
	m := RasterisePolygons([][]float64{tri}, 10, 10)
	for y := range 10 {
		for x := range 10 {
			if (m.At(x, y) == 255) != (x+y < 7) {
				t.Fatalf("pixel (%d,%d) = %d", x, y, m.At(x, y))
			}
		}
	}
	// The same triangle walked the other way round is the same mask.
	if back := RasterisePolygons([][]float64{{0, 8, 8, 0, 0, 0}}, 10, 10); !slices.Equal(back.Pix, m.Pix) {
		t.Fatal("vertex order changes the mask")
	}
}

// TestPolygonTriangleBelowEdge: (0,8),(8,0),(8,8) has its slanted edge
// above the pixels: the run down column n starts where the edge is, fine
// v = 40-u taken at the upper point u = 5n+3, v = 37-5n, row 7-n. Column n
// has rows 7-n..7, n+1 pixels: 1+2+...+8 = 36, those with x+y >= 7, so
// the 8 centres on the edge are in.
func TestPolygonTriangleBelowEdge(t *testing.T) {
	m := RasterisePolygons([][]float64{{0, 8, 8, 0, 8, 8}}, 10, 10)
	for y := range 10 {
		for x := range 10 {
			if (m.At(x, y) == 255) != (x+y >= 7 && x < 8 && y < 8) {
				t.Fatalf("pixel (%d,%d) = %d", x, y, m.At(x, y))
			}
		}
	}
}

// TestPolygonsUnion: an annotation's polygons are one mask, as
// pycocotools merges them; a part wholly outside the image adds nothing.
func TestPolygonsUnion(t *testing.T) {
	m := RasterisePolygons([][]float64{
		{0, 0, 2, 0, 2, 2, 0, 2},
		{1, 1, 3, 1, 3, 3, 1, 3},
		{-4, -4, -1, -4, -1, -1},
	}, 4, 4)
	want := "" +
		"##.." +
		"###." +
		".##." +
		"...."
	for i, v := range m.Pix {
		if (v == 255) != (want[i] == '#') {
			t.Fatalf("pixel (%d,%d) = %d", i%4, i/4, v)
		}
	}
}
