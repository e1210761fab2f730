package data

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var smallToyConfig = ToyWorldConfig{Seed: 7, Clips: 12, Images: 8, Size: 64, Frames: 5}

// TestToyWorldDeterministic: a seed gives the same files byte for byte;
// another seed gives others.
func TestToyWorldDeterministic(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if _, err := WriteToyWorld(dir, smallToyConfig); err != nil {
			t.Fatal(err)
		}
	}
	other := smallToyConfig
	other.Seed++
	if _, err := WriteToyWorld(c, other); err != nil {
		t.Fatal(err)
	}
	fa, fb, fc := readTree(t, a), readTree(t, b), readTree(t, c)
	if len(fa) != len(fb) {
		t.Fatalf("%d files, then %d", len(fa), len(fb))
	}
	for name, data := range fa {
		if !bytes.Equal(data, fb[name]) {
			t.Fatalf("%s differs between two runs with one seed", name)
		}
	}
	if bytes.Equal(fa["train.jsonl"], fc["train.jsonl"]) {
		t.Fatal("seeds 7 and 8 write the same manifest")
	}
}

// readTree is every file under dir by its relative path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		files[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestToyWorldContents: the manifests load; masks and boxes are exact and
// subjects never overlap; held-out identities are only in the test set,
// and every test record holds out an identity or a layout.
func TestToyWorldContents(t *testing.T) {
	dir := t.TempDir()
	sum, err := WriteToyWorld(dir, smallToyConfig)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Train != 20 || sum.Test != 5 || sum.Identities < 16 || sum.HeldOut != 4 {
		t.Fatalf("summary %+v", sum)
	}

	var ids []Identity
	b, err := os.ReadFile(filepath.Join(dir, "identities.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ids); err != nil {
		t.Fatal(err)
	}
	byID := map[string]Identity{}
	for _, id := range ids {
		if _, dup := byID[id.ID]; dup || id.Palette[0] == id.Palette[1] {
			t.Fatalf("identity %+v repeats an id or a colour", id)
		}
		byID[id.ID] = id
	}
	if len(byID) != len(ToyIdentities()) {
		t.Fatalf("identities.json has %d identities, the table %d", len(byID), len(ToyIdentities()))
	}

	for _, split := range []string{"train", "test"} {
		m, err := LoadManifest(filepath.Join(dir, split+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		clips := 0
		for _, rec := range m.Records {
			if rec.Clip {
				clips++
				if len(rec.Frames) != smallToyConfig.Frames {
					t.Fatalf("%s:%d: %d frames", split, rec.Line, len(rec.Frames))
				}
			}
			checkToyRecord(t, rec, byID, split == "test")
		}
		if want := map[string]int{"train": 12, "test": 3}[split]; clips != want {
			t.Fatalf("%s: %d clips, want %d", split, clips, want)
		}
	}
}

func checkToyRecord(t *testing.T, rec *Record, ids map[string]Identity, test bool) {
	t.Helper()
	where := fmt.Sprintf("%s:%d", filepath.Base(rec.Manifest), rec.Line)
	heldID := false
	var cols []int
	for k, s := range rec.Subjects {
		id, ok := ids[s.ID]
		if !ok || s.Category != id.Shape || s.Phrase != id.Phrase() {
			t.Fatalf("%s: subject %d is %+v, identity %+v", where, k, s, id)
		}
		heldID = heldID || id.HeldOut
		cols = append(cols, int((s.Boxes[0][0]+s.Boxes[0][2])/2*toyGrid))
	}
	if !strings.HasSuffix(rec.Caption, " on grass") && !strings.HasSuffix(rec.Caption, " on sand") &&
		!strings.HasSuffix(rec.Caption, " on water") && !strings.HasSuffix(rec.Caption, " in snow") {
		t.Fatalf("%s: caption %q names no ground", where, rec.Caption)
	}
	// The layout's columns are those of the subjects' centres in frame 0
	// (a centre strays less than a half cell from its cell's).
	stacked := len(cols) > 1
	for _, c := range cols {
		stacked = stacked && c == cols[0]
	}
	switch {
	case !test && (heldID || stacked):
		t.Fatalf("%s: a training record with a held-out identity (%v) or layout (%v)", where, heldID, stacked)
	case test && heldID == stacked:
		t.Fatalf("%s: a test record should hold out an identity or a layout, not %v and %v", where, heldID, stacked)
	}

	for i := range rec.Frames {
		f, err := rec.LoadFrame(i)
		if err != nil {
			t.Fatal(err)
		}
		taken := make([]bool, len(f.Image.Pix)/3)
		for k, m := range f.Masks {
			if box, _ := maskBox(m); box != f.Boxes[k] {
				t.Fatalf("%s frame %d subject %d: box %v, its mask's %v", where, i, k, f.Boxes[k], box)
			}
			for p, v := range m.Pix {
				if v != 0 && v != 255 {
					t.Fatalf("%s: mask value %d", where, v)
				}
				if v != 0 && taken[p] {
					t.Fatalf("%s frame %d: subjects overlap", where, i)
				}
				taken[p] = taken[p] || v != 0
			}
		}
	}
}

func TestWriteToyWorldRefuses(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "old.txt"), []byte("x"))
	if _, err := WriteToyWorld(dir, smallToyConfig); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("non-empty folder: %v", err)
	}
	for _, c := range []ToyWorldConfig{
		{Clips: 0, Images: 0, Size: 64, Frames: 8},
		{Clips: -1, Images: 5, Size: 64, Frames: 8},
		{Clips: 1, Size: 16, Frames: 8},
		{Clips: 1, Size: 64, Frames: 1},
		{Clips: 1, Size: 64, Frames: 8, Recolour: 1.5},
		{Clips: 1, Size: 64, Frames: 8, Recolour: math.NaN()},
		{Clips: 1, Size: 64, Frames: 8, HoldOut: "shape"},
	} {
		if _, err := WriteToyWorld(t.TempDir(), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestToyWorldRecolour: Recolour redraws a share of the training subjects
// in other palettes, named so in caption, phrase and id, and changes
// nothing else: same shapes, textures, poses, masks and grounds, the same
// test set byte for byte, no held-out shape-and-texture pair in training.
func TestToyWorldRecolour(t *testing.T) {
	cfg := ToyWorldConfig{Seed: 3, Clips: 6, Images: 40, Size: 64, Frames: 3}
	plain, recoloured := sameTestSet(t, cfg, func(c *ToyWorldConfig) { c.Recolour = 0.5 })

	rgb := map[string][3]uint8{}
	for _, c := range ToyPalette() {
		rgb[c.Name] = c.RGB
	}
	own := map[[2]string]Identity{}
	for _, id := range ToyIdentities() {
		own[[2]string{id.Shape, id.Texture}] = id
	}
	ma, err := LoadManifest(filepath.Join(plain, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := LoadManifest(filepath.Join(recoloured, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	subjects, changed := 0, 0
	for r, rec := range mb.Records {
		before := ma.Records[r]
		fb, err := rec.LoadFrame(0)
		if err != nil {
			t.Fatal(err)
		}
		fa, err := before.LoadFrame(0)
		if err != nil {
			t.Fatal(err)
		}
		caption := before.Caption
		for k, s := range rec.Subjects {
			parts := strings.Split(s.ID, "-") // shape-texture-colour-colour
			if len(parts) != 4 {
				t.Fatalf("training record %d subject %d: id %q", r, k, s.ID)
			}
			id, ok := own[[2]string{parts[0], parts[1]}]
			named := id
			named.Palette = [2]string{parts[2], parts[3]}
			if !ok || id.HeldOut || s.Category != id.Shape || s.Phrase != named.Phrase() {
				t.Fatalf("training record %d subject %d: %+v", r, k, s)
			}
			subjects++
			if s.ID != id.ID {
				changed++
			}
			old := before.Subjects[k].Phrase
			caption = strings.Replace(caption, IndefiniteArticle(old)+" "+old, IndefiniteArticle(s.Phrase)+" "+s.Phrase, 1)
			look := [2][3]uint8{rgb[parts[2]], rgb[parts[3]]}
			for p, v := range fb.Masks[k].Pix {
				if v != fa.Masks[k].Pix[p] {
					t.Fatalf("training record %d subject %d: the mask changed", r, k)
				}
				if v == 0 {
					continue
				}
				// Each pixel is in the colour of the same role as before.
				var was, is [3]uint8
				copy(was[:], fa.Image.Pix[3*p:])
				copy(is[:], fb.Image.Pix[3*p:])
				if !(was == id.RGB[0] && is == look[0] || was == id.RGB[1] && is == look[1]) {
					t.Fatalf("training record %d subject %d: pixel %v, was %v, palette %v", r, k, is, was, look)
				}
			}
		}
		if rec.Caption != caption {
			t.Fatalf("training record %d: caption %q, want %q", r, rec.Caption, caption)
		}
	}
	// Binomial(subjects, 0.5 * 29/30): the bounds are over 4 sigma out.
	if lo, hi := subjects*3/10, subjects*7/10; changed < lo || changed > hi {
		t.Fatalf("%d of %d training subjects recoloured, want about half", changed, subjects)
	}
}

// TestToyWorldHoldOutPalette: with HoldOutPalette the held-out identities'
// shapes and textures appear in training, never in their own palettes, and
// the test set is the one HoldOutPair writes, byte for byte.
func TestToyWorldHoldOutPalette(t *testing.T) {
	cfg := ToyWorldConfig{Seed: 5, Clips: 6, Images: 60, Size: 64, Frames: 3, HoldOut: HoldOutPair}
	pair, palette := sameTestSet(t, cfg, func(c *ToyWorldConfig) { c.HoldOut = HoldOutPalette })

	held := map[[2]string]Identity{}
	for _, id := range ToyIdentities() {
		if id.HeldOut {
			held[[2]string{id.Shape, id.Texture}] = id
		}
	}
	count := func(dir string) (pairs int) {
		m, err := LoadManifest(filepath.Join(dir, "train.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		for r, rec := range m.Records {
			for k, s := range rec.Subjects {
				parts := strings.Split(s.ID, "-") // shape-texture-colour-colour
				id, ok := held[[2]string{parts[0], parts[1]}]
				if !ok {
					continue
				}
				pairs++
				if s.ID == id.ID {
					t.Fatalf("%s: training record %d subject %d is the held-out identity %s", dir, r, k, s.ID)
				}
				if want := IndefiniteArticle(s.Phrase) + " " + s.Phrase; !strings.Contains(rec.Caption, want) {
					t.Fatalf("%s: training record %d: caption %q does not name %q", dir, r, rec.Caption, want)
				}
			}
		}
		return pairs
	}
	if n := count(pair); n != 0 {
		t.Fatalf("hold-out pair: %d training subjects of held-out shape-and-texture pairs", n)
	}
	// 66 records of 1-3 subjects, each one of 24 identities: about 11
	// subjects of the four held-out pairs are expected.
	if n := count(palette); n < 3 {
		t.Fatalf("hold-out palette: %d training subjects of held-out shape-and-texture pairs, want about 11", n)
	}
}

// sameTestSet writes the toy world of cfg and the one change makes of it,
// and fails unless their test sets are the same byte for byte: the
// options that change writes concern training alone.
func sameTestSet(t *testing.T, cfg ToyWorldConfig, change func(*ToyWorldConfig)) (before, after string) {
	t.Helper()
	before, after = t.TempDir(), t.TempDir()
	if _, err := WriteToyWorld(before, cfg); err != nil {
		t.Fatal(err)
	}
	change(&cfg)
	if _, err := WriteToyWorld(after, cfg); err != nil {
		t.Fatal(err)
	}
	fa, fb := readTree(t, before), readTree(t, after)
	for name, b := range fa {
		if strings.HasPrefix(name, "test") && !bytes.Equal(b, fb[name]) {
			t.Fatalf("%s differs: %+v changes training alone", name, cfg)
		}
	}
	return before, after
}
