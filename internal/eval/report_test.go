package eval

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TestSummaryMatchesGoldenMetrics runs the summary's aggregation on the
// saved embeddings of eval/golden.safetensors, as records and photos of two
// subjects, and gets metrics.json: per subject over (generated, real)
// pairs and prompts, then the mean over subjects.
func TestSummaryMatchesGoldenMetrics(t *testing.T) {
	raw, err := os.ReadFile(golden.Path(t, "eval", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Subjects []struct {
			Name               string
			CLIPI, CLIPT, DINO float64
		} `json:"subjects"`
		CLIPI float64 `json:"clip_i_mean_over_subjects"`
		CLIPT float64 `json:"clip_t_mean_over_subjects"`
		DINO  float64 `json:"dino_mean_over_subjects"`
	}
	// metrics.json's per-subject keys are clip_i, clip_t, dino.
	raw = []byte(strings.NewReplacer(`"clip_i"`, `"CLIPI"`, `"clip_t"`, `"CLIPT"`, `"dino"`, `"DINO"`).Replace(string(raw)))
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	f := golden.File(t, "eval", "golden.safetensors")
	var items []Item
	records := map[string]*Record{}
	real := map[string][]float64{} // "clip:subject0/2" -> embedding
	text := map[string][]float64{}
	for _, s := range want.Subjects {
		key := func(k string) *torch.Tensor { return golden.Tensor(t, f, "metrics."+s.Name+"."+k) }
		clipGen, dinoGen := rows(key("clip_gen")), rows(key("dino_gen"))
		var refs []string
		for j, v := range rows(key("clip_real")) {
			path := fmt.Sprintf("%s/%d", s.Name, j)
			refs = append(refs, path)
			real["clip:"+path] = v
			real["dino:"+path] = rows(key("dino_real"))[j]
		}
		for p, v := range rows(key("clip_text")) {
			text[fmt.Sprintf("%s prompt %d", s.Name, p)] = v
		}
		for i, p := range ints(key("prompt_index")) {
			it := Item{ID: fmt.Sprintf("%s/i%d", s.Name, i), Prompt: fmt.Sprintf("%s prompt %d", s.Name, p),
				Subjects: []ItemSubject{{Name: s.Name, Class: "thing", References: refs}}}
			items = append(items, it)
			records[it.ID] = &Record{ID: it.ID, CLIP: f32(clipGen[i]), DINO: f32(dinoGen[i])}
		}
	}
	e := embedder{
		clipPhoto: func(p string) ([]float64, error) { return real["clip:"+p], nil },
		dinoPhoto: func(p string) ([]float64, error) { return real["dino:"+p], nil },
		clipText:  func(p string) []float64 { return text[p] },
	}
	sum, err := summarize(items, records, SummaryInputs{Bench: "golden", Method: "saved embeddings"}, e)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range want.Subjects {
		got := sum.Subjects[i]
		if got.Name != s.Name || got.Images != len(ints(golden.Tensor(t, f, "metrics."+s.Name+".prompt_index"))) {
			t.Fatalf("subject %d: %+v", i, got)
		}
		checkScore(t, s.Name+" CLIP-I", *got.Scores.CLIPI, s.CLIPI, metricAtol)
		checkScore(t, s.Name+" CLIP-T", *got.Scores.CLIPT, s.CLIPT, metricAtol)
		checkScore(t, s.Name+" DINO", *got.Scores.DINO, s.DINO, metricAtol)
	}
	checkScore(t, "mean CLIP-I", *sum.Scores.CLIPI, want.CLIPI, metricAtol)
	checkScore(t, "mean CLIP-T", *sum.Scores.CLIPT, want.CLIPT, metricAtol)
	checkScore(t, "mean DINO", *sum.Scores.DINO, want.DINO, metricAtol)
	if sum.Scores.AP != nil || len(sum.Notes) != 1 || !strings.Contains(sum.Notes[0], "no detector") {
		t.Errorf("AP %v, notes %q", sum.Scores.AP, sum.Notes)
	}
}

// TestSummaryBoxAP checks the AP bookkeeping: requested boxes as ground
// truth, detections counted for the category of their class only, and a
// subject no detector class stands for left out, with a note.
func TestSummaryBoxAP(t *testing.T) {
	box := [4]float64{0.25, 0.25, 0.75, 0.75}
	subject := func(name, class string) ItemSubject { return ItemSubject{Name: name, Class: class, Box: box} }
	items := []Item{
		{ID: "a", Subjects: []ItemSubject{subject("dog", "dog")}},
		{ID: "b", Subjects: []ItemSubject{subject("dog", "dog")}},
		{ID: "c", Subjects: []ItemSubject{subject("backpack_dog", "backpack")}},
		{ID: "d", Subjects: []ItemSubject{subject("candle", "candle")}},
	}
	hit := func(class string, score float64) DetectedBox {
		return DetectedBox{Box: box, Score: score, Class: class}
	}
	dets := map[string][]DetectedBox{
		"a": {hit("dog", 0.9)},
		"b": {hit("cat", 0.8)}, // the wrong class: dog is missed here
		"c": {hit("backpack", 0.7), hit("dog", 0.6)},
		"d": {hit("dog", 0.5)}, // a false positive for dog
	}
	records := map[string]*Record{}
	for _, it := range items {
		records[it.ID] = &Record{ID: it.ID, Width: 512, Height: 512, Detections: dets[it.ID],
			Subjects: []RecordSubject{{Name: it.Subjects[0].Name, Box: box}}}
	}
	det := &Detector{Config: DetectorConfig{Classes: []string{"dog", "cat", "backpack"}}}
	sum, err := summarize(items, records, SummaryInputs{Models: Models{Detector: det}}, embedder{})
	if err != nil {
		t.Fatal(err)
	}
	// dog: 2 ground truths; detections 0.9 (hit, a), 0.6 (c: no dog
	// there), 0.5 (d): recall 1/2 at precision 1, so 51 of the 101 recall
	// points have precision 1. backpack: one hit.
	dogAP := 51.0 / 101
	for _, c := range []struct {
		name string
		got  *float64
		want float64
	}{
		{"AP50", sum.Scores.AP50, (dogAP + 1) / 2},
		{"AP", sum.Scores.AP, (dogAP + 1) / 2},
		{"dog AP50", sum.Subjects[0].Scores.AP50, dogAP},
		{"backpack_dog AP75", sum.Subjects[1].Scores.AP75, 1},
	} {
		if c.got == nil || math.Abs(*c.got-c.want) > 1e-12 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if s := sum.Subjects[2]; s.Name != "candle" || s.Scores.AP != nil || s.DetectorClasses == nil || len(s.DetectorClasses) != 0 {
		t.Errorf("candle: %+v", s)
	}
	if !strings.Contains(strings.Join(sum.Notes, "\n"), "AP leaves out 1 of 3 subjects, which no detector class stands for: candle (candle)") {
		t.Errorf("notes %q", sum.Notes)
	}
	md := SubjectsMarkdown(sum)
	for _, want := range []string{
		"| subject | class | images | photos | CLIP-I | DINO | CLIP-T | AP | AP50 | AP75 | detector classes |",
		"| dog | dog | 2 | 0 | - | - | - | 50.5 | 50.5 | 50.5 | dog |",
		"| candle | candle | 1 | 0 | - | - | - | - | - | - | none: left out of AP |",
	} {
		if !strings.Contains(md, want+"\n") {
			t.Errorf("subjects.md lacks %q:\n%s", want, md)
		}
	}
}

func TestMarkdownAndCompare(t *testing.T) {
	v := func(x float64) *float64 { return &x }
	base := &Summary{Bench: "dreambench", Method: "base", Images: 3000,
		Scores: Scores{CLIPI: v(0.7151), CLIPT: v(0.30149), AP: v(0.105), AP50: v(0.169), AP75: v(0.111)},
		Notes:  []string{"DINO not measured: no DINO model given"}}
	lcp := &Summary{Bench: "dreambench", Method: "LCP | ours", Images: 3000, Metrics: []string{"identity"},
		Scores: Scores{CLIPI: v(0.789), DINO: v(0.662), CLIPT: v(0.33), AP: v(0.422), AP50: v(0.645), AP75: v(0.4871),
			Metrics: map[string]float64{"identity": 0.5}}}
	want := "| method | bench | images | CLIP-I | DINO | CLIP-T | AP | AP50 | AP75 | identity |\n" +
		"| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: |\n" +
		"| base | dreambench | 3000 | 0.715 | - | 0.301 | 10.5 | 16.9 | 11.1 | - |\n" +
		"| LCP \\| ours | dreambench | 3000 | 0.789 | 0.662 | 0.330 | 42.2 | 64.5 | 48.7 | 0.500 |\n"
	if got := MarkdownTable([]*Summary{base, lcp}); got != want {
		t.Errorf("table\n%s\nwant\n%s", got, want)
	}
	md := SummaryMarkdown(base)
	for _, part := range []string{"# dreambench: base\n\n| method |", "\n- DINO not measured: no DINO model given\n", "subjects.md"} {
		if !strings.Contains(md, part) {
			t.Errorf("summary.md lacks %q:\n%s", part, md)
		}
	}

	dirs := []string{t.TempDir(), t.TempDir()}
	for i, s := range []*Summary{base, lcp} {
		if err := writeJSONAtomic(filepath.Join(dirs[i], SummaryFile), s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Compare(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if wantCmp := want + "\n- base (" + dirs[0] + "): DINO not measured: no DINO model given\n"; got != wantCmp {
		t.Errorf("compare\n%s\nwant\n%s", got, wantCmp)
	}
	if _, err := Compare([]string{dirs[0], t.TempDir()}); err == nil || !strings.Contains(err.Error(), "run it again to finish") {
		t.Errorf("a run without summary: %v", err)
	}
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// Compare pairs each run's images with the first run's (same item, seed
// and prompt) and reports the mean per-image difference of every metric
// with its standard error; runs with nothing to pair add no row.
func TestComparePairsImages(t *testing.T) {
	write := func(method string, seed uint64, identity []float64) string {
		dir := t.TempDir()
		if err := writeJSONAtomic(filepath.Join(dir, SummaryFile), &Summary{Bench: "toyworld", Method: method, Images: len(identity)}); err != nil {
			t.Fatal(err)
		}
		var lines []byte
		for i, v := range identity {
			rec := Record{ID: fmt.Sprintf("item%d/i0", i), Prompt: "a star on sand", Seed: seed + uint64(i),
				Metrics: map[string]float64{"identity": v, "ground": 1}}
			if i == 3 {
				delete(rec.Metrics, "identity") // an image without the metric is left out of its pairs
			}
			b, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(append(lines, b...), '\n')
		}
		if err := os.WriteFile(filepath.Join(dir, RecordsFile), lines, 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	full := write("full", 0, []float64{0, 1, 0.5, 0})
	ablation := write("ablation", 0, []float64{1, 1, 0.5, 1})
	otherSeeds := write("other seeds", 100, []float64{1, 1, 1, 1})
	got, err := Compare([]string{full, ablation, otherSeeds})
	if err != nil {
		t.Fatal(err)
	}
	// identity: differences 1, 0, 0 (the fourth image has none): mean 1/3,
	// standard deviation sqrt(1/3), standard error 1/3.
	want := "\nImage by image against full (" + full + "), the same items and seeds: mean difference ± standard error\n\n" +
		"| method | images | ground | identity |\n" +
		"| --- | --: | --: | --: |\n" +
		"| ablation | 4 | +0.000 ± 0.000 | +0.333 ± 0.333 |\n"
	if !strings.HasSuffix(got, want) {
		t.Errorf("compare\n%s\nwant it to end with\n%s", got, want)
	}
	// The same two methods on a second data set, pooled with the first:
	// its items have the same IDs, and pair only with their own run's.
	// identity: differences 1, 0, 0 and 0, -1: mean 0, standard deviation
	// sqrt(1/2), standard error sqrt(1/10).
	full2 := write("full", 0, []float64{1, 1})
	ablation2 := write("ablation", 0, []float64{1, 0})
	got, err = Compare([]string{full + "," + full2, ablation + "," + ablation2})
	if err != nil {
		t.Fatal(err)
	}
	want = "\nImage by image against full (" + full + ", " + full2 + "), the same items and seeds: mean difference ± standard error\n\n" +
		"| method | images | ground | identity |\n" +
		"| --- | --: | --: | --: |\n" +
		"| ablation | 6 | +0.000 ± 0.000 | +0.000 ± 0.316 |\n"
	if !strings.HasSuffix(got, want) {
		t.Errorf("pooled compare\n%s\nwant it to end with\n%s", got, want)
	}
	if n := strings.Count(got, "| full | toyworld |"); n != 2 {
		t.Errorf("pooled compare has %d rows of the full method, want one per run:\n%s", n, got)
	}
	if _, err := Compare([]string{full + "," + full2, ablation}); err == nil || !strings.Contains(err.Error(), "different numbers of runs (2, 1)") {
		t.Errorf("groups of unequal size: %v", err)
	}
	if err := os.WriteFile(filepath.Join(ablation, RecordsFile), []byte("{not json\n{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Compare([]string{full, ablation}); err == nil || !strings.Contains(err.Error(), filepath.Join(ablation, RecordsFile)+":1") {
		t.Errorf("a damaged records file: %v", err)
	}
}
