package main

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A subject's box is (x0, y0, x1, y1) in fractions of the image's width and
// height, y downwards: the same box fits any output size.

// parseBox reads "x0,y0,x1,y1" as --box gives it.
func parseBox(s string) ([]float64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return nil, fmt.Errorf("box %q: want four numbers x0,y0,x1,y1", s)
	}
	box := make([]float64, 4)
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, fmt.Errorf("box %q: %q is not a number", s, p)
		}
		box[i] = v
	}
	return box, nil
}

// checkBox accepts a box of four numbers inside [0, 1] that covers some area.
func checkBox(b []float64) error {
	switch {
	case len(b) != 4:
		return fmt.Errorf("box %v has %d numbers, want x0, y0, x1, y1", b, len(b))
	case slices.ContainsFunc(b, math.IsNaN):
		return fmt.Errorf("box %v is not a number", b)
	case min(b[0], b[1], b[2], b[3]) < 0 || max(b[0], b[1], b[2], b[3]) > 1:
		return fmt.Errorf("box %v lies outside [0, 1] (fractions of the width and height)", b)
	case b[0] >= b[2] || b[1] >= b[3]:
		return fmt.Errorf("box %v is empty: want x0 < x1 and y0 < y1", b)
	}
	return nil
}

// boxLineWidth is the thickness, in pixels, of a drawn box's outline.
const boxLineWidth = 2

// drawBoxes is a copy of img with each box outlined inside its edges in
// its subject's colour.
func drawBoxes(img *image.RGBA, boxes [][4]float64) *image.RGBA {
	out := image.NewRGBA(img.Bounds())
	copy(out.Pix, img.Pix)
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	for k, b := range boxes {
		r := pixelRect(b, w, h)
		c := boxColour(k)
		for _, edge := range []image.Rectangle{
			{r.Min, image.Pt(r.Max.X, r.Min.Y+boxLineWidth)}, // top
			{image.Pt(r.Min.X, r.Max.Y-boxLineWidth), r.Max}, // bottom
			{r.Min, image.Pt(r.Min.X+boxLineWidth, r.Max.Y)}, // left
			{image.Pt(r.Max.X-boxLineWidth, r.Min.Y), r.Max}, // right
		} {
			edge = edge.Intersect(r)
			for y := edge.Min.Y; y < edge.Max.Y; y++ {
				for x := edge.Min.X; x < edge.Max.X; x++ {
					out.SetRGBA(x, y, c)
				}
			}
		}
	}
	return out
}

// pixelRect is a box on a w x h image, at least one pixel in each
// direction so that a thin box still shows.
func pixelRect(b [4]float64, w, h int) image.Rectangle {
	x0, x1 := pixelSpan(b[0], b[2], w)
	y0, y1 := pixelSpan(b[1], b[3], h)
	return image.Rect(x0, y0, x1, y1)
}

func pixelSpan(a, b float64, n int) (lo, hi int) {
	lo = min(int(math.Round(a*float64(n))), n-1)
	hi = max(int(math.Round(b*float64(n))), lo+1)
	return lo, min(hi, n)
}

// boxColour is subject k's outline colour: fully saturated hues a golden
// angle apart, so that any number of subjects get colours far from those
// of the subjects before them.
func boxColour(k int) color.RGBA {
	hue := math.Mod(float64(k)*0.6180339887498949, 1) * 6
	sector := int(hue)
	rise := uint8(math.Round(255 * (hue - float64(sector))))
	fall := 255 - rise
	switch sector {
	case 0:
		return color.RGBA{255, rise, 0, 255}
	case 1:
		return color.RGBA{fall, 255, 0, 255}
	case 2:
		return color.RGBA{0, 255, rise, 255}
	case 3:
		return color.RGBA{0, fall, 255, 255}
	case 4:
		return color.RGBA{rise, 0, 255, 255}
	default:
		return color.RGBA{255, 0, fall, 255}
	}
}

// boxesPath is where the boxes version of the image at path goes:
// out.png -> out_boxes.png.
func boxesPath(path string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "_boxes" + ext
}
