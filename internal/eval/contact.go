package eval

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
	"github.com/lcpdiff/lcpdiff/internal/data"
)

// Contact sheets show a run at a glance: the generated images in a grid,
// in record order, each with its requested boxes and, per subject, the
// detection that COCO matching tries first (the best-scoring one of the
// subject's detector classes), so a layout miss is visible without reading
// numbers.

const (
	// ContactSheetImages is the most images one sheet holds.
	ContactSheetImages = 64
	contactColumns     = 8
	contactThumb       = 160 // a thumbnail's longer side, pixels
	contactGap         = 4
	contactLine        = 2 // box outline width, pixels
)

var (
	contactBackground = color.RGBA{40, 40, 40, 255}
	// Requested boxes, then detections, per subject (first, second, ...).
	requestedColours = []color.RGBA{{0, 230, 0, 255}, {0, 200, 255, 255}}
	detectedColours  = []color.RGBA{{255, 40, 40, 255}, {255, 0, 255, 255}}
)

// writeContactSheets draws the sheets of the run's items into out/contact/
// and returns their paths relative to out. Sheets a previous, longer run
// left there are removed.
func writeContactSheets(out string, sum *Summary, items []Item, recs map[string]*Record) ([]string, error) {
	dir := filepath.Join(out, contactDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	classes := map[string][]string{}
	for _, s := range sum.Subjects {
		classes[s.Name] = s.DetectorClasses
	}
	var paths []string
	for first := 0; first < len(items); first += ContactSheetImages {
		batch := items[first:min(first+ContactSheetImages, len(items))]
		sheet, err := contactSheet(out, batch, recs, classes)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, sheet); err != nil {
			return nil, err
		}
		rel := filepath.ToSlash(filepath.Join(contactDir, fmt.Sprintf("sheet-%03d.png", len(paths)+1)))
		if err := atomicfile.WriteFile(filepath.Join(out, rel), buf.Bytes()); err != nil {
			return nil, err
		}
		paths = append(paths, rel)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "sheet-*.png"))
	for _, p := range old {
		if rel := filepath.ToSlash(filepath.Join(contactDir, filepath.Base(p))); !slices.Contains(paths, rel) {
			os.Remove(p)
		}
	}
	return paths, nil
}

// contactSheet draws one sheet.
func contactSheet(out string, items []Item, recs map[string]*Record, classes map[string][]string) (*image.RGBA, error) {
	cols := min(contactColumns, len(items))
	rows := (len(items) + cols - 1) / cols
	step := contactThumb + contactGap
	sheet := image.NewRGBA(image.Rect(0, 0, cols*step+contactGap, rows*step+contactGap))
	fill(sheet, sheet.Bounds(), contactBackground)
	for n, it := range items {
		rec := recs[it.ID]
		img, err := data.ReadImage(filepath.Join(out, filepath.FromSlash(rec.Image)))
		if err != nil {
			return nil, fmt.Errorf("contact sheet: record %s: %w", rec.ID, err)
		}
		thumb := thumbnail(img)
		origin := image.Pt(contactGap+(n%cols)*step, contactGap+(n/cols)*step)
		r := image.Rectangle{Min: origin, Max: origin.Add(image.Pt(thumb.W, thumb.H))}
		for y := range thumb.H {
			for x := range thumb.W {
				p := thumb.Pix[3*(y*thumb.W+x):]
				sheet.SetRGBA(r.Min.X+x, r.Min.Y+y, color.RGBA{p[0], p[1], p[2], 255})
			}
		}
		for k, s := range rec.Subjects {
			outline(sheet, boxRect(s.Box, r), requestedColours[k%len(requestedColours)])
		}
		for k, s := range rec.Subjects {
			if d, ok := bestDetection(rec.Detections, classes[s.Name]); ok {
				outline(sheet, boxRect(d.Box, r), detectedColours[k%len(detectedColours)])
			}
		}
	}
	return sheet, nil
}

// thumbnail fits img in contactThumb pixels: Pillow's bilinear to shrink,
// nearest to enlarge (a tiny test image stays crisp).
func thumbnail(img *data.RGB) *data.RGB {
	scale := float64(contactThumb) / float64(max(img.W, img.H))
	w, h := max(1, int(float64(img.W)*scale+0.5)), max(1, int(float64(img.H)*scale+0.5))
	if scale < 1 {
		return img.Resize(w, h, data.Bilinear)
	}
	return img.Resize(w, h, data.Nearest)
}

// bestDetection is the highest-scoring detection of one of classes.
func bestDetection(dets []DetectedBox, classes []string) (DetectedBox, bool) {
	var best DetectedBox
	found := false
	for _, d := range dets {
		if slices.ContainsFunc(classes, func(c string) bool { return strings.EqualFold(c, d.Class) }) && (!found || d.Score > best.Score) {
			best, found = d, true
		}
	}
	return best, found
}

// boxRect places a normalised box on the thumbnail at r, at least one
// pixel each way.
func boxRect(b [4]float64, r image.Rectangle) image.Rectangle {
	w, h := float64(r.Dx()), float64(r.Dy())
	x0, y0 := r.Min.X+int(b[0]*w+0.5), r.Min.Y+int(b[1]*h+0.5)
	x1, y1 := r.Min.X+int(b[2]*w+0.5), r.Min.Y+int(b[3]*h+0.5)
	return image.Rect(x0, y0, max(x1, x0+1), max(y1, y0+1)).Intersect(r)
}

// outline draws r's border, contactLine pixels wide, inside r.
func outline(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for _, edge := range []image.Rectangle{
		{r.Min, image.Pt(r.Max.X, r.Min.Y+contactLine)},
		{image.Pt(r.Min.X, r.Max.Y-contactLine), r.Max},
		{r.Min, image.Pt(r.Min.X+contactLine, r.Max.Y)},
		{image.Pt(r.Max.X-contactLine, r.Min.Y), r.Max},
	} {
		fill(img, edge.Intersect(r), c)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}
