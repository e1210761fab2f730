package eval

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

// The toy world's subjects are flat two-colour shapes on grounds whose
// colours differ from every palette colour, so a detector needs no
// learning: it labels each pixel with the nearest of the six palette
// colours and the image's own ground (subjectLabels) and finds the
// subjects as connected regions of a palette's two colours. Its classes
// are the palettes as unordered colour pairs: the layout metric asks
// whether a subject of the requested look stands in the requested box,
// and the identity score asks the finer question of which identity it is.

// ToyDetection is one subject the palette detector found.
type ToyDetection struct {
	Box   [4]float64 // normalised x0, y0, x1, y1
	Score float64
	Class int // index in PaletteClasses
}

// PaletteClasses are the detector's classes: every unordered pair of
// palette colours, "blue-red" with the names in palette order.
func PaletteClasses() []string {
	p := data.ToyPalette()
	var classes []string
	for i := range p {
		for j := i + 1; j < len(p); j++ {
			classes = append(classes, p[i].Name+"-"+p[j].Name)
		}
	}
	return classes
}

// PaletteClass is the detector class of an identity.
func PaletteClass(id data.Identity) int {
	i, j := colourIndex(id.Palette[0]), colourIndex(id.Palette[1])
	return pairClass(min(i, j), max(i, j))
}

func colourIndex(name string) int {
	return slices.IndexFunc(data.ToyPalette(), func(c data.ToyColour) bool { return c.Name == name })
}

// pairClass is the index of the pair i < j in PaletteClasses.
func pairClass(i, j int) int {
	n := len(data.ToyPalette())
	return i*n - i*(i+1)/2 + (j - i - 1)
}

// Pixel labels: 0..5 the palette colours, 6.. the grounds.
const groundLabel = 6

// toyLabels labels every pixel with its nearest toy-world colour, any
// ground included: the question GroundOf asks.
func toyLabels(img *data.RGB) []int8 {
	var protos [][3]uint8
	for _, c := range data.ToyPalette() {
		protos = append(protos, c.RGB)
	}
	for _, g := range data.ToyGrounds() {
		protos = append(protos, g.RGB)
	}
	return nearestLabels(img, protos)
}

// subjectLabels labels every pixel with the nearest of the palette colours
// and the image's own ground (the one most pixels are nearest to): the
// labels the detector and the identity score read. A scene has one ground,
// so a pixel nearer another ground is a subject's colour pulled toward it:
// the green palette colour is 37 RGB levels from grass, and while every
// ground competed for every pixel, generated green subjects pulled toward
// grass went missing on any ground (120 validation clips: 39% of the green
// subjects not found against 5% of the others; 31% and 3% with this).
func subjectLabels(img *data.RGB) []int8 {
	labels := toyLabels(img)
	grounds := data.ToyGrounds()
	counts := make([]int, len(grounds))
	for _, l := range labels {
		if l >= groundLabel {
			counts[l-groundLabel]++
		}
	}
	own := slices.Index(counts, slices.Max(counts))
	// A pixel nearest a palette colour or the own ground among every
	// colour is nearest it among these too: only the others move.
	var protos [][3]uint8
	for _, c := range data.ToyPalette() {
		protos = append(protos, c.RGB)
	}
	protos = append(protos, grounds[own].RGB)
	for i, l := range labels {
		if l >= groundLabel && int(l-groundLabel) != own {
			if k := nearest(img.Pix[3*i:3*i+3], protos); k < groundLabel {
				labels[i] = int8(k)
			} else {
				labels[i] = groundLabel + int8(own)
			}
		}
	}
	return labels
}

// nearestLabels labels each pixel with the index of its nearest colour in
// protos.
func nearestLabels(img *data.RGB, protos [][3]uint8) []int8 {
	labels := make([]int8, img.W*img.H)
	for i := range labels {
		labels[i] = int8(nearest(img.Pix[3*i:3*i+3], protos))
	}
	return labels
}

