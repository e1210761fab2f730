package eval

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// A run generates every item of a benchmark, measures each image as it is
// made and appends one record per image to records.jsonl; a second run
// with the same --out resumes where the first stopped. Then it writes the
// summary, the Markdown tables and the contact sheets.
//
// What a benchmark brings is a list of items and, optionally, its own
// scorer: a new benchmark is one file that implements Bench and registers
// itself (RegisterBench).

// Item is one image to generate and score.
type Item struct {
	// ID is stable across runs and versions: the key of the item's record,
	// and its image's path under images/ (so '/' makes folders). Letters,
	// digits, '_', '-', '+', '.' and '/'.
	ID       string
	Prompt   string
	Seed     uint64
	Subjects []ItemSubject
	// Target is the real image the prompt and boxes were read from, when
	// the benchmark has one (the toy world's test frame): what a perfect
	// generator would make.
	Target string
}

// ItemSubject is one subject of an item.
type ItemSubject struct {
	Name   string // the benchmark's subject, e.g. "dog2": the per-subject row
	Class  string // its class noun, e.g. "dog": the static refiner's category
	Word   string // the prompt's word(s) naming it
	Phrase string // its grounding phrase
	// Views are the reference images the generator is given, Masks the
	// subject's mask per view ("" or a short list: none).
	Views, Masks []string
	// References are the real images CLIP-I and DINO compare with.
	References []string
	// Box is the requested box, normalised x0, y0, x1, y1.
	Box [4]float64
	// DetectorClasses, when set, are the detector classes that stand for
	// the subject, replacing the class map (a bench with its own detector).
	DetectorClasses []string
}

// Bench is a benchmark.
type Bench interface {
	// Name is the --bench name.
	Name() string
	// Items are the images to make, in run order, with unique IDs.
	Items() []Item
	// Scorer is the bench's own scorer, or nil.
	Scorer() Scorer
}

// Scorer adds a benchmark's own measurements of each image.
type Scorer interface {
	// Metrics names the per-image metrics Score returns, in table order.
	Metrics() []string
	// Detects reports whether Score's detections are the run's, replacing
	// the TorchScript detector's.
	Detects() bool
	// Score measures img, generated for item.
	Score(item *Item, img *data.RGB) (ImageScores, error)
	// Close releases what the scorer holds.
	Close()
}

// ImageScores are a Scorer's measurements of one image.
type ImageScores struct {
	Metrics    map[string]float64
	Detections []DetectedBox
}

// Generator makes the image of an item. parameters is the text stored in
// the PNG (the AUTOMATIC1111 "parameters" chunk).
type Generator interface {
	Generate(item *Item) (img *image.RGBA, parameters string, err error)
}

// RunConfig is what Run needs.
type RunConfig struct {
	Out       string // the run's folder
	Bench     Bench
	Generator Generator
	// Method is the run's description, the row label of --compare
	// ("base", "IP-Adapter", "LCP").
	Method string
	// Settings are everything that shapes the images or their
	// measurements (model, steps, seeds, metric models...): a resumed run
	// must have the same, or its images would mix two experiments.
	Settings map[string]string
	// Models are the metric models; a nil one is a metric not measured.
	Models Models
	// ClassOverride is the --class-map file's mapping (may be nil).
	ClassOverride map[string][]string
	// Progress, when set, is called before the first image of a stage
	// (done 0) and after each one, with how many of the stage's total are
	// done. The stages are "rescoring" (with Rescore, the recorded images)
	// and then "images" (those this process makes).
	Progress func(stage string, done, total int)
	// Log receives notes (a dropped truncated record, the resume point).
	Log io.Writer
	// Rescore measures the images already recorded again, from their
	// PNGs, before making the missing ones: a changed detector or metric
	// model re-scores a run without generating it again.
	Rescore bool
}

// Files of a run folder.
const (
	SettingsFile         = "run.json"
	RecordsFile          = "records.jsonl"
	SummaryFile          = "summary.json"
	SummaryMarkdownFile  = "summary.md"
	SubjectsMarkdownFile = "subjects.md"
	imagesDir            = "images"
	contactDir           = "contact"
)

