package eval

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

// On the toy world's own test frames, where every subject is exactly
// where its annotation says, the palette detector must find the subjects
// (AP50 near 1), name every identity and the ground: otherwise it would
// blame a model for its own misses.
func TestToyDetectorOnGroundTruth(t *testing.T) {
	dir := t.TempDir()
	if _, err := data.WriteToyWorld(dir, data.ToyWorldConfig{Seed: 5, Clips: 60, Images: 40, Size: 64, Frames: 2}); err != nil {
		t.Fatal(err)
	}
	m, err := data.LoadManifest(filepath.Join(dir, "test.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ids := data.ToyIdentities()
	byID := map[string]data.Identity{}
	for _, id := range ids {
		byID[id.ID] = id
	}
	var gts []GroundTruth
	var dets []Detection
	var images []int
	subjects, named, grounds := 0, 0, 0
	var parts [3]int // right shape, texture, colours
	for i, rec := range m.Records {
		f, err := rec.LoadFrame(0)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, i)
		var boxes [][4]float64
		for k, sub := range rec.Subjects {
			box := [4]float64(f.Boxes[k])
			boxes = append(boxes, box)
			gts = append(gts, GroundTruth{ImageID: i, CategoryID: PaletteClass(byID[sub.ID]), Box: PixelBox(box, 64, 64)})
			subjects++
			if ToyIdentityRight(f.Image, box, byID[sub.ID], ids) {
				named++
			} else if testing.Verbose() {
				t.Logf("%s: %s not recognised", rec.Frames[0], sub.ID)
			}
			p := IdentifyToyParts(f.Image, box)
			for k, right := range []bool{p.Shape == sub.Category, p.Texture == byID[sub.ID].Texture, p.SameColours(byID[sub.ID])} {
				if right {
					parts[k]++
				}
			}
		}
		for _, d := range DetectToy(f.Image) {
			dets = append(dets, Detection{ImageID: i, CategoryID: d.Class, Box: PixelBox(d.Box, 64, 64), Score: d.Score})
		}
		if g := GroundOf(f.Image, boxes); strings.HasSuffix(rec.Caption, g) || g == "snow" && strings.HasSuffix(rec.Caption, "in snow") {
			grounds++
		}
	}
	classes := make([]int, len(PaletteClasses()))
	for i := range classes {
		classes[i] = i
	}
	st := EvaluateBoxes(gts, dets, images, classes)
	t.Logf("%d frames, %d subjects: AP %.3f AP50 %.3f AP75 %.3f; identities %d/%d; shapes, textures, colours %v; grounds %d/%d",
		len(images), subjects, st.AP, st.AP50, st.AP75, named, subjects, parts, grounds, len(images))
	if st.AP50 < 0.95 || st.AP < 0.8 {
		t.Errorf("AP %.3f, AP50 %.3f on the ground truth", st.AP, st.AP50)
	}
	if float64(named) < 0.95*float64(subjects) {
		t.Errorf("identified %d of %d subjects", named, subjects)
	}
	for k, n := range parts {
		if float64(n) < 0.95*float64(subjects) {
			t.Errorf("%s right for %d of %d subjects", []string{"shape", "texture", "colours"}[k], n, subjects)
		}
	}
	if grounds != len(images) {
		t.Errorf("named the ground of %d of %d frames", grounds, len(images))
	}
}

// A green subject whose green is pulled toward grass, as the VAE and the
// UNet pull it, stands on sand: its green pixels are nearer grass than
// green, but a scene has one ground, so they must still count as green.
func TestToyDetectorGreenOffGrass(t *testing.T) {
	var id data.Identity
	for _, x := range data.ToyIdentities() {
		if x.Palette[0] == "green" || x.Palette[1] == "green" {
			id = x
			break
		}
	}
	if id.ID == "" {
		t.Fatal("no green identity in the toy world")
	}
	colour := func(list []data.ToyColour, name string) [3]uint8 {
		for _, c := range list {
			if c.Name == name {
				return c.RGB
			}
		}
		t.Fatalf("no colour %s", name)
		return [3]uint8{}
	}
	green, grass, sand := colour(data.ToyPalette(), "green"), data.ToyGrounds()[0].RGB, data.ToyGrounds()[1].RGB
	if data.ToyGrounds()[0].Name != "grass" || data.ToyGrounds()[1].Name != "sand" {
		t.Fatalf("grounds reordered: %v", data.ToyGrounds())
	}
	const size = 64
	img := flatGround(size, sand)
	mask := data.RenderSubject(img, id, 32, 32, 10, 0)
	pulled := [3]uint8{}
	for c := range 3 { // 60% of the way from green to grass
		pulled[c] = uint8((4*int(green[c]) + 6*int(grass[c])) / 10)
	}
	var pix []int
	for p, v := range mask.Pix {
		if v == 0 {
			continue
		}
		pix = append(pix, p)
		if [3]uint8(img.Pix[3*p:3*p+3]) == green {
			copy(img.Pix[3*p:], pulled[:])
		}
	}
	if toyLabels(img)[slices.IndexFunc(pix, func(p int) bool { return [3]uint8(img.Pix[3*p:3*p+3]) == pulled })] < groundLabel {
		t.Fatal("the pulled green is nearer green than grass: the test tests nothing")
	}
	want := pixelBounds(pix, size, size)
	found := false
	for _, d := range DetectToy(img) {
		if d.Class == PaletteClass(id) && d.Box == want {
			found = true
		}
	}
	if !found {
		t.Errorf("%s on sand not detected at %v: %v", id.ID, want, DetectToy(img))
	}
	if got := IdentifyToy(img, want, data.ToyIdentities()); got.Identity != id.ID {
		t.Errorf("%s on sand identified as %q (%.2f)", id.ID, got.Identity, got.Agreement)
	}
	if g := GroundOf(img, [][4]float64{want}); g != "sand" {
		t.Errorf("ground %q, want sand", g)
	}
}

// A subject drawn in colours not its own is a miss for the identity score
// but keeps its shape and texture for IdentifyToyParts, which names the
// colours it was drawn in; swapping its two colours' roles keeps its
// palette right.
func TestToyPartsTellColoursFromShape(t *testing.T) {
	const size = 64
	box := [4]float64{16.0 / size, 16.0 / size, 48.0 / size, 48.0 / size}
	shapes, textures := map[string]bool{}, map[string]bool{}
	for _, id := range data.ToyIdentities() {
		if shapes[id.Shape] && textures[id.Texture] {
			continue // every shape and every texture once is enough, and quicker
		}
		shapes[id.Shape], textures[id.Texture] = true, true
		a, b := colourIndex(id.Palette[0]), colourIndex(id.Palette[1])
		other := (b + 1) % len(data.ToyPalette())
		if other == a {
			other = (other + 1) % len(data.ToyPalette())
		}
		for _, c := range []struct {
			look        data.Identity
			rightColour bool
		}{{id, true}, {id.InPalette(b, a), true}, {id.InPalette(a, other), false}} {
			img := flatGround(size, data.ToyGrounds()[1].RGB)
			data.RenderSubject(img, c.look, 32, 32, 13, 0.3)
			p := IdentifyToyParts(img, box)
			if p.Shape != id.Shape || p.Texture != id.Texture || p.SameColours(id) != c.rightColour {
				t.Errorf("%s drawn as %s: parts %+v", id.ID, c.look.ID, p)
			}
			if p.Colours != c.look.Palette && p.Colours != [2]string{c.look.Palette[1], c.look.Palette[0]} {
				t.Errorf("%s drawn as %s: colours %v", id.ID, c.look.ID, p.Colours)
			}
		}
	}
	if p := IdentifyToyParts(data.NewRGB(size, size), box); p != (ToyParts{}) {
		t.Errorf("an empty box: %+v", p)
	}
}

// The identity score asks for the requested shape, texture and colours:
// the requested colours on another shape or texture are a miss. Every
// held-out identity's palette is no other identity's, so naming the
// nearest of the world's identities called each of these right.
func TestToyIdentityNeedsEveryPart(t *testing.T) {
	const size = 64
	ids := data.ToyIdentities()
	scorer := &toyScorer{ids: ids}
	box := [4]float64{16.0 / size, 16.0 / size, 48.0 / size, 48.0 / size}
	for _, id := range ids {
		if !id.HeldOut {
			continue
		}
		otherShape, otherTexture := id, id
		otherShape.Shape = map[string]string{"triangle": "circle", "square": "star", "circle": "cross", "cross": "ring"}[id.Shape]
		otherTexture.Texture = map[string]string{"solid": "dots", "stripes": "checks", "dots": "solid", "checks": "stripes"}[id.Texture]
		for _, c := range []struct {
			drawn data.Identity
			want  float64
		}{{id, 1}, {id.InPalette(colourIndex(id.Palette[1]), colourIndex(id.Palette[0])), 1}, {otherShape, 0}, {otherTexture, 0}} {
			img := flatGround(size, data.ToyGrounds()[1].RGB)
			data.RenderSubject(img, c.drawn, 32, 32, 13, 0.3)
			item := &Item{Prompt: "x on sand", Subjects: []ItemSubject{{Name: id.ID, Box: box}}}
			s, err := scorer.Score(item, img)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Metrics[metricIdentity]; got != c.want || s.Metrics[metricZeroShot] != c.want {
				t.Errorf("%s drawn as a %s %s %v: identity %v, zero-shot %v, want %v", id.ID, c.drawn.Texture, c.drawn.Shape, c.drawn.Palette, got, s.Metrics[metricZeroShot], c.want)
			}
		}
	}
}

// The identity score forgives a colour the VAE pulls toward the ground
// as long as no other look fits better: the purple of a subject on water
// pulled toward the water reads as blue pixel by pixel (so IdentifyToyParts
// names the wrong colours), yet the subject is still nearer its own
// identity than any other identity or any other look in its colours.
func TestToyIdentityForgivesPulledColours(t *testing.T) {
	const size = 64
	ids := data.ToyIdentities()
	var id data.Identity
	for _, x := range ids {
		if x.Palette[0] == "purple" && x.Texture == "dots" {
			id = x
		}
	}
	if id.ID == "" {
		t.Fatal("no purple dotted identity in the toy world")
	}
	water := data.ToyGrounds()[2]
	if water.Name != "water" {
		t.Fatalf("grounds reordered: %v", data.ToyGrounds())
	}
	img := flatGround(size, water.RGB)
	data.RenderSubject(img, id, 32, 32, 13, 0.3)
	purple := data.ToyPalette()[colourIndex("purple")].RGB
	for p := range size * size {
		if [3]uint8(img.Pix[3*p:3*p+3]) == purple {
			for c := range 3 { // half way to the water
				img.Pix[3*p+c] = uint8((int(purple[c]) + int(water.RGB[c])) / 2)
			}
		}
	}
	box := [4]float64{16.0 / size, 16.0 / size, 48.0 / size, 48.0 / size}
	if p := IdentifyToyParts(img, box); p.SameColours(id) {
		t.Fatalf("the pulled purple still reads as purple (%v): the test tests nothing", p.Colours)
	}
	if !ToyIdentityRight(img, box, id, ids) {
		t.Errorf("%s with its purple pulled toward water: not recognised (nearest %+v)", id.ID, IdentifyToy(img, box, ids))
	}
}

// flatGround is a size x size image of one colour: a ground without its
// texture, on which a test draws subjects.
func flatGround(size int, rgb [3]uint8) *data.RGB {
	img := data.NewRGB(size, size)
	for i := range size * size {
		copy(img.Pix[3*i:], rgb[:])
	}
	return img
}