// nearest is the index of the colour in protos nearest px (squared RGB
// distance; the first of a tie).
func nearest(px []uint8, protos [][3]uint8) int {
	best, bestD := 0, math.Inf(1)
	for k, p := range protos {
		d := 0.0
		for c := range 3 {
			v := float64(px[c]) - float64(p[c])
			d += v * v
		}
		if d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// minSubjectFraction is the smallest subject the detector reports, as a
// fraction of the image: the toy world's smallest subjects cover about
// 1.5%; a few stray pixels of a colour are not a subject.
const minSubjectFraction = 0.004

// DetectToy finds the subjects of img: for every palette, each
// 8-connected region of its two colours with enough of both. The score
// grows with the region's size and with the balance of its two colours.
func DetectToy(img *data.RGB) []ToyDetection {
	labels := subjectLabels(img)
	n := len(data.ToyPalette())
	minArea := max(4, int(minSubjectFraction*float64(img.W*img.H)))
	var dets []ToyDetection
	for i := range n {
		for j := i + 1; j < n; j++ {
			in := func(p int) bool { return labels[p] == int8(i) || labels[p] == int8(j) }
			for _, comp := range components(in, img.W, img.H) {
				if len(comp) < minArea {
					continue
				}
				ni := 0
				for _, p := range comp {
					if labels[p] == int8(i) {
						ni++
					}
				}
				minor := float64(min(ni, len(comp)-ni)) / float64(len(comp))
				if minor < 0.08 { // one colour alone: not this palette
					continue
				}
				size := float64(len(comp))
				dets = append(dets, ToyDetection{
					Box:   pixelBounds(comp, img.W, img.H),
					Score: size / (size + float64(minArea)) * math.Min(1, 3*minor),
					Class: pairClass(i, j),
				})
			}
		}
	}
	return dets
}

// components are the 8-connected regions of the pixels in reports true,
// each as pixel indices.
func components(in func(p int) bool, w, h int) [][]int {
	seen := make([]bool, w*h)
	var out [][]int
	for start := range seen {
		if seen[start] || !in(start) {
			continue
		}
		seen[start] = true
		comp := []int{start}
		for k := 0; k < len(comp); k++ {
			x, y := comp[k]%w, comp[k]/w
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					q := ny*w + nx
					if !seen[q] && in(q) {
						seen[q] = true
						comp = append(comp, q)
					}
				}
			}
		}
		out = append(out, comp)
	}
	return out
}

// pixelBounds is the normalised box around pixels: their outer edges.
func pixelBounds(pix []int, w, h int) [4]float64 {
	x0, y0, x1, y1 := w, h, -1, -1
	for _, p := range pix {
		x, y := p%w, p/w
		x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
	}
	return [4]float64{float64(x0) / float64(w), float64(y0) / float64(h), float64(x1+1) / float64(w), float64(y1+1) / float64(h)}
}

// ToyIdentification is which identity stands in a requested box.
type ToyIdentification struct {
	Identity  string  // the best-matching identity's ID; "" when the box holds no subject
	Agreement float64 // how well its rendering matches, 0..1
}

