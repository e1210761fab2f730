package data

import (
	"math"
	"math/rand/v2"
)

// The toy world draws without anti-aliasing: a pixel belongs to a subject
// exactly when its centre is inside the subject's shape, so masks and boxes
// are exact and a model's box and mask errors can be measured to the pixel.

// toyShapes, toyTextures and toyColours are what identities are made of;
// their order is part of the dataset (identity ids, palettes).
var (
	toyShapes   = []string{"circle", "square", "triangle", "star", "ring", "cross"}
	toyTextures = []string{"solid", "stripes", "dots", "checks"}
	// toyTextureWords are the textures as the caption says them.
	toyTextureWords = map[string]string{"solid": "solid", "stripes": "striped", "dots": "dotted", "checks": "checked"}
	toyColours      = []struct {
		name string
		rgb  [3]uint8
	}{
		{"red", [3]uint8{215, 40, 40}},
		{"blue", [3]uint8{40, 80, 215}},
		{"green", [3]uint8{40, 160, 60}},
		{"yellow", [3]uint8{240, 205, 35}},
		{"orange", [3]uint8{240, 135, 25}},
		{"purple", [3]uint8{135, 55, 185}},
	}
)

// pose is where a subject is in one frame: centre and radius in pixels
// (the shape fits the circle of that radius), rotation in radians.
type pose struct{ cx, cy, r, angle float64 }

// insideShape says whether (u, v), in the shape's own coordinates (the
// unit circle around it), is inside the shape. Every shape fits the unit
// circle, so a pose's circle bounds it at any rotation.
func insideShape(shape string, u, v float64) bool {
	switch shape {
	case "circle":
		return u*u+v*v <= 1
	case "ring":
		d := u*u + v*v
		return d <= 1 && d >= 0.55*0.55
	case "square":
		return math.Abs(u) <= 0.7 && math.Abs(v) <= 0.7
	case "cross":
		au, av := math.Abs(u), math.Abs(v)
		return (au <= 0.3 && av <= 0.9) || (av <= 0.3 && au <= 0.9)
	case "triangle":
		return insidePolygon(trianglePoints, u, v)
	case "star":
		return insidePolygon(starPoints, u, v)
	}
	panic("toy world: unknown shape " + shape)
}

// trianglePoints and starPoints are polygons on the unit circle, pointing
// up (v is down, as in the image).
var (
	trianglePoints = regularPoints(3, 1, 1)
	starPoints     = regularPoints(10, 1, 0.42)
)

// regularPoints is n points around the origin, alternating radius r0 and
// r1, the first straight up.
func regularPoints(n int, r0, r1 float64) [][2]float64 {
	pts := make([][2]float64, n)
	for i := range pts {
		r := r0
		if i%2 == 1 {
			r = r1
		}
		a := -math.Pi/2 + 2*math.Pi*float64(i)/float64(n)
		pts[i] = [2]float64{r * math.Cos(a), r * math.Sin(a)}
	}
	return pts
}

// insidePolygon is the even-odd rule.
func insidePolygon(pts [][2]float64, u, v float64) bool {
	in := false
	for i, j := 0, len(pts)-1; i < len(pts); j, i = i, i+1 {
		a, b := pts[i], pts[j]
		if (a[1] > v) != (b[1] > v) && u < (b[0]-a[0])*(v-a[1])/(b[1]-a[1])+a[0] {
			in = !in
		}
	}
	return in
}

// textureColour picks which of the identity's two colours (0 or 1) is at
// (u, v) in the shape's coordinates, so the texture turns and scales with
// the subject and stays part of its identity.
func textureColour(shape, texture string, u, v float64) int {
	switch texture {
	case "solid": // the first colour, rimmed with the second
		if insideShape(shape, u/0.78, v/0.78) {
			return 0
		}
		return 1
	case "stripes":
		return int(math.Floor((u+1)*2.5)) & 1
	case "dots":
		gu, gv := u/0.6-math.Round(u/0.6), v/0.6-math.Round(v/0.6)
		if gu*gu+gv*gv < 0.33*0.33 {
			return 0
		}
		return 1
	case "checks":
		return (int(math.Floor((u+1)*2)) + int(math.Floor((v+1)*2))) & 1
	}
	panic("toy world: unknown texture " + texture)
}

