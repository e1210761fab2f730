package data

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"
)

// ToyWorldConfig sizes a toy world.
type ToyWorldConfig struct {
	Seed   uint64
	Clips  int // training clips; the test set gets a quarter as many, rounded up
	Images int // training images; likewise
	Size   int // side of every frame, in pixels
	Frames int // frames per clip
	// Recolour is the share of training subjects drawn in a random
	// two-colour palette rather than their identity's (test subjects never
	// are). The identities' palettes turn with shape and texture, so without
	// it a colour keeps to one role (the held-out identities' first colour
	// is green, which no training identity has first); recoloured subjects
	// show every colour in both roles while the held-out shape-and-texture
	// pairs stay unseen.
	Recolour float64
	// HoldOut is what keeps the held-out identities out of training:
	// HoldOutPair (the default) never draws their shape-and-texture pairs
	// there; HoldOutPalette draws those pairs too, always in a palette not
	// their own, so that a held-out identity is new only in its colours.
	// Either way no training subject is a held-out identity, and the test
	// set is the same.
	HoldOut string
}

// The values of ToyWorldConfig.HoldOut.
const (
	HoldOutPair    = "pair"
	HoldOutPalette = "palette"
)

// DefaultToyWorldConfig is about 200 training records of 64 x 64.
func DefaultToyWorldConfig() ToyWorldConfig {
	return ToyWorldConfig{Clips: 140, Images: 60, Size: 64, Frames: 8, HoldOut: HoldOutPair}
}

func (c ToyWorldConfig) check() error {
	switch {
	case c.Clips < 0 || c.Images < 0 || c.Clips+c.Images == 0:
		return fmt.Errorf("toy world: %d clips and %d images: need at least one record", c.Clips, c.Images)
	case c.Size < 32 || c.Size > 1024:
		return fmt.Errorf("toy world: size %d: must be 32 to 1024 (smaller subjects lose their textures)", c.Size)
	case c.Frames < 2 || c.Frames > 99:
		return fmt.Errorf("toy world: %d frames: must be 2 to 99", c.Frames)
	case !(c.Recolour >= 0 && c.Recolour <= 1):
		return fmt.Errorf("toy world: recolour %g: must be a share from 0 to 1", c.Recolour)
	case c.HoldOut != "" && c.HoldOut != HoldOutPair && c.HoldOut != HoldOutPalette:
		return fmt.Errorf("toy world: hold-out %q: must be %q or %q", c.HoldOut, HoldOutPair, HoldOutPalette)
	}
	return nil
}

// Identity is one subject of the toy world.
type Identity struct {
	ID      string      `json:"id"`
	Shape   string      `json:"shape"` // the category
	Texture string      `json:"texture"`
	Palette [2]string   `json:"palette"` // colour names: main, second
	RGB     [2][3]uint8 `json:"rgb"`
	HeldOut bool        `json:"held_out"` // never in train.jsonl
}

// Phrase is how captions name the identity: "red-blue striped star".
func (id Identity) Phrase() string {
	return id.Palette[0] + "-" + id.Palette[1] + " " + toyTextureWords[id.Texture] + " " + id.Shape
}

// InPalette is the identity's shape and texture in colours a and b
// (indices into ToyPalette), named by them: an identity's own palette, or
// a training subject's look under ToyWorldConfig.Recolour.
func (id Identity) InPalette(a, b int) Identity {
	id.Palette = [2]string{toyColours[a].name, toyColours[b].name}
	id.RGB = [2][3]uint8{toyColours[a].rgb, toyColours[b].rgb}
	id.ID = fmt.Sprintf("%s-%s-%s-%s", id.Shape, id.Texture, id.Palette[0], id.Palette[1])
	return id
}