var itemIDPattern = regexp.MustCompile(`^[A-Za-z0-9_+.-]+(/[A-Za-z0-9_+.-]+)*$`)

// Run generates and measures the items of cfg.Bench that have no record
// yet, then summarises every item. It returns ctx's error, with all
// finished images recorded, when ctx ends first.
func Run(ctx context.Context, cfg RunConfig) (*Summary, error) {
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	items := cfg.Bench.Items()
	if err := checkItems(items); err != nil {
		return nil, fmt.Errorf("bench %s: %w", cfg.Bench.Name(), err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Out, imagesDir), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockRun(cfg.Out)
	if err != nil {
		return nil, err
	}
	defer unlock()
	settings := runSettings(cfg)
	if err := checkSettings(filepath.Join(cfg.Out, SettingsFile), settings); err != nil {
		return nil, err
	}
	removeTempFiles(cfg.Out)
	rf, err := openRecords(filepath.Join(cfg.Out, RecordsFile), log)
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	if err := rf.checkAgainst(items); err != nil {
		return nil, err
	}

	scorer := cfg.Bench.Scorer()
	if scorer != nil {
		defer scorer.Close()
	}
	if cfg.Rescore {
		if err := rescore(ctx, cfg, scorer, items, rf, log); err != nil {
			return nil, err
		}
	}
	var todo []*Item
	for i := range items {
		if _, ok := rf.byID[items[i].ID]; !ok {
			todo = append(todo, &items[i])
		}
	}
	if len(rf.byID) > 0 {
		fmt.Fprintf(log, "resuming %s: %d of %d images already recorded\n", cfg.Out, len(items)-len(todo), len(items))
	}
	if cfg.Progress != nil && len(todo) > 0 {
		cfg.Progress(StageImages, 0, len(todo))
	}
	for n, item := range todo {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("interrupted with %d of %d images recorded (run again to resume): %w", len(items)-len(todo)+n, len(items), err)
		}
		rec, err := makeRecord(cfg, scorer, item)
		if err != nil {
			return nil, fmt.Errorf("item %s: %w", item.ID, err)
		}
		if err := rf.append(rec); err != nil {
			return nil, err
		}
		if cfg.Progress != nil {
			cfg.Progress(StageImages, n+1, len(todo))
		}
	}
	var metrics []string
	if scorer != nil {
		metrics = scorer.Metrics()
	}
	sum, err := Summarize(items, rf.byID, SummaryInputs{
		Bench: cfg.Bench.Name(), Method: cfg.Method, Settings: settings, Models: cfg.Models,
		ClassOverride: cfg.ClassOverride, Metrics: metrics, OwnDetector: scorer != nil && scorer.Detects(),
	})
	if err != nil {
		return nil, err
	}
	if err := WriteReports(cfg.Out, sum, items, rf.byID); err != nil {
		return nil, err
	}
	return sum, nil
}

// runSettings are the settings a resumed run must share, the bench and
// the method included.
func runSettings(cfg RunConfig) map[string]string {
	s := map[string]string{"bench": cfg.Bench.Name(), "method": cfg.Method}
	for k, v := range cfg.Settings {
		s[k] = v
	}
	return s
}

func checkItems(items []Item) error {
	if len(items) == 0 {
		return errors.New("no items to generate")
	}
	seen := map[string]bool{}
	for _, it := range items {
		switch {
		case !itemIDPattern.MatchString(it.ID):
			return fmt.Errorf("item ID %q: want letters, digits, _ - + . and / between them", it.ID)
		case seen[it.ID]:
			return fmt.Errorf("item ID %q is used twice", it.ID)
		case len(it.Subjects) == 0:
			return fmt.Errorf("item %s has no subject", it.ID)
		}
		seen[it.ID] = true
	}
	return nil
}

// imagePath is where an item's PNG goes, relative to the run folder.
func imagePath(id string) string { return filepath.ToSlash(filepath.Join(imagesDir, id+".png")) }

