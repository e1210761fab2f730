package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/dino"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// fakeGenerator paints each item deterministically from its seed and
// prompt, with a block of colour in each requested box: cheap, and enough
// for the metrics and the detector to give item-dependent numbers.
type fakeGenerator struct {
	calls     int
	stopAfter int    // > 0: cancel after this many calls
	cancel    func() // what stopAfter calls
}

func (g *fakeGenerator) Generate(item *Item) (*image.RGBA, string, error) {
	g.calls++
	if g.stopAfter > 0 && g.calls == g.stopAfter {
		g.cancel()
	}
	h := fnv.New64a()
	h.Write([]byte(item.Prompt))
	seed := h.Sum64() ^ item.Seed*0x9E3779B97F4A7C15
	const size = 64
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for y := range size {
		for x := range size {
			seed = seed*6364136223846793005 + 1442695040888963407
			img.SetRGBA(x, y, color.RGBA{uint8(x * 4), uint8(y * 4), uint8(seed >> 56), 255})
		}
	}
	for k, s := range item.Subjects {
		c := color.RGBA{uint8(200 - 90*k), uint8(len(s.Name) * 20), uint8(40 * k), 255}
		for y := int(s.Box[1] * size); y < int(s.Box[3]*size); y++ {
			for x := int(s.Box[0] * size); x < int(s.Box[2]*size); x++ {
				img.SetRGBA(x, y, c)
			}
		}
	}
	return img, "fake " + item.Prompt, nil
}

// tinyModels are the golden tiny CLIP, DINO and detector.
func tinyModels(t *testing.T) Models {
	t.Helper()
	c, err := LoadCLIP(golden.Path(t, "eval", "tiny-clip"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dino.Load(golden.Path(t, "eval", "dino_vits16_tiny.safetensors"), 4, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := Models{CLIP: c, DINO: d, Detector: loadTinyDetector(t)}
	t.Cleanup(func() { c.Model.Free(); d.Free() })
	return m
}

func dreamBenchDir(t *testing.T) string { return filepath.Join(golden.Dir(t), "..", "dreambench") }

func openTestBench(t *testing.T, name string, limit int) Bench {
	t.Helper()
	b, err := OpenBench(name, BenchOptions{Data: dreamBenchDir(t), ImagesPerPrompt: 2, Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testConfig(out string, b Bench, g Generator, m Models) RunConfig {
	return RunConfig{Out: out, Bench: b, Generator: g, Method: "fake", Models: m,
		Settings: map[string]string{"generator": "fake", "size": "64"}}
}

// TestRunResumesAfterInterruption stops a run after 3 of 6 images, damages
// the records file the way a kill during an append does and leaves a
// half-written PNG behind; the resumed run makes only the missing images
// and ends with the summary of an uninterrupted run, byte for byte.
func TestRunResumesAfterInterruption(t *testing.T) {
	m := tinyModels(t)
	bench := openTestBench(t, "dreambench-multi", 6)
	items := bench.Items()

	whole := t.TempDir()
	gen := &fakeGenerator{}
	want, err := Run(context.Background(), testConfig(whole, bench, gen, m))
	if err != nil {
		t.Fatal(err)
	}
	if gen.calls != 6 || want.Images != 6 {
		t.Fatalf("uninterrupted run: %d generations, %d images", gen.calls, want.Images)
	}

	split := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	gen = &fakeGenerator{stopAfter: 3, cancel: cancel}
	_, err = Run(ctx, testConfig(split, bench, gen, m))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "3 of 6 images recorded") {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(split, SummaryFile)); !os.IsNotExist(err) {
		t.Fatal("an interrupted run wrote a summary")
	}
	// A kill in the middle of the fourth append, and of a PNG write.
	line4 := recordLine(t, whole, items[3].ID)
	appendBytes(t, filepath.Join(split, RecordsFile), line4[:len(line4)/2])
	tmp := filepath.Join(split, imagesDir, ".i3.png.123.tmp")
	os.WriteFile(tmp, []byte("half a png"), 0o644)
	tmpSummary := filepath.Join(split, "."+SummaryFile+".456.tmp")
	os.WriteFile(tmpSummary, []byte("{"), 0o644)

	var log bytes.Buffer
	cfg := testConfig(split, bench, &fakeGenerator{}, m)
	cfg.Log = &log
	got, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.Generator.(*fakeGenerator).calls; n != 3 {
		t.Errorf("resume generated %d images, want the 3 missing ones", n)
	}
	if !strings.Contains(log.String(), "dropped a partial last record") || !strings.Contains(log.String(), "3 of 6 images already recorded") {
		t.Errorf("log:\n%s", log.String())
	}
	for _, p := range []string{tmp, tmpSummary} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("the interrupted write's temporary file %s is still there", p)
		}
	}
	for _, name := range []string{SummaryFile, SummaryMarkdownFile, SubjectsMarkdownFile} {
		a, _ := os.ReadFile(filepath.Join(whole, name))
		b, _ := os.ReadFile(filepath.Join(split, name))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs between the uninterrupted and the resumed run", name)
		}
	}
	if !jsonEqual(t, want, got) {
		t.Error("returned summaries differ")
	}
	// Every item once, in the file and in the summary.
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSuffix(readText(t, filepath.Join(split, RecordsFile)), "\n"), "\n") {
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("records.jsonl line %q: %v", line, err)
		}
		seen[r.ID]++
	}
	for _, it := range items {
		if seen[it.ID] != 1 {
			t.Errorf("%s recorded %d times", it.ID, seen[it.ID])
		}
	}
	if len(seen) != len(items) {
		t.Errorf("%d records for %d items", len(seen), len(items))
	}
	// What the run measured: every metric, both subjects mapped.
	s := got.Scores
	if s.CLIPI == nil || s.CLIPT == nil || s.DINO == nil || s.AP == nil || s.AP50 == nil || s.AP75 == nil || len(got.Notes) != 0 {
		t.Errorf("scores %+v, notes %q", s, got.Notes)
	}
	if len(got.Subjects) != 2 || got.Subjects[0].Name != "dog" || got.Subjects[1].Name != "backpack" ||
		strings.Join(got.Subjects[1].DetectorClasses, ",") != "backpack" {
		t.Errorf("subjects %+v", got.Subjects)
	}
	if len(got.ContactSheets) != 1 {
		t.Errorf("contact sheets %v", got.ContactSheets)
	}
	sheet := readPNGSize(t, filepath.Join(split, got.ContactSheets[0]))
	if sheet != image.Pt(6*164+4, 164+4) {
		t.Errorf("contact sheet of 6 images is %v", sheet)
	}
}