// drawSubject paints an identity at p onto img and returns its mask.
func drawSubject(img *RGB, id Identity, p pose) *Gray {
	mask := NewGray(img.W, img.H)
	cos, sin := math.Cos(p.angle), math.Sin(p.angle)
	x0, x1 := max(int(p.cx-p.r), 0), min(int(p.cx+p.r)+1, img.W-1)
	y0, y1 := max(int(p.cy-p.r), 0), min(int(p.cy+p.r)+1, img.H-1)
	for y := y0; y <= y1; y++ {
		for x := x0; x <= x1; x++ {
			dx, dy := float64(x)+.5-p.cx, float64(y)+.5-p.cy
			u, v := (cos*dx+sin*dy)/p.r, (cos*dy-sin*dx)/p.r
			if !insideShape(id.Shape, u, v) {
				continue
			}
			c := id.RGB[textureColour(id.Shape, id.Texture, u, v)]
			i := y*img.W + x
			mask.Pix[i] = 255
			copy(img.Pix[3*i:3*i+3], c[:])
		}
	}
	return mask
}

// toyBackgrounds are the grounds a scene can be on, with the words the
// caption ends with.
var toyBackgrounds = []struct{ name, words string }{
	{"grass", "on grass"}, {"sand", "on sand"}, {"water", "on water"}, {"snow", "in snow"},
}

// drawBackground is a size x size procedural ground: noise and a pattern
// around a base colour, so that a model must separate subject from ground
// rather than key out a flat colour.
func drawBackground(name string, size int, r *rand.Rand) *RGB {
	img := NewRGB(size, size)
	phase := r.Float64() * 2 * math.Pi
	for y := range size {
		for x := range size {
			fx, fy := float64(x), float64(y)
			n := r.Float64()*2 - 1 // per-pixel noise in [-1, 1]
			var c [3]float64
			switch name {
			case "grass": // green noise with fine vertical streaks
				c = [3]float64{70 + 12*n, 140 + 30*n + 12*math.Sin(fx*1.3+phase), 50 + 10*n}
			case "sand": // fine grain and ripples
				rip := 10 * math.Sin(fy*0.45+0.15*fx+phase)
				c = [3]float64{214 + 8*n + rip, 190 + 8*n + rip, 140 + 8*n + rip}
			case "water": // waves
				wave := 22 * math.Sin(fx*0.25+2*math.Sin(fy*0.18+phase))
				c = [3]float64{40 + 6*n + 0.3*wave, 100 + 6*n + 0.6*wave, 175 + 6*n + wave}
			case "snow": // white with grey speckles
				s := 0.0
				if r.Float64() < 0.06 {
					s = 30
				}
				c = [3]float64{242 + 4*n - s, 244 + 4*n - s, 250 + 3*n - s*0.8}
			default:
				panic("toy world: unknown background " + name)
			}
			for k := range 3 {
				img.Pix[(y*size+x)*3+k] = uint8(min(max(math.Round(c[k]), 0), 255))
			}
		}
	}
	return img
}

// RenderSubject paints an identity onto img, its shape fitting the circle
// of radius r around (cx, cy) turned by angle radians, exactly as the toy
// world draws it, and returns its mask: what evaluation compares a
// generated subject with.
func RenderSubject(img *RGB, id Identity, cx, cy, r, angle float64) *Gray {
	return drawSubject(img, id, pose{cx: cx, cy: cy, r: r, angle: angle})
}

// ToyColour is one of the toy world's named colours.
type ToyColour struct {
	Name string
	RGB  [3]uint8
}

// ToyPalette is the toy world's colours, in identity order.
func ToyPalette() []ToyColour {
	out := make([]ToyColour, len(toyColours))
	for i, c := range toyColours {
		out[i] = ToyColour{c.name, c.rgb}
	}
	return out
}

// ToyGround is one of the toy world's backgrounds: its name, the words a
// caption ends with, and its mean colour.
type ToyGround struct {
	Name, Words string
	RGB         [3]uint8
}

// ToyGrounds lists the backgrounds with the mean colours drawBackground
// draws them around.
func ToyGrounds() []ToyGround {
	mean := map[string][3]uint8{"grass": {70, 140, 50}, "sand": {214, 190, 140}, "water": {40, 100, 175}, "snow": {240, 242, 248}}
	out := make([]ToyGround, len(toyBackgrounds))
	for i, b := range toyBackgrounds {
		out[i] = ToyGround{b.name, b.words, mean[b.name]}
	}
	return out
}