// makeRecord generates one item, writes its PNG (atomically) and measures
// it. Every tensor it makes is freed before it returns.
func makeRecord(cfg RunConfig, scorer Scorer, item *Item) (rec *Record, err error) {
	start := time.Now()
	s := torch.NewScope()
	defer s.Close()
	img, params, err := cfg.Generator.Generate(item)
	if err != nil {
		return nil, err
	}
	rel := imagePath(item.ID)
	path := filepath.Join(cfg.Out, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := pipeline.WritePNG(path, img, params); err != nil {
		return nil, err
	}
	rgb := rgbOf(img)
	rec = newRecord(item, rel, rgb.W, rgb.H)
	if err := measure(cfg, scorer, item, rgb, rec); err != nil {
		return nil, err
	}
	rec.Seconds = time.Since(start).Seconds()
	return rec, nil
}

// measure fills in rec's measurements of img: the metric models' and the
// bench scorer's.
func measure(cfg RunConfig, scorer Scorer, item *Item, img *data.RGB, rec *Record) error {
	ownDetector := scorer != nil && scorer.Detects()
	if err := cfg.Models.measure(rec, img, !ownDetector); err != nil {
		return err
	}
	if scorer != nil {
		sc, err := scorer.Score(item, img)
		if err != nil {
			return fmt.Errorf("scorer: %w", err)
		}
		rec.Metrics = sc.Metrics
		if ownDetector {
			rec.Detections = sc.Detections
			if rec.Detections == nil {
				rec.Detections = []DetectedBox{}
			}
		}
	}
	return nil
}

// The stages Run reports to RunConfig.Progress.
const (
	StageRescoring = "rescoring"
	StageImages    = "images"
)

// rescore measures every recorded image of items again from its PNG (in
// the order of items) and replaces records.jsonl in one rename, so a kill
// or an interruption leaves the old records or the new, never a mix.
// Records of items the run does not list are kept as they are.
func rescore(ctx context.Context, cfg RunConfig, scorer Scorer, items []Item, rf *recordsFile, log io.Writer) error {
	var recorded []int // indices into items
	for i := range items {
		if rf.byID[items[i].ID] != nil {
			recorded = append(recorded, i)
		}
	}
	progress := func(done int) {
		if cfg.Progress != nil && len(recorded) > 0 {
			cfg.Progress(StageRescoring, done, len(recorded))
		}
	}
	progress(0)
	for n, i := range recorded {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted rescoring, the records as they were: %w", err)
		}
		old := rf.byID[items[i].ID]
		path := filepath.Join(cfg.Out, filepath.FromSlash(old.Image))
		img, err := data.ReadImage(path)
		if err != nil {
			return fmt.Errorf("rescore record %s: %w", old.ID, err)
		}
		rec := newRecord(&items[i], old.Image, img.W, img.H)
		rec.Seconds = old.Seconds // the generation's time: rescoring makes nothing
		s := torch.NewScope()
		err = measure(cfg, scorer, &items[i], img, rec)
		s.Close() // the metric models' tensors, freed image by image
		if err != nil {
			return fmt.Errorf("rescore record %s: %w", old.ID, err)
		}
		rf.byID[rec.ID] = rec
		progress(n + 1)
	}
	if err := rf.rewrite(); err != nil {
		return err
	}
	fmt.Fprintf(log, "rescored the %d recorded images of %s\n", len(recorded), cfg.Out)
	return nil
}

// rgbOf is the 8-bit RGB image of a generated RGBA one (alpha is 255): the
// pixels the PNG holds, so measuring it now or reading the PNG back later
// gives the same numbers.
func rgbOf(img *image.RGBA) *data.RGB {
	b := img.Bounds()
	out := data.NewRGB(b.Dx(), b.Dy())
	for y := range out.H {
		row := img.Pix[y*img.Stride:]
		for x := range out.W {
			copy(out.Pix[3*(y*out.W+x):], row[4*x:4*x+3])
		}
	}
	return out
}