// A run measured by other metric models (here: records whose embeddings
// and detections were altered) is rescored from its PNGs: nothing is
// generated again, and the records and summary are the ones a fresh run
// writes.
func TestRunRescoresRecordedImages(t *testing.T) {
	m := tinyModels(t)
	bench := openTestBench(t, "dreambench-multi", 4)
	items := bench.Items()
	fresh := t.TempDir()
	if _, err := Run(context.Background(), testConfig(fresh, bench, &fakeGenerator{}, m)); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if _, err := Run(context.Background(), testConfig(dir, bench, &fakeGenerator{}, m)); err != nil {
		t.Fatal(err)
	}
	var stale bytes.Buffer
	for _, it := range items[:3] {
		var r Record
		if err := json.Unmarshal(recordLine(t, dir, it.ID), &r); err != nil {
			t.Fatal(err)
		}
		for i := range r.CLIP { // other models' embeddings: as valid, not the same
			r.CLIP[i] = -r.CLIP[i]
		}
		slices.Reverse(r.DINO)
		r.Detections = []DetectedBox{}
		b, _ := json.Marshal(r)
		stale.Write(append(b, '\n'))
	}
	if err := os.WriteFile(filepath.Join(dir, RecordsFile), stale.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), testConfig(dir, bench, &fakeGenerator{}, m)); err != nil {
		t.Fatal(err)
	}
	if a, b := readText(t, filepath.Join(fresh, SummaryFile)), readText(t, filepath.Join(dir, SummaryFile)); a == b {
		t.Fatal("the stale records summarise as the fresh ones: the test tests nothing")
	}

	staleSeconds := map[string]float64{}
	for _, it := range items {
		var r Record
		json.Unmarshal(recordLine(t, dir, it.ID), &r)
		staleSeconds[it.ID] = r.Seconds
	}
	var log bytes.Buffer
	gen := &fakeGenerator{}
	cfg := testConfig(dir, bench, gen, m)
	cfg.Rescore, cfg.Log = true, &log

	// Interrupted, it leaves the records as they were.
	before := readText(t, filepath.Join(dir, RecordsFile))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(cancelled, cfg); err == nil || !strings.Contains(err.Error(), "interrupted rescoring") {
		t.Fatalf("a cancelled rescore: %v", err)
	}
	if readText(t, filepath.Join(dir, RecordsFile)) != before {
		t.Fatal("a cancelled rescore changed records.jsonl")
	}

	var progress []string
	cfg.Progress = func(stage string, done, total int) {
		progress = append(progress, fmt.Sprintf("%s %d/%d", stage, done, total))
	}
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if gen.calls != 0 || !strings.Contains(log.String(), "rescored the 4 recorded images") {
		t.Errorf("rescore generated %d images; log:\n%s", gen.calls, log.String())
	}
	if want := "rescoring 0/4 rescoring 1/4 rescoring 2/4 rescoring 3/4 rescoring 4/4"; strings.Join(progress, " ") != want {
		t.Errorf("progress %q, want %q", progress, want)
	}
	for _, it := range items {
		var a, b Record
		json.Unmarshal(recordLine(t, fresh, it.ID), &a)
		json.Unmarshal(recordLine(t, dir, it.ID), &b)
		if b.Seconds != staleSeconds[it.ID] {
			t.Errorf("record %s: %g s, the generation's was %g", it.ID, b.Seconds, staleSeconds[it.ID])
		}
		a.Seconds, b.Seconds = 0, 0 // two generations' wall times
		if !jsonEqual(t, a, b) {
			t.Errorf("record %s rescored:\n%+v\nfresh:\n%+v", it.ID, b, a)
		}
	}
	for _, name := range []string{SummaryFile, SummaryMarkdownFile, SubjectsMarkdownFile} {
		if a, b := readText(t, filepath.Join(fresh, name)), readText(t, filepath.Join(dir, name)); a != b {
			t.Errorf("%s differs between the fresh and the rescored run", name)
		}
	}
}

