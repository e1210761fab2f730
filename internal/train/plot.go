package train

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"slices"
	"strconv"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
)

// The loss plot: the raw loss of every logged row in a light line, its
// moving average in a dark one, a frame with grid lines at quarters, and
// the loss range and step range written at the corners in a small digit
// font (no font package needed).
const (
	plotW, plotH = 800, 400
	marginLeft   = 72
	marginRight  = 16
	marginTop    = 14
	marginBottom = 28
)

var (
	plotBackground = color.RGBA{255, 255, 255, 255}
	plotAxes       = color.RGBA{40, 40, 40, 255}
	plotGrid       = color.RGBA{225, 225, 225, 255}
	plotRaw        = color.RGBA{165, 195, 235, 255}
	plotSmooth     = color.RGBA{20, 60, 160, 255}
)

// writePlot draws rows and writes the PNG to path atomically.
func writePlot(path string, rows []LogRow) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, plotLoss(rows)); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, buf.Bytes())
}

// plotLoss draws the loss curve of rows.
func plotLoss(rows []LogRow) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fill(img, img.Bounds(), plotBackground)
	area := image.Rect(marginLeft, marginTop, plotW-marginRight, plotH-marginBottom)
	for q := range 5 {
		y := area.Min.Y + q*(area.Dy()-1)/4
		line(img, area.Min.X, y, area.Max.X-1, y, plotGrid)
	}
	line(img, area.Min.X, area.Min.Y, area.Min.X, area.Max.Y-1, plotAxes)
	line(img, area.Min.X, area.Max.Y-1, area.Max.X-1, area.Max.Y-1, plotAxes)
	// A diverged run logs NaN or Inf; what came before is still worth seeing.
	rows = slices.DeleteFunc(slices.Clone(rows), func(r LogRow) bool { return math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) })
	if len(rows) == 0 {
		return img
	}

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		lo, hi = math.Min(lo, r.Loss), math.Max(hi, r.Loss)
	}
	if hi-lo < 1e-12*math.Max(1, math.Abs(hi)) { // a flat curve: give it some height
		lo, hi = lo-0.5, hi+0.5
	}
	first, last := rows[0].Step, rows[len(rows)-1].Step
	px := func(step int) int {
		if last == first {
			return area.Min.X + area.Dx()/2
		}
		return area.Min.X + int(math.Round(float64(step-first)/float64(last-first)*float64(area.Dx()-1)))
	}
	py := func(v float64) int {
		return area.Max.Y - 1 - int(math.Round((v-lo)/(hi-lo)*float64(area.Dy()-1)))
	}
	polyline(img, rows, func(r LogRow) float64 { return r.Loss }, px, py, plotRaw)
	if len(rows) >= 10 {
		smooth := movingAverage(rows, max(2, len(rows)/25))
		polyline(img, smooth, func(r LogRow) float64 { return r.Loss }, px, py, plotSmooth)
	}

	label := func(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
	text(img, marginLeft-6-textWidth(label(hi)), area.Min.Y-1, label(hi), plotAxes)
	text(img, marginLeft-6-textWidth(label(lo)), area.Max.Y-glyphH, label(lo), plotAxes)
	text(img, area.Min.X, area.Max.Y+6, strconv.Itoa(first), plotAxes)
	text(img, area.Max.X-textWidth(strconv.Itoa(last)), area.Max.Y+6, strconv.Itoa(last), plotAxes)
	return img
}

// movingAverage is the mean loss over the window rows centred on each
// row (shorter at the ends): centred, so that the smooth curve does not
// lag behind the raw one.
func movingAverage(rows []LogRow, window int) []LogRow {
	prefix := make([]float64, len(rows)+1)
	for i, r := range rows {
		prefix[i+1] = prefix[i] + r.Loss
	}
	out := make([]LogRow, len(rows))
	for i, r := range rows {
		lo, hi := max(0, i-window/2), min(len(rows), i+window/2+1)
		out[i] = LogRow{Step: r.Step, Loss: (prefix[hi] - prefix[lo]) / float64(hi-lo)}
	}
	return out
}

func polyline(img *image.RGBA, rows []LogRow, value func(LogRow) float64, px func(int) int, py func(float64) int, c color.RGBA) {
	for i := range rows {
		x, y := px(rows[i].Step), py(value(rows[i]))
		if i == 0 {
			img.SetRGBA(x, y, c)
			continue
		}
		line(img, px(rows[i-1].Step), py(value(rows[i-1])), x, y, c)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws from (x0, y0) to (x1, y1) inclusive (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int { return max(v, -v) }

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// A 3x5 pixel font for numbers, drawn at twice its size.
const (
	glyphScale = 2
	glyphW     = 3 * glyphScale
	glyphH     = 5 * glyphScale
	glyphGap   = glyphScale
)

var glyphs = map[rune][5]string{
	'0': {"111", "101", "101", "101", "111"},
	'1': {"010", "110", "010", "010", "111"},
	'2': {"111", "001", "111", "100", "111"},
	'3': {"111", "001", "111", "001", "111"},
	'4': {"101", "101", "111", "001", "001"},
	'5': {"111", "100", "111", "001", "111"},
	'6': {"111", "100", "111", "101", "111"},
	'7': {"111", "001", "001", "001", "001"},
	'8': {"111", "101", "111", "101", "111"},
	'9': {"111", "101", "111", "001", "111"},
	'.': {"000", "000", "000", "000", "010"},
	'-': {"000", "000", "111", "000", "000"},
	'+': {"000", "010", "111", "010", "000"},
	'e': {"111", "100", "111", "100", "111"},
}

func textWidth(s string) int { return len(s)*(glyphW+glyphGap) - glyphGap }

// text writes s with its top-left corner at (x, y); runes without a
// glyph leave a gap.
func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		for row, bits := range glyphs[r] {
			for col, bit := range bits {
				if bit == '1' {
					fill(img, image.Rect(x+col*glyphScale, y+row*glyphScale, x+(col+1)*glyphScale, y+(row+1)*glyphScale), c)
				}
			}
		}
		x += glyphW + glyphGap
	}
}
