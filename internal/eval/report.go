package eval

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The summary aggregates a run the way the paper's tables read:
//
//   - CLIP-I, DINO and CLIP-T per subject over its generated images
//     (metrics.go: every (generated, real) pair for CLIP-I and DINO, each
//     image with its own prompt for CLIP-T), then the plain mean over
//     subjects (MeanOverSubjects). In a multi-subject image each subject is
//     compared with its own photos, the whole image standing for it.
//   - AP, AP50 and AP75 by COCOeval (EvaluateBoxes) over every image of the
//     run: the requested boxes are the ground truth, the detections of the
//     detector classes that stand for a subject (ClassMap) its candidates;
//     subjects that share their detector classes share a category.
//   - a bench scorer's per-image metrics: mean per subject over the images
//     that have the metric, then over subjects, like the identity scores.

// Scores are the run's (or one subject's) values; nil is not measured.
type Scores struct {
	CLIPI *float64 `json:"clip_i"`
	DINO  *float64 `json:"dino"`
	CLIPT *float64 `json:"clip_t"`
	AP    *float64 `json:"ap"`
	AP50  *float64 `json:"ap50"`
	AP75  *float64 `json:"ap75"`
	// Metrics are a bench scorer's metrics, by name.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Summary is summary.json.
type Summary struct {
	Bench  string `json:"bench"`
	Method string `json:"method"`
	Images int    `json:"images"`
	Scores Scores `json:"scores"`
	// Metrics names the bench scorer's metrics, in column order.
	Metrics []string `json:"metrics,omitempty"`
	// Notes say what was not measured and what AP leaves out, and why.
	Notes    []string          `json:"notes,omitempty"`
	Subjects []SubjectSummary  `json:"subjects"`
	Settings map[string]string `json:"settings"`
	// ContactSheets are the sheets' paths in the run folder.
	ContactSheets []string `json:"contact_sheets"`
}

// SubjectSummary is one row of the per-subject breakdown.
type SubjectSummary struct {
	Name       string `json:"name"`
	Class      string `json:"class"`
	Images     int    `json:"images"`
	References int    `json:"references"`
	// DetectorClasses stand for the subject in AP (empty: left out of
	// AP; absent: no detector).
	DetectorClasses []string `json:"detector_classes,omitempty"`
	Scores          Scores   `json:"scores"`
}

// SummaryInputs is what Summarize needs besides the items and records.
type SummaryInputs struct {
	Bench, Method string
	Settings      map[string]string
	Models        Models
	ClassOverride map[string][]string
	// Metrics names the scorer's metrics; OwnDetector says its detections
	// are the records' (Scorer.Detects).
	Metrics     []string
	OwnDetector bool
}

// subjectRun gathers one subject's images.
type subjectRun struct {
	subject *ItemSubject // as its first item gives it
	images  []int        // indices into the items
	prompts []string     // distinct prompts, first-seen order
	prompt  []int        // per image, its index in prompts
}

// Summarize computes the summary of items from their records (every item
// must have one). Real-image and prompt embeddings come from in.Models.
func Summarize(items []Item, records map[string]*Record, in SummaryInputs) (*Summary, error) {
	return summarize(items, records, in, modelEmbedder(in.Models))
}

func summarize(items []Item, records map[string]*Record, in SummaryInputs, e embedder) (sum *Summary, err error) {
	defer torch.Recover(&err)
	recs := make([]*Record, len(items))
	for i := range items {
		if recs[i] = records[items[i].ID]; recs[i] == nil {
			return nil, fmt.Errorf("summary: item %s has no record", items[i].ID)
		}
	}
	subjects := groupSubjects(items)
	sum = &Summary{
		Bench: in.Bench, Method: in.Method, Images: len(items), Metrics: in.Metrics,
		Settings: in.Settings, ContactSheets: []string{},
	}
	for _, sr := range subjects {
		sum.Subjects = append(sum.Subjects, SubjectSummary{
			Name: sr.subject.Name, Class: sr.subject.Class, Images: len(sr.images), References: len(sr.subject.References),
		})
	}
	if err := identityScores(sum, subjects, recs, e); err != nil {
		return nil, err
	}
	scorerMetrics(sum, subjects, recs, in.Metrics)
	if in.Models.Detector != nil || in.OwnDetector {
		var classes []string // nil: the bench's own detector, any class name
		if !in.OwnDetector {
			classes = in.Models.Detector.Config.Classes
		}
		boxAP(sum, subjects, items, recs, ClassMap{Classes: classes, Override: in.ClassOverride})
	} else {
		sum.Notes = append(sum.Notes, "AP, AP50, AP75 not measured: no detector given")
	}
	return sum, nil
}

// groupSubjects lists the subjects in first-seen order with their images.
func groupSubjects(items []Item) []*subjectRun {
	var out []*subjectRun
	index := map[string]*subjectRun{}
	for i := range items {
		for k := range items[i].Subjects {
			s := &items[i].Subjects[k]
			sr := index[s.Name]
			if sr == nil {
				sr = &subjectRun{subject: s}
				index[s.Name] = sr
				out = append(out, sr)
			}
			p := slices.Index(sr.prompts, items[i].Prompt)
			if p < 0 {
				p = len(sr.prompts)
				sr.prompts = append(sr.prompts, items[i].Prompt)
			}
			sr.images = append(sr.images, i)
			sr.prompt = append(sr.prompt, p)
		}
	}
	return out
}

// embedder gives the embeddings of real photos and prompts; a nil func is
// a model the run does not have.
type embedder struct {
	clipPhoto, dinoPhoto func(path string) ([]float64, error)
	clipText             func(prompt string) []float64
}

// modelEmbedder embeds with m's models, reading each photo once.
func modelEmbedder(m Models) embedder {
	photos := map[string]*data.RGB{}
	photo := func(path string) (*data.RGB, error) {
		if img, ok := photos[path]; ok {
			return img, nil
		}
		img, err := data.ReadImage(path)
		if err == nil {
			photos[path] = img
		}
		return img, err
	}
	var e embedder
	if m.CLIP != nil {
		e.clipPhoto = func(path string) (v []float64, err error) {
			img, err := photo(path)
			if err == nil {
				torch.NoGrad(func() { v = f64(m.CLIP.ImageEmbedding(img)) })
			}
			return v, err
		}
		e.clipText = func(prompt string) (v []float64) {
			torch.NoGrad(func() { v = f64(m.CLIP.TextEmbedding(prompt)) })
			return v
		}
	}
	if m.DINO != nil {
		e.dinoPhoto = func(path string) (v []float64, err error) {
			img, err := photo(path)
			if err == nil {
				torch.NoGrad(func() { v = f64(DINOEmbedding(m.DINO, img)) })
			}
			return v, err
		}
	}
	return e
}

// identityScores fills CLIP-I, CLIP-T and DINO, per subject and their
// means, from the records' embeddings and those of the real photos and
// prompts.
func identityScores(sum *Summary, subjects []*subjectRun, recs []*Record, e embedder) error {
	hasCLIP, hasDINO := e.clipPhoto != nil, e.dinoPhoto != nil
	if !hasCLIP {
		sum.Notes = append(sum.Notes, "CLIP-I, CLIP-T not measured: no CLIP model given")
	}
	if !hasDINO {
		sum.Notes = append(sum.Notes, "DINO not measured: no DINO model given")
	}
	if !hasCLIP && !hasDINO {
		return nil
	}
	scores := make([]SubjectScores, len(subjects))
	for si, sr := range subjects {
		var clipReal, dinoReal [][]float64
		for _, path := range sr.subject.References {
			if hasCLIP {
				v, err := e.clipPhoto(path)
				if err != nil {
					return fmt.Errorf("subject %s: %w", sr.subject.Name, err)
				}
				clipReal = append(clipReal, v)
			}
			if hasDINO {
				v, err := e.dinoPhoto(path)
				if err != nil {
					return fmt.Errorf("subject %s: %w", sr.subject.Name, err)
				}
				dinoReal = append(dinoReal, v)
			}
		}
		var clipGen, dinoGen [][]float64
		for _, i := range sr.images {
			r := recs[i]
			if hasCLIP && len(r.CLIP) == 0 || hasDINO && len(r.DINO) == 0 {
				return fmt.Errorf("record %s lacks an embedding the run's models give (made by another version?)", r.ID)
			}
			clipGen = append(clipGen, f64(r.CLIP))
			dinoGen = append(dinoGen, f64(r.DINO))
		}
		row := &sum.Subjects[si].Scores
		if hasCLIP {
			var text [][]float64
			for _, p := range sr.prompts {
				text = append(text, e.clipText(p))
			}
			scores[si].CLIPI = CLIPI(clipGen, clipReal)
			scores[si].CLIPT = CLIPT(clipGen, text, sr.prompt)
			row.CLIPI, row.CLIPT = ptr(scores[si].CLIPI), ptr(scores[si].CLIPT)
		}
		if hasDINO {
			scores[si].DINO = DINOScore(dinoGen, dinoReal)
			row.DINO = ptr(scores[si].DINO)
		}
	}
	mean := MeanOverSubjects(scores)
	if hasCLIP {
		sum.Scores.CLIPI, sum.Scores.CLIPT = ptr(mean.CLIPI), ptr(mean.CLIPT)
	}
	if hasDINO {
		sum.Scores.DINO = ptr(mean.DINO)
	}
	return nil
}

// scorerMetrics fills a bench scorer's metrics: per subject the mean over
// its images, then the mean over subjects. A metric an image does not have
// (one that only some images define) is left out of that image's subjects;
// a subject none of whose images has it is left out of the mean.
func scorerMetrics(sum *Summary, subjects []*subjectRun, recs []*Record, names []string) {
	for _, name := range names {
		var total float64
		var counted int
		for si, sr := range subjects {
			var s float64
			var n int
			for _, i := range sr.images {
				if v, ok := recs[i].Metrics[name]; ok {
					s += v
					n++
				}
			}
			if n == 0 {
				continue
			}
			row := &sum.Subjects[si].Scores
			if row.Metrics == nil {
				row.Metrics = map[string]float64{}
			}
			row.Metrics[name] = s / float64(n)
			total += row.Metrics[name]
			counted++
		}
		if counted > 0 {
			if sum.Scores.Metrics == nil {
				sum.Scores.Metrics = map[string]float64{}
			}
			sum.Scores.Metrics[name] = total / float64(counted)
		}
	}
}

// boxAP fills AP, AP50 and AP75 over the run and per subject.
func boxAP(sum *Summary, subjects []*subjectRun, items []Item, recs []*Record, cm ClassMap) {
	// A category per distinct set of detector classes, numbered in the
	// sorted order of the sets so that the numbering is the run's own.
	catOf := map[string]string{} // subject -> category key
	var keys []string
	var left []string
	for si, sr := range subjects {
		classes := cm.Resolve(sr.subject)
		sum.Subjects[si].DetectorClasses = append([]string{}, classes...)
		if len(classes) == 0 {
			left = append(left, fmt.Sprintf("%s (%s)", sr.subject.Name, sr.subject.Class))
			continue
		}
		key := categoryKey(classes)
		catOf[sr.subject.Name] = key
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	if len(left) > 0 {
		sum.Notes = append(sum.Notes, fmt.Sprintf("AP leaves out %d of %d subjects, which no detector class stands for: %s",
			len(left), len(subjects), strings.Join(left, ", ")))
	}
	if len(keys) == 0 {
		sum.Notes = append(sum.Notes, "AP, AP50, AP75 not measured: no subject maps to a detector class")
		return
	}
	slices.Sort(keys)
	catID := map[string]int{}
	byClass := map[string][]int{} // detector class -> categories it counts for
	for k, key := range keys {
		catID[key] = k + 1
		for _, c := range strings.Split(key, "|") {
			byClass[c] = append(byClass[c], k+1)
		}
	}
	var gts []GroundTruth
	var dets []Detection
	for i := range items {
		r := recs[i]
		for k, s := range items[i].Subjects {
			if key, ok := catOf[s.Name]; ok {
				gts = append(gts, GroundTruth{ImageID: i + 1, CategoryID: catID[key], Box: PixelBox(r.Subjects[k].Box, r.Width, r.Height)})
			}
		}
		for _, d := range r.Detections {
			for _, c := range byClass[normClass(d.Class)] {
				dets = append(dets, Detection{ImageID: i + 1, CategoryID: c, Box: PixelBox(d.Box, r.Width, r.Height), Score: d.Score})
			}
		}
	}
	all := make([]int, len(items))
	for i := range all {
		all[i] = i + 1
	}
	cats := make([]int, len(keys))
	for k := range cats {
		cats[k] = k + 1
	}
	setAP(&sum.Scores, EvaluateBoxes(gts, dets, all, cats))
	for si, sr := range subjects {
		key, ok := catOf[sr.subject.Name]
		if !ok {
			continue
		}
		ids := make([]int, len(sr.images))
		for j, i := range sr.images {
			ids[j] = i + 1
		}
		setAP(&sum.Subjects[si].Scores, EvaluateBoxes(gts, dets, ids, []int{catID[key]}))
	}
}

// categoryKey names a set of detector classes: sorted, lower case.
func categoryKey(classes []string) string {
	norm := make([]string, len(classes))
	for i, c := range classes {
		norm[i] = normClass(c)
	}
	slices.Sort(norm)
	return strings.Join(slices.Compact(norm), "|")
}

// setAP copies COCOeval's AP, AP50 and AP75; -1 (no ground truth) stays nil.
func setAP(s *Scores, st Stats) {
	for _, v := range []struct {
		dst **float64
		val float64
	}{{&s.AP, st.AP}, {&s.AP50, st.AP50}, {&s.AP75, st.AP75}} {
		if v.val != -1 {
			*v.dst = ptr(v.val)
		}
	}
}

func ptr(v float64) *float64 { return &v }

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