// A folder holds one experiment: other settings, or records made from
// other items, are refused with the difference named.
func TestRunRefusesAnotherExperiment(t *testing.T) {
	out := t.TempDir()
	bench := openTestBench(t, "dreambench", 2)
	cfg := testConfig(out, bench, &fakeGenerator{}, Models{})
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Scores.CLIPI != nil || sum.Scores.AP != nil || len(sum.Notes) != 3 {
		t.Fatalf("without models: scores %+v, notes %q", sum.Scores, sum.Notes)
	}
	cfg.Settings = map[string]string{"generator": "fake", "size": "128"}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `size="64"`) || !strings.Contains(err.Error(), `size="128"`) {
		t.Errorf("other settings: %v", err)
	}
	cfg = testConfig(out, openTestBench(t, "dreambench", 2), &fakeGenerator{}, Models{})
	cfg.Method = "other"
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "method") {
		t.Errorf("other method: %v", err)
	}

	// A record whose item changed (another seed under the same ID).
	moved := &itemBench{name: "dreambench", items: bench.Items()}
	moved.items[0].Seed = 99
	if _, err := Run(context.Background(), testConfig(out, moved, &fakeGenerator{}, Models{})); err == nil || !strings.Contains(err.Error(), "seed 99") {
		t.Errorf("changed item: %v", err)
	}

	// Damage before the last line is not a kill's: an error, not a repair.
	path := filepath.Join(out, RecordsFile)
	raw := readText(t, path)
	os.WriteFile(path, []byte("{oops\n"+raw), 0o644)
	if _, err := Run(context.Background(), testConfig(out, bench, &fakeGenerator{}, Models{})); err == nil || !strings.Contains(err.Error(), RecordsFile+":1:") {
		t.Errorf("damaged records: %v", err)
	}
}