// toyHeldOut are the held-out identities: one per texture, each a
// different shape, so every shape, texture and colour is still seen in
// training, just not in these combinations. They lie on the anti-diagonal
// of ToyIdentities' palette rotation (shape + texture = 2 mod 6), so all
// four have green as their first colour, which no training identity has:
// the zero-shot test asks for a colour in a new role too, unless
// ToyWorldConfig.Recolour shows training subjects in other palettes. Changing
// the set would change every toy world's test clips and so the built-in
// model's provenance; Recolour and HoldOut leave them as they are.
var toyHeldOut = map[[2]string]bool{
	{"triangle", "solid"}: true, {"square", "stripes"}: true,
	{"circle", "dots"}: true, {"cross", "checks"}: true,
}

// ToyIdentities is the identity table: every shape with every texture, 24
// identities, the palette turning with the texture so that shapes do not
// keep one colour.
func ToyIdentities() []Identity {
	var ids []Identity
	for t, texture := range toyTextures {
		for s, shape := range toyShapes {
			a := (s + t) % len(toyColours)
			b := (a + 1 + t) % len(toyColours)
			id := Identity{Shape: shape, Texture: texture, HeldOut: toyHeldOut[[2]string{shape, texture}]}
			ids = append(ids, id.InPalette(a, b))
		}
	}
	return ids
}

// ToyWorldSummary counts what WriteToyWorld wrote.
type ToyWorldSummary struct {
	Train, Test         int // records
	Identities, HeldOut int
}

// toyJob is one record to draw: which split and kind, its number there
// and its scene kind.
type toyJob struct {
	test, clip bool
	n          int
	kind       sceneKind
}

// WriteToyWorld writes a toy world into dir, which must be empty or not
// exist: train.jsonl and test.jsonl (see Manifest), identities.json (the
// ToyIdentities table) and the PNG files they name, in train/ and test/.
//
// The toy world is a synthetic training set small enough to train on a CPU
// and exact enough to test on: coloured, textured shapes on procedural
// grounds, in clips in which they move, turn and change size, and in still
// images. Some identities are held out of training, and so are layouts in
// which subjects stack in one column; each test record has one of the two.
// Every record draws from its own stream of the seed, so a seed gives the
// same files byte for byte, however many cores draw them (on one kind of
// CPU: Go fuses multiply-adds on arm64 and some others, which can move a
// background pixel by a level).
func WriteToyWorld(dir string, cfg ToyWorldConfig) (ToyWorldSummary, error) {
	if err := cfg.check(); err != nil {
		return ToyWorldSummary{}, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return ToyWorldSummary{}, fmt.Errorf("toy world: %s is not empty", dir)
	}
	ids := ToyIdentities()
	var jobs []toyJob
	add := func(test, clip bool, count int, kind func(n int) sceneKind) {
		for n := range count {
			jobs = append(jobs, toyJob{test: test, clip: clip, n: n, kind: kind(n)})
		}
	}
	train := func(int) sceneKind { return sceneTrain }
	// Test records alternate between the two things held out.
	test := func(n int) sceneKind { return []sceneKind{sceneNewIdentity, sceneNewLayout}[n%2] }
	add(false, true, cfg.Clips, train)
	add(false, false, cfg.Images, train)
	add(true, true, (cfg.Clips+3)/4, test)
	add(true, false, (cfg.Images+3)/4, test)

	lines := make([][]byte, len(jobs))
	if err := forEachParallel(len(jobs), func(i int) (err error) {
		lines[i], err = writeToyRecord(dir, jobs[i], cfg, ids)
		return err
	}); err != nil {
		return ToyWorldSummary{}, err
	}

	sum := ToyWorldSummary{Identities: len(ids)}
	var trainLines, testLines bytes.Buffer
	for i, j := range jobs {
		if j.test {
			testLines.Write(lines[i])
			sum.Test++
		} else {
			trainLines.Write(lines[i])
			sum.Train++
		}
	}
	for _, id := range ids {
		if id.HeldOut {
			sum.HeldOut++
		}
	}
	// One identity a line: readable, and a diff shows what changed.
	table := []byte("[\n")
	for i, id := range ids {
		b, err := json.Marshal(id)
		if err != nil {
			return sum, err
		}
		table = append(table, "  "...)
		table = append(table, b...)
		if i < len(ids)-1 {
			table = append(table, ',')
		}
		table = append(table, '\n')
	}
	table = append(table, ']')
	for name, b := range map[string][]byte{
		"train.jsonl": trainLines.Bytes(), "test.jsonl": testLines.Bytes(), "identities.json": append(table, '\n'),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return sum, fmt.Errorf("toy world: %w", err)
		}
	}
	return sum, nil
}