// IdentifyToy names the identity in box (normalised) of img, by analysis
// through synthesis: every identity of ids is rendered with the toy
// world's own renderer at the pose that best fits the subject's pixels in
// the box (their centroid, the radius their area implies for that shape,
// and the best of 36 turns and three radii), and the identity whose
// rendering agrees with the most pixels (same colour, over the union of
// both) wins, the first of a tie. Shape, texture and palette all have to
// match for a high agreement.
func IdentifyToy(img *data.RGB, box [4]float64, ids []data.Identity) ToyIdentification {
	labels := subjectLabels(img)
	x0, y0, x1, y1 := boxPixels(box, img.W, img.H)
	var sx, sy float64
	var subject []int
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			if p := y*img.W + x; labels[p] < groundLabel {
				subject = append(subject, p)
				sx, sy = sx+float64(x)+0.5, sy+float64(y)+0.5
			}
		}
	}
	if len(subject) < max(4, int(minSubjectFraction*float64(img.W*img.H))) {
		return ToyIdentification{}
	}
	cx, cy := sx/float64(len(subject)), sy/float64(len(subject))

	// Identities of one shape and texture differ in colours alone: each
	// look is rendered once per pose, its pixels as roles (which of the
	// two colours), and every identity of that look counts its agreement
	// from them.
	type look struct{ shape, texture string }
	var looks []look
	members := map[look][]int{}
	colours := make([][2]int8, len(ids)) // each identity's colours as labels, -1 for none of the palette
	for i, id := range ids {
		l := look{id.Shape, id.Texture}
		if members[l] == nil {
			looks = append(looks, l)
		}
		members[l] = append(members[l], i)
		colours[i] = [2]int8{int8(colourIndexRGB(id.RGB[0][:])), int8(colourIndexRGB(id.RGB[1][:]))}
	}
	agreement := make([]float64, len(ids)) // each identity's best over the poses
	canvas := data.NewRGB(img.W, img.H)
	for _, l := range looks {
		ms := members[l]
		roles := data.Identity{Shape: l.shape, Texture: l.texture, RGB: [2][3]uint8{{0, 0, 1}, {0, 0, 2}}}
		agree := make([]int, len(ms))
		r0 := math.Sqrt(float64(len(subject)) / shapeArea(l.shape))
		for pose := range identifyTurns * len(identifyScales) {
			r := r0 * identifyScales[pose/identifyTurns]
			angle := 2 * math.Pi * float64(pose%identifyTurns) / identifyTurns
			clear(canvas.Pix)
			mask := data.RenderSubject(canvas, roles, cx, cy, r, angle)
			clear(agree)
			union := 0
			for y := y0; y < y1; y++ {
				for x := x0; x < x1; x++ {
					p := y*img.W + x
					observed := labels[p] < groundLabel
					rendered := mask.Pix[p] != 0
					if !observed && !rendered {
						continue
					}
					union++
					if observed && rendered {
						role := canvas.Pix[3*p+2] - 1
						for k, i := range ms {
							if colours[i][role] == labels[p] {
								agree[k]++
							}
						}
					}
				}
			}
			for k, i := range ms {
				agreement[i] = max(agreement[i], float64(agree[k])/float64(union))
			}
		}
	}
	best := ToyIdentification{}
	for i, a := range agreement {
		if a > best.Agreement {
			best = ToyIdentification{Identity: ids[i].ID, Agreement: a}
		}
	}
	return best
}

// ToyIdentityRight is whether the subject in box (normalised) of img is
// the identity id: the look IdentifyToy finds nearest, among the world's
// identities (ids) and id's two colours on every shape and texture in
// either role, must have id's shape, texture and colours. Among the
// world's identities alone a subject in the right colours is named right
// whatever its shape and texture, for almost every palette is one
// identity's; reading the colours from the box first (IdentifyToyParts)
// is strict about shape and texture too, but misreads colours the VAE
// pulls toward the ground (purple on water read as blue), which the
// nearest look of a fixed set forgives.
func ToyIdentityRight(img *data.RGB, box [4]float64, id data.Identity, ids []data.Identity) bool {
	a, b := colourIndex(id.Palette[0]), colourIndex(id.Palette[1])
	looks := slices.Clone(ids)
	for _, look := range data.ToyIdentities() { // every shape with every texture
		looks = append(looks, look.InPalette(a, b), look.InPalette(b, a))
	}
	got := IdentifyToy(img, box, looks)
	k := slices.IndexFunc(looks, func(l data.Identity) bool { return l.ID == got.Identity })
	if k < 0 {
		return false // no subject in the box
	}
	l := looks[k]
	return l.Shape == id.Shape && l.Texture == id.Texture && samePalette(l.Palette, id.Palette)
}

// ToyParts are the looks in a box one by one, to tell which part of an
// identity a model misses: a subject can be right in shape and texture
// and wrong in one colour, which the identity score alone counts as a
// plain miss.
type ToyParts struct {
	Shape, Texture string    // "" when the box holds no subject
	Colours        [2]string // the box's two commonest palette colours, in the roles the best rendering gives them
}