func TestOpenBench(t *testing.T) {
	if _, err := OpenBench("imagenet", BenchOptions{}); err == nil || !strings.Contains(err.Error(), "dreambench, dreambench-multi, toyworld") {
		t.Errorf("unknown bench: %v", err)
	}
	if _, err := OpenBench("dreambench", BenchOptions{}); err == nil || !strings.Contains(err.Error(), "no data folder") {
		t.Errorf("no data: %v", err)
	}
	full, err := OpenBench("dreambench", BenchOptions{Data: dreamBenchDir(t), Views: 2})
	if err != nil {
		t.Fatal(err)
	}
	items := full.Items()
	if len(items) != 3000 || checkItems(items) != nil {
		t.Fatalf("%d items, check %v", len(items), checkItems(items))
	}
	it := items[4*25+5] // the second subject's sixth prompt, image 1
	s := it.Subjects[0]
	if it.ID != "backpack_dog/p01/i1" || it.Prompt != "a backpack in the snow" || it.Seed != 1 ||
		s.Word != "backpack" || len(s.Views) != 2 || len(s.References) != 5 {
		t.Errorf("item %d: %+v", 4*25+5, it)
	}
	multi := openTestBench(t, "dreambench-multi", 0)
	items = multi.Items()
	if len(items) != 180 || items[0].ID != "dog+backpack/p00/i0" || items[0].Prompt != "a dog and a backpack in the jungle" ||
		items[0].Subjects[1].Box != DreamBenchMultiLayouts[0].Boxes[1] {
		t.Errorf("multi: %d items, first %+v", len(items), items[0])
	}
}

func TestClassMapResolve(t *testing.T) {
	coco := []string{"person", "dog", "cat", "backpack", "teddy bear", "bowl", "vase"}
	m := ClassMap{Classes: coco}
	for _, c := range []struct {
		s    ItemSubject
		want string
	}{
		{ItemSubject{Name: "dog2", Class: "dog"}, "dog"},
		{ItemSubject{Name: "backpack_dog", Class: "backpack"}, "backpack"},
		{ItemSubject{Name: "bear_plushie", Class: "stuffed animal"}, "teddy bear"},
		{ItemSubject{Name: "berry_bowl", Class: "Bowl"}, "bowl"},
		{ItemSubject{Name: "candle", Class: "candle"}, ""},
		{ItemSubject{Name: "x", Class: "toy", DetectorClasses: []string{"cat", "dog"}}, "dog,cat"},
	} {
		if got := strings.Join(m.Resolve(&c.s), ","); got != c.want {
			t.Errorf("%s (%s): %q, want %q", c.s.Name, c.s.Class, got, c.want)
		}
	}
	m.Override = map[string][]string{"candle": {"vase"}, "dog": {}, "dog3": {"cat"}}
	for _, c := range []struct{ name, class, want string }{{"candle", "candle", "vase"}, {"dog2", "dog", ""}, {"dog3", "dog", "cat"}} {
		if got := strings.Join(m.Resolve(&ItemSubject{Name: c.name, Class: c.class}), ","); got != c.want {
			t.Errorf("override %s: %q, want %q", c.name, got, c.want)
		}
	}
	path := filepath.Join(t.TempDir(), "map.json")
	writeText(t, path, `{"candle": ["vase"], "toy": ["teddy bear", "Robot"]}`)
	if _, err := LoadClassMapOverride(path, coco); err == nil || !strings.Contains(err.Error(), `no class "Robot"`) {
		t.Errorf("unknown class: %v", err)
	}
}

func recordLine(t *testing.T, dir, id string) []byte {
	t.Helper()
	for _, line := range strings.SplitAfter(readText(t, filepath.Join(dir, RecordsFile)), "\n") {
		if strings.Contains(line, `"id":"`+id+`"`) {
			return []byte(line)
		}
	}
	t.Fatalf("no record %s", id)
	return nil
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readPNGSize(t *testing.T, path string) image.Point {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	return image.Pt(cfg.Width, cfg.Height)
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// Two runs on one folder would record items twice: the second is refused
// while the first holds the folder, and runs once it is done.
func TestRunRefusesASecondWriter(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockRun(dir); err == nil || !strings.Contains(err.Error(), "another lcpdiff eval") {
		t.Errorf("second writer: %v", err)
	}
	unlock()
	again, err := lockRun(dir)
	if err != nil {
		t.Fatalf("after the first finished: %v", err)
	}
	again()
}