// randomPalette is id's shape and texture in a random palette of two
// different colours, which may be id's own.
func randomPalette(r *rand.Rand, id Identity) Identity {
	a := r.IntN(len(toyColours))
	return id.InPalette(a, (a+1+r.IntN(len(toyColours)-1))%len(toyColours))
}

// forEachParallel runs f(0..n-1) on all cores and returns the first error.
// Each record has its own random stream, so the order they run in does
// not change the output.
func forEachParallel(n int, f func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs = make([]error, n)
		next = 0
	)
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				errs[i] = f(i)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// toyRecord and toySubject are a manifest line as the toy world writes it.
type toyRecord struct {
	Frames   []string     `json:"frames,omitempty"`
	Image    string       `json:"image,omitempty"`
	Caption  string       `json:"caption"`
	Subjects []toySubject `json:"subjects"`
}

type toySubject struct {
	Category string   `json:"category"`
	Phrase   string   `json:"phrase"`
	ID       string   `json:"id"`
	Boxes    []Box    `json:"boxes"`
	Masks    []string `json:"masks"`
}

// writeToyRecord draws one record, writes its PNG files and returns its
// manifest line.
func writeToyRecord(dir string, j toyJob, cfg ToyWorldConfig, ids []Identity) ([]byte, error) {
	split, kind := 0, 0
	if j.test {
		split = 1
	}
	if !j.clip {
		kind = 1
	}
	key := uint64(split)<<40 | uint64(kind)<<32 | uint64(j.n)
	r := rand.New(rand.NewPCG(cfg.Seed, splitMix64(key)))
	frames := 1
	if j.clip {
		frames = cfg.Frames
	}
	scene := newToyScene(r, ids, j.kind, cfg.Size, frames, cfg.HoldOut == HoldOutPalette)
	// The look of each subject: its identity, or under Recolour another
	// palette, drawn from a stream of its own so that the rest of the
	// record is the same with Recolour or without. A held-out identity's
	// shape and texture in training (HoldOutPalette) always wear another.
	looks := make([]Identity, len(scene.ids))
	recolour := rand.New(rand.NewPCG(cfg.Seed, splitMix64(key|1<<48)))
	for k, i := range scene.ids {
		looks[k] = ids[i]
		switch {
		case j.test:
		case ids[i].HeldOut:
			for looks[k].ID == ids[i].ID {
				looks[k] = randomPalette(recolour, ids[i])
			}
		case cfg.Recolour > 0 && recolour.Float64() < cfg.Recolour:
			looks[k] = randomPalette(recolour, ids[i])
		}
	}
	bg := drawBackground(toyBackgrounds[scene.background].name, cfg.Size, r)

	// Paths in the manifest are relative to dir, where it lives.
	base := map[bool]string{false: "train", true: "test"}[j.test]
	prefix := fmt.Sprintf("%s/image%04d", base, j.n)
	if j.clip {
		base = fmt.Sprintf("%s/clip%04d", base, j.n)
		prefix = base + "/f"
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(base)), 0o755); err != nil {
		return nil, fmt.Errorf("toy world: %w", err)
	}
	caption, phrases := scene.caption(looks)
	rec := toyRecord{Caption: caption}
	for k, look := range looks {
		rec.Subjects = append(rec.Subjects, toySubject{Category: look.Shape, Phrase: phrases[k], ID: look.ID})
	}
	var last Frame // the clip's last frame, for the test references
	for t := range frames {
		stem := prefix
		if j.clip {
			stem = fmt.Sprintf("%s%02d", prefix, t)
		}
		img := &RGB{W: bg.W, H: bg.H, Pix: append([]uint8(nil), bg.Pix...)}
		last = Frame{Index: t, Image: img}
		for k, look := range looks {
			mask := drawSubject(img, look, scene.poses[k][t])
			last.Masks = append(last.Masks, mask)
			box, ok := maskBox(mask)
			if !ok {
				return nil, fmt.Errorf("toy world: %s: subject %d has no pixels", stem, k)
			}
			name := fmt.Sprintf("%s_s%d.png", stem, k)
			if err := writeGrayPNG(filepath.Join(dir, filepath.FromSlash(name)), mask); err != nil {
				return nil, err
			}
			last.Boxes = append(last.Boxes, box)
			rec.Subjects[k].Boxes = append(rec.Subjects[k].Boxes, box)
			rec.Subjects[k].Masks = append(rec.Subjects[k].Masks, name)
		}
		name := stem + ".png"
		if err := writeRGBPNG(filepath.Join(dir, filepath.FromSlash(name)), img); err != nil {
			return nil, err
		}
		if j.clip {
			rec.Frames = append(rec.Frames, name)
		} else {
			rec.Image = name
		}
	}
	if j.test && j.clip {
		for k := range scene.ids {
			// Drawn after the subjects of later ones: the segment whitens
			// everything but subject k.
			ref := segment(&last, k, cfg.Size)
			image, mask := ToyReference(rec.Frames, k)
			if err := writeRGBPNG(filepath.Join(dir, filepath.FromSlash(image)), ref.Image); err != nil {
				return nil, err
			}
			if err := writeGrayPNG(filepath.Join(dir, filepath.FromSlash(mask)), ref.Mask); err != nil {
				return nil, err
			}
		}
	}
	line, err := json.Marshal(rec)
	return append(line, '\n'), err
}

