package main

import (
	"image"
	"image/color"
	"image/draw"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestParseAndCheckBox(t *testing.T) {
	if b, err := parseBox(" 0.1, 0.2,0.6 ,0.9"); err != nil || !reflect.DeepEqual(b, []float64{0.1, 0.2, 0.6, 0.9}) {
		t.Fatalf("parseBox: %v %v", b, err)
	}
	for _, c := range []struct{ in, want string }{
		{"0.1,0.2,0.6", "four numbers"},
		{"0.1,0.2,0.6,0.9,1", "four numbers"},
		{"0.1,a,0.6,0.9", `"a" is not a number`},
	} {
		if _, err := parseBox(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseBox(%q): %v, want %q", c.in, err, c.want)
		}
	}
	for _, c := range []struct {
		box  []float64
		want string // "" for a good box
	}{
		{[]float64{0, 0, 1, 1}, ""},
		{[]float64{0.1, 0.2, 0.6, 0.9}, ""},
		{[]float64{0.1, 0.2, 0.6}, "3 numbers"},
		{[]float64{-0.1, 0.2, 0.6, 0.9}, "outside [0, 1]"},
		{[]float64{0.1, 0.2, 0.6, 1.5}, "outside [0, 1]"},
		{[]float64{0.6, 0.2, 0.6, 0.9}, "x0 < x1"},
		{[]float64{0.1, 0.9, 0.6, 0.2}, "y0 < y1"},
		{[]float64{0.1, math.NaN(), 0.6, 0.9}, "not a number"},
	} {
		err := checkBox(c.box)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("checkBox(%v): %v, want %q", c.box, err, c.want)
		}
	}
}

func TestDrawBoxes(t *testing.T) {
	grey := color.RGBA{128, 128, 128, 255}
	img := image.NewRGBA(image.Rect(0, 0, 40, 20))
	draw.Draw(img, img.Bounds(), image.NewUniform(grey), image.Point{}, draw.Src)
	// Subject 1 covers x 4..19 and y 5..14, subject 2 reaches the corner,
	// subject 3 is thinner than a pixel and still shows.
	out := drawBoxes(img, [][4]float64{{0.1, 0.25, 0.5, 0.75}, {0.5, 0.5, 1, 1}, {0.3, 0.1, 0.301, 0.2}})
	for _, c := range []struct {
		x, y int
		want color.RGBA
	}{
		{4, 5, boxColour(0)}, {5, 6, boxColour(0)}, {19, 14, boxColour(0)}, {12, 5, boxColour(0)}, {4, 10, boxColour(0)},
		{6, 7, grey}, {12, 10, grey}, {3, 5, grey}, {25, 8, grey}, // inside and outside the outlines
		{39, 19, boxColour(1)}, {38, 18, boxColour(1)}, {37, 17, grey},
		{12, 2, boxColour(2)}, {12, 3, boxColour(2)},
	} {
		if got := out.RGBAAt(c.x, c.y); got != c.want {
			t.Errorf("(%d, %d) is %v, want %v", c.x, c.y, got, c.want)
		}
	}
	if img.RGBAAt(4, 5) != grey {
		t.Error("drawBoxes drew on its input")
	}
}

func TestBoxColoursDiffer(t *testing.T) {
	seen := map[color.RGBA]int{}
	for k := range 30 {
		c := boxColour(k)
		if j, ok := seen[c]; ok {
			t.Fatalf("subjects %d and %d share colour %v", j+1, k+1, c)
		}
		seen[c] = k
	}
}

func TestBoxesPath(t *testing.T) {
	for in, want := range map[string]string{"out.png": "out_boxes.png", "a/b_1.png": "a/b_1_boxes.png", "out": "out_boxes"} {
		if got := boxesPath(in); got != want {
			t.Errorf("boxesPath(%q) = %q, want %q", in, got, want)
		}
	}
}
