package eval

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

// The toy-world benchmark ("toyworld") is the Table III analogue of the
// toy world: the test clips of `lcpdiff data toyworld`, whose subjects are
// identities never seen in training (every other test record) or seen
// ones in layouts never seen (the others). Each clip is one item: its
// caption as the prompt, each subject asked for at its box in the clip's
// first frame, from its view in the clip's last frame (data.ToyReference,
// made as training makes a clip's dynamic reference). The toy world's own
// detector and identity score measure the images (toyworld_detect.go):
//
//   - AP, AP50, AP75: the palette detector's boxes against the requested
//     boxes, a subject's class its palette;
//   - identity: the fraction of subjects that are the requested identity
//     (ToyIdentityRight: shape, texture and both colours, in either role,
//     for a checked subject reads the same with its colours swapped), and
//     the same over the zero-shot subjects alone (identity_zero_shot;
//     images without one have none). The nearest of the world's 24
//     identities alone is mostly a colour test: on polish 6's 120 test
//     clips it called 64% of the seen subjects right, where 52% had their
//     shape right (IdentifyToyParts) and 31% pass ToyIdentityRight;
//   - shape, texture and palette of the zero-shot subjects one by one
//     (shape_zero_shot, texture_zero_shot, palette_zero_shot): which part
//     of a new identity a model gets wrong;
//   - ground: whether the caption's ground is what surrounds the boxes.

func init() { RegisterBench("toyworld", openToyWorld) }

// The toy world's per-image metrics, in table order.
const (
	metricIdentity = "identity"
	metricZeroShot = "identity_zero_shot"
	metricGround   = "ground"

	metricShapeZeroShot   = "shape_zero_shot"
	metricTextureZeroShot = "texture_zero_shot"
	metricPaletteZeroShot = "palette_zero_shot"
)

type toyWorldBench struct {
	items []Item
	ids   []data.Identity
}

func (b *toyWorldBench) Name() string   { return "toyworld" }
func (b *toyWorldBench) Items() []Item  { return b.items }
func (b *toyWorldBench) Scorer() Scorer { return &toyScorer{ids: b.ids} }

// openToyWorld reads the test clips of the toy world in o.Data.
func openToyWorld(o BenchOptions) (Bench, error) {
	if o.Data == "" {
		return nil, fmt.Errorf("bench toyworld: no data folder (the output of lcpdiff data toyworld)")
	}
	ids, err := readToyIdentities(filepath.Join(o.Data, "identities.json"))
	if err != nil {
		return nil, err
	}
	m, err := data.LoadManifest(filepath.Join(o.Data, "test.jsonl"))
	if err != nil {
		return nil, err
	}
	b := &toyWorldBench{ids: ids}
	images := o.ImagesPerPrompt
	if images <= 0 {
		images = 1 // one image per clip: the clips are the variety
	}
	for n, rec := range m.Records {
		if !rec.Clip {
			continue // an image has no second view of its subjects
		}
		var subjects []ItemSubject
		for k, sub := range rec.Subjects {
			view, mask := data.ToyReference(rec.Frames, k)
			if _, err := os.Stat(view); err != nil {
				return nil, fmt.Errorf("bench toyworld: %s:%d: subject %d's reference: %w (write the toy world again with this version)", m.Path, rec.Line, k, err)
			}
			id, ok := findIdentity(ids, sub.ID)
			if !ok {
				return nil, fmt.Errorf("bench toyworld: %s:%d: subject %d: identity %q is not in identities.json", m.Path, rec.Line, k, sub.ID)
			}
			subjects = append(subjects, ItemSubject{
				Name: sub.ID, Class: sub.Category, Word: sub.Phrase, Phrase: sub.Phrase,
				Views: []string{view}, Masks: []string{mask}, References: []string{view},
				Box:             [4]float64(sub.Boxes[0]),
				DetectorClasses: []string{PaletteClasses()[PaletteClass(id)]},
			})
		}
		for k := range images {
			if o.Limit > 0 && len(b.items) == o.Limit {
				return b, nil
			}
			b.items = append(b.items, Item{
				ID:       fmt.Sprintf("record%04d/i%d", n, k),
				Prompt:   rec.Caption,
				Seed:     o.BaseSeed + uint64(k),
				Subjects: subjects,
				Target:   rec.Frames[0],
			})
		}
	}
	return b, nil
}

func readToyIdentities(path string) ([]data.Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench toyworld: %w", err)
	}
	var ids []data.Identity
	if err := json.Unmarshal(b, &ids); err != nil {
		return nil, fmt.Errorf("bench toyworld: %s: %w", path, err)
	}
	return ids, nil
}

func findIdentity(ids []data.Identity, id string) (data.Identity, bool) {
	for _, x := range ids {
		if x.ID == id {
			return x, true
		}
	}
	return data.Identity{}, false
}

// toyScorer is the toy world's detector and identity score.
type toyScorer struct{ ids []data.Identity }

func (s *toyScorer) Metrics() []string {
	return []string{metricIdentity, metricZeroShot, metricGround, metricShapeZeroShot, metricTextureZeroShot, metricPaletteZeroShot}
}

func (s *toyScorer) Detects() bool { return true }
func (s *toyScorer) Close()        {}

// Score implements Scorer.
func (s *toyScorer) Score(item *Item, img *data.RGB) (ImageScores, error) {
	var right, zeroShot, zeroShotRight int
	var parts [3]int // zero-shot subjects with the right shape, texture, palette
	var boxes [][4]float64
	for _, sub := range item.Subjects {
		boxes = append(boxes, sub.Box)
		id, _ := findIdentity(s.ids, sub.Name)
		ok := ToyIdentityRight(img, sub.Box, id, s.ids)
		if ok {
			right++
		}
		if id.HeldOut {
			zeroShot++
			if ok {
				zeroShotRight++
			}
			p := IdentifyToyParts(img, sub.Box)
			for k, hit := range []bool{p.Shape == id.Shape, p.Texture == id.Texture, p.SameColours(id)} {
				if hit {
					parts[k]++
				}
			}
		}
	}
	scores := ImageScores{Metrics: map[string]float64{
		metricIdentity: float64(right) / float64(len(item.Subjects)),
		metricGround:   b2f(strings.HasSuffix(item.Prompt, " "+groundWords(GroundOf(img, boxes)))),
	}}
	if zeroShot > 0 {
		scores.Metrics[metricZeroShot] = float64(zeroShotRight) / float64(zeroShot)
		for k, m := range []string{metricShapeZeroShot, metricTextureZeroShot, metricPaletteZeroShot} {
			scores.Metrics[m] = float64(parts[k]) / float64(zeroShot)
		}
	}
	classes := PaletteClasses()
	for _, d := range DetectToy(img) {
		scores.Detections = append(scores.Detections, DetectedBox{Box: d.Box, Score: d.Score, Label: d.Class, Class: classes[d.Class]})
	}
	return scores, nil
}

// groundWords are the caption's words for a ground ("in snow").
func groundWords(name string) string {
	for _, g := range data.ToyGrounds() {
		if g.Name == name {
			return g.Words
		}
	}
	return "\x00" // no ground: matches no caption
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