// ToyReference names the reference of subject k of a test clip whose
// frames are frames: its segment in the clip's last frame (the square
// around it, background white, at the frame's size), made as training
// makes a clip's dynamic reference, and its mask. Evaluation asks for the
// subject at its box in the first frame from this view of it. The paths
// are as frames are: relative to the manifest, or resolved if they are.
func ToyReference(frames []string, k int) (image, mask string) {
	dir := path.Dir(filepath.ToSlash(frames[0]))
	stem := fmt.Sprintf("%s/ref_s%d", dir, k)
	return filepath.FromSlash(stem + ".png"), filepath.FromSlash(stem + "_mask.png")
}

// writeRGBPNG writes an 8-bit RGB PNG (Go's encoder writes an opaque RGBA
// image without its alpha).
func writeRGBPNG(path string, m *RGB) error {
	img := image.NewRGBA(image.Rect(0, 0, m.W, m.H))
	for i := range m.W * m.H {
		copy(img.Pix[4*i:4*i+3], m.Pix[3*i:3*i+3])
		img.Pix[4*i+3] = 255
	}
	return writePNG(path, img)
}

// writeGrayPNG writes a mask as an 8-bit gray PNG, Pillow's mode "L".
func writeGrayPNG(path string, m *Gray) error {
	return writePNG(path, &image.Gray{Pix: m.Pix, Stride: m.W, Rect: image.Rect(0, 0, m.W, m.H)})
}

// toyPNG reuses its compressors: a new one per small file would cost more
// than the compression.
var toyPNG = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: &pngBuffers{}}

type pngBuffers struct{ pool sync.Pool }

func (p *pngBuffers) Get() *png.EncoderBuffer {
	b, _ := p.pool.Get().(*png.EncoderBuffer)
	return b
}

func (p *pngBuffers) Put(b *png.EncoderBuffer) { p.pool.Put(b) }

func writePNG(path string, img image.Image) error {
	var b bytes.Buffer
	if err := toyPNG.Encode(&b, img); err != nil {
		return fmt.Errorf("toy world: %s: %w", path, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("toy world: %w", err)
	}
	return nil
}