// IdentifyToyParts reads the parts of the subject in box (normalised) of
// img: the colours by counting the box's pixels, the shape and texture as
// IdentifyToy names them among every shape and texture of the toy world
// drawn in those two colours (in either role), so that a wrong colour
// cannot make a right shape lose.
func IdentifyToyParts(img *data.RGB, box [4]float64) ToyParts {
	labels := subjectLabels(img)
	x0, y0, x1, y1 := boxPixels(box, img.W, img.H)
	counts := make([]int, groundLabel)
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			if l := labels[y*img.W+x]; l < groundLabel {
				counts[l]++
			}
		}
	}
	order := make([]int, groundLabel)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return counts[j] - counts[i] })
	a, b := order[0], order[1]
	var candidates []data.Identity
	for _, id := range data.ToyIdentities() { // every shape with every texture
		candidates = append(candidates, id.InPalette(a, b), id.InPalette(b, a))
	}
	got := IdentifyToy(img, box, candidates)
	if got.Identity == "" {
		return ToyParts{}
	}
	id, _ := findIdentity(candidates, got.Identity)
	return ToyParts{Shape: id.Shape, Texture: id.Texture, Colours: id.Palette}
}

// SameColours is whether the parts' colours are the identity's, in
// either role.
func (p ToyParts) SameColours(id data.Identity) bool { return samePalette(p.Colours, id.Palette) }

// samePalette is whether two palettes hold the same two colours, in
// either role.
func samePalette(a, b [2]string) bool { return a == b || a == [2]string{b[1], b[0]} }

// The poses IdentifyToy tries: turns of the full circle, and radii
// around the one the area implies (a generated subject's area is only
// roughly its shape's).
const identifyTurns = 36

var identifyScales = []float64{0.9, 1, 1.1}

// boxPixels is a normalised box as pixel bounds [x0, x1) x [y0, y1).
func boxPixels(b [4]float64, w, h int) (x0, y0, x1, y1 int) {
	clamp := func(v float64, n int) int { return min(max(int(math.Round(v*float64(n))), 0), n) }
	return clamp(b[0], w), clamp(b[1], h), clamp(b[2], w), clamp(b[3], h)
}

// colourIndexRGB is the palette index of an exact palette colour, or -1.
func colourIndexRGB(px []uint8) int {
	return slices.IndexFunc(data.ToyPalette(), func(c data.ToyColour) bool {
		return c.RGB[0] == px[0] && c.RGB[1] == px[1] && c.RGB[2] == px[2]
	})
}

// shapeAreas are the shapes' areas in units of r^2, measured once by
// rendering each at a large radius.
var shapeAreas = sync.OnceValue(func() map[string]float64 {
	const size, r = 256, 100.0
	areas := map[string]float64{}
	for _, id := range data.ToyIdentities() {
		if _, ok := areas[id.Shape]; ok {
			continue
		}
		mask := data.RenderSubject(data.NewRGB(size, size), id, size/2, size/2, r, 0)
		n := 0
		for _, v := range mask.Pix {
			if v != 0 {
				n++
			}
		}
		areas[id.Shape] = float64(n) / (r * r)
	}
	return areas
})

func shapeArea(shape string) float64 { return shapeAreas()[shape] }

// GroundOf names the ground of img outside the boxes: the toy-world
// ground most of those pixels are nearest to ("" if the boxes cover all).
func GroundOf(img *data.RGB, boxes [][4]float64) string {
	labels := toyLabels(img)
	grounds := data.ToyGrounds()
	counts := make([]int, len(grounds))
	inBox := make([]bool, len(labels))
	for _, b := range boxes {
		x0, y0, x1, y1 := boxPixels(b, img.W, img.H)
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				inBox[y*img.W+x] = true
			}
		}
	}
	for p, l := range labels {
		if !inBox[p] && l >= groundLabel {
			counts[l-groundLabel]++
		}
	}
	k := 0
	for i, c := range counts {
		if c > counts[k] {
			k = i
		}
	}
	if counts[k] == 0 {
		return ""
	}
	return grounds[k].Name
}

// String is a detection as a line of a log.
func (d ToyDetection) String() string {
	return fmt.Sprintf("%s %.3f %.3f", PaletteClasses()[d.Class], d.Score, d.Box)
}
