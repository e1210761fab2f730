package eval

import (
	"path/filepath"
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
			if got := IdentifyToy(f.Image, box, ids); got.Identity == sub.ID {
				named++
			} else if testing.Verbose() {
				t.Logf("%s: %s identified as %q (%.2f)", rec.Frames[0], sub.ID, got.Identity, got.Agreement)
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
	t.Logf("%d frames, %d subjects: AP %.3f AP50 %.3f AP75 %.3f; identities %d/%d; grounds %d/%d",
		len(images), subjects, st.AP, st.AP50, st.AP75, named, subjects, grounds, len(images))
	if st.AP50 < 0.95 || st.AP < 0.8 {
		t.Errorf("AP %.3f, AP50 %.3f on the ground truth", st.AP, st.AP50)
	}
	if float64(named) < 0.95*float64(subjects) {
		t.Errorf("identified %d of %d subjects", named, subjects)
	}
	if grounds != len(images) {
		t.Errorf("named the ground of %d of %d frames", grounds, len(images))
	}
}
