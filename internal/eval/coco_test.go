package eval

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
)

// cocoGroundTruth is the part of a COCO annotation file that box AP reads.
type cocoGroundTruth struct {
	Images []struct {
		ID int `json:"id"`
	} `json:"images"`
	Categories []struct {
		ID int `json:"id"`
	} `json:"categories"`
	Annotations []struct {
		ImageID    int        `json:"image_id"`
		CategoryID int        `json:"category_id"`
		BBox       [4]float64 `json:"bbox"`
		Area       float64    `json:"area"`
		IsCrowd    int        `json:"iscrowd"`
	} `json:"annotations"`
}

// cocoDetection is one entry of a COCO results file.
type cocoDetection struct {
	ImageID    int        `json:"image_id"`
	CategoryID int        `json:"category_id"`
	BBox       [4]float64 `json:"bbox"`
	Score      float64    `json:"score"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// loadCOCO reads a ground-truth and a results file the way
// COCO(gt).loadRes(dets) sees them: the image and category lists come from
// the ground truth file.
func loadCOCO(t *testing.T, gtPath, detPath string) (gts []GroundTruth, dets []Detection, imageIDs, categoryIDs []int) {
	var gf cocoGroundTruth
	readJSON(t, gtPath, &gf)
	for _, im := range gf.Images {
		imageIDs = append(imageIDs, im.ID)
	}
	for _, c := range gf.Categories {
		categoryIDs = append(categoryIDs, c.ID)
	}
	for _, a := range gf.Annotations {
		if a.Area == 0 {
			t.Fatalf("%s: annotation without area (pycocotools needs it)", gtPath)
		}
		gts = append(gts, GroundTruth{ImageID: a.ImageID, CategoryID: a.CategoryID, Box: a.BBox, Area: a.Area, IsCrowd: a.IsCrowd != 0})
	}
	var df []cocoDetection
	readJSON(t, detPath, &df)
	for _, d := range df {
		dets = append(dets, Detection{ImageID: d.ImageID, CategoryID: d.CategoryID, Box: d.BBox, Score: d.Score})
	}
	return gts, dets, imageIDs, categoryIDs
}

var statNames = [12]string{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}

// TestCOCOGolden compares with pycocotools on the two golden sets: the 12
// stats (float64) and the precision / recall arrays (stored as float32).
func TestCOCOGolden(t *testing.T) {
	var ref map[string]struct {
		GT, Dets string
		Stats    map[string]float64
		Params   struct {
			IoUThrs []float64 `json:"iouThrs"`
			CatIDs  []int     `json:"catIds"`
			ImgIDs  []int     `json:"imgIds"`
		}
	}
	readJSON(t, golden.Path(t, "eval", "coco", "coco_stats.json"), &ref)
	arrays := golden.File(t, "eval", "coco", "coco_eval_arrays.safetensors")

	worst := 0.0
	for _, name := range []string{"case1", "case2"} {
		c := ref[name]
		if len(c.Stats) != 12 {
			t.Fatalf("%s: %d stats in coco_stats.json", name, len(c.Stats))
		}
		gts, dets, imgs, cats := loadCOCO(t, golden.Path(t, "eval", "coco", c.GT), golden.Path(t, "eval", "coco", c.Dets))
		if fmt.Sprint(unique(imgs)) != fmt.Sprint(c.Params.ImgIDs) || fmt.Sprint(unique(cats)) != fmt.Sprint(c.Params.CatIDs) {
			t.Fatalf("%s: image / category lists differ from COCOeval's params", name)
		}
		if fmt.Sprint(iouThresholds) != fmt.Sprint(c.Params.IoUThrs) {
			t.Fatalf("IoU thresholds %v, pycocotools %v", iouThresholds, c.Params.IoUThrs)
		}
		ev := Evaluate(gts, dets, imgs, cats)
		got := ev.Stats()
		caseWorst := 0.0
		for i, v := range got.Array() {
			want := c.Stats[statNames[i]]
			d := math.Abs(v - want)
			caseWorst = max(caseWorst, d)
			if !(d <= 1e-12) {
				t.Errorf("%s %s = %.17g, pycocotools %.17g", name, statNames[i], v, want)
			}
		}
		// Expect 0: the means are summed like np.mean (pairwiseSum); a
		// plain loop would be off by up to 8e-15 here.
		t.Logf("%s: 12 stats, max abs error %.3g", name, caseWorst)
		worst = max(worst, caseWorst)

		// The nil lists stand for every ID in the boxes: same numbers.
		if again := EvaluateBoxes(gts, dets, nil, nil).Array(); again != got.Array() {
			t.Errorf("%s: nil ID lists give %v, want %v", name, again, got.Array())
		}

		// The arrays are float32 roundings of pycocotools' float64 values,
		// so equal float64 values round to the same float32.
		prec := golden.Tensor(t, arrays, name+".precision").Float32s()
		rec := golden.Tensor(t, arrays, name+".recall").Float32s()
		K := len(ev.CategoryIDs)
		n, bad := 0, 0
		for ti := range numIoU {
			for k := range K {
				for a := range numArea {
					for m := range numMaxDet {
						for r := range numRecall {
							if g, w := float32(ev.Precision(ti, r, k, a, m)), prec[(((ti*numRecall+r)*K+k)*numArea+a)*numMaxDet+m]; g != w {
								bad++
								if bad < 10 {
									t.Errorf("%s precision[%d,%d,%d,%d,%d] = %v, want %v", name, ti, r, k, a, m, g, w)
								}
							}
							n++
						}
						if g, w := float32(ev.Recall(ti, k, a, m)), rec[((ti*K+k)*numArea+a)*numMaxDet+m]; g != w {
							bad++
							t.Errorf("%s recall[%d,%d,%d,%d] = %v, want %v", name, ti, k, a, m, g, w)
						}
						n++
					}
				}
			}
		}
		t.Logf("%s: %d precision / recall values, %d differ (as float32)", name, n, bad)
	}
	t.Logf("max abs error over both sets: %.3g", worst)
}

func box(x, y, w, h float64) [4]float64 { return [4]float64{x, y, w, h} }

// near accepts COCOeval's "1": precision 1/(1+eps).
func near(got, want float64) bool { return math.Abs(got-want) <= 1e-15 }

func TestCOCOPerfectDetection(t *testing.T) {
	gts := []GroundTruth{{ImageID: 1, CategoryID: 1, Box: box(10, 10, 50, 50), Area: 2500}} // medium
	dets := []Detection{{ImageID: 1, CategoryID: 1, Box: box(10, 10, 50, 50), Score: 0.9}}
	s := EvaluateBoxes(gts, dets, nil, nil)
	want := Stats{
		AP: 1, AP50: 1, AP75: 1, APSmall: -1, APMedium: 1, APLarge: -1,
		AR1: 1, AR10: 1, AR100: 1, ARSmall: -1, ARMedium: 1, ARLarge: -1,
	}
	for i, v := range s.Array() {
		if !near(v, want.Array()[i]) {
			t.Errorf("%s = %v, want %v", statNames[i], v, want.Array()[i])
		}
	}
	if s.AP != 1/(1+eps) {
		t.Errorf("AP = %.17g, pycocotools stores 1/(1+eps) = %.17g", s.AP, 1/(1+eps))
	}
}

func TestCOCONoDetections(t *testing.T) {
	gts := []GroundTruth{
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 10, 10)},
		{ImageID: 2, CategoryID: 2, Box: box(0, 0, 200, 100)},
	}
	s := EvaluateBoxes(gts, nil, nil, nil)
	want := [12]float64{0, 0, 0, 0, -1, 0, 0, 0, 0, 0, -1, 0}
	if s.Array() != want {
		t.Errorf("stats %v, want %v", s.Array(), want)
	}
	if fmt.Sprint(s.CategoryIDs, s.CategoryAP) != "[1 2] [0 0]" {
		t.Errorf("per category %v %v", s.CategoryIDs, s.CategoryAP)
	}

	// Nothing to evaluate at all: every stat undefined.
	if s := EvaluateBoxes(nil, nil, []int{1}, []int{1}); s.Array() != [12]float64{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1} {
		t.Errorf("empty stats %v", s.Array())
	}
}

// TestCOCOCrowd: detections inside a crowd region are neither true nor
// false positives, however many there are and however small, because the
// crowd IoU divides by the detection's area only.
func TestCOCOCrowd(t *testing.T) {
	gts := []GroundTruth{
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 40, 40)},
		{ImageID: 1, CategoryID: 1, Box: box(100, 100, 200, 200), IsCrowd: true},
	}
	dets := []Detection{
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 40, 40), Score: 0.5},
		{ImageID: 1, CategoryID: 1, Box: box(110, 110, 20, 20), Score: 0.9},
		{ImageID: 1, CategoryID: 1, Box: box(150, 150, 30, 30), Score: 0.8},
	}
	if got := boxIoU(dets[1].Box, gts[1].Box, true); got != 1 {
		t.Errorf("crowd IoU %v, want 1", got)
	}
	if got := EvaluateBoxes(gts, dets, nil, nil); !near(got.AP, 1) || !near(got.AR100, 1) {
		t.Errorf("with crowd: AP %v AR100 %v, want 1 and 1", got.AP, got.AR100)
	}
	// As a regular ground truth the big box is missed and the two small
	// detections are false positives ranked first.
	gts[1].IsCrowd = false
	if got := EvaluateBoxes(gts, dets, nil, nil); !(got.AP < 0.5) || got.AR100 != 0.5 {
		t.Errorf("without crowd: AP %v AR100 %v, want < 0.5 and 0.5", got.AP, got.AR100)
	}
}

// TestCOCOScoreTies: equal scores keep the input order within an image
// (stable sort) and image-ID order across images.
func TestCOCOScoreTies(t *testing.T) {
	gt := GroundTruth{ImageID: 1, CategoryID: 1, Box: box(0, 0, 50, 50)}
	hit := Detection{ImageID: 1, CategoryID: 1, Box: box(0, 0, 50, 50), Score: 0.7}
	miss := Detection{ImageID: 1, CategoryID: 1, Box: box(200, 200, 50, 50), Score: 0.7}

	// The hit ranked first: precision 1 at recall 1. Second: 1/2.
	first := EvaluateBoxes([]GroundTruth{gt}, []Detection{hit, miss}, nil, nil).AP
	second := EvaluateBoxes([]GroundTruth{gt}, []Detection{miss, hit}, nil, nil).AP
	if !near(first, 1) || !near(second, 0.5) {
		t.Errorf("within an image: AP %v (hit first), %v (miss first); want 1, 0.5", first, second)
	}

	// Across images the lower image ID goes first whatever the input order.
	miss2 := miss
	miss2.ImageID = 2
	for _, dets := range [][]Detection{{hit, miss2}, {miss2, hit}} {
		if ap := EvaluateBoxes([]GroundTruth{gt}, dets, nil, nil).AP; !near(ap, 1) {
			t.Errorf("hit in image 1 tied with a miss in image 2: AP %v, want 1", ap)
		}
	}
	hit2, gt2 := hit, gt
	hit2.ImageID, gt2.ImageID = 2, 2
	if ap := EvaluateBoxes([]GroundTruth{gt2}, []Detection{hit2, miss}, nil, nil).AP; !near(ap, 0.5) {
		t.Errorf("miss in image 1 tied with a hit in image 2: AP %v, want 0.5", ap)
	}

	// Two tied detections on one ground truth: the first in input order
	// takes it, the other is a false positive.
	a, b := hit, hit
	b.Box = box(0, 0, 50, 40) // IoU 0.8: matches up to threshold 0.8
	for _, tc := range []struct {
		dets []Detection
		ap   float64
	}{
		// a first: every threshold matched, AP 1. b first: b matches
		// the thresholds up to 0.8 (7 of 10, AP 1 each); above, a
		// matches after b's false positive (AP 0.5 each).
		{[]Detection{a, b}, 1},
		{[]Detection{b, a}, (7 + 3*0.5) / 10},
	} {
		if ap := EvaluateBoxes([]GroundTruth{gt}, tc.dets, nil, nil).AP; math.Abs(ap-tc.ap) > 1e-15 {
			t.Errorf("tied detections on one ground truth: AP %v, want %v", ap, tc.ap)
		}
	}
}

// TestCOCOAreaRanges: both ends of a range belong to it, the ground
// truth's Area (not its box) decides, and an unmatched detection outside
// the range is no false positive there.
func TestCOCOAreaRanges(t *testing.T) {
	gts := []GroundTruth{{ImageID: 1, CategoryID: 1, Box: box(0, 0, 32, 32)}} // area 1024 = 32²
	dets := []Detection{{ImageID: 1, CategoryID: 1, Box: box(0, 0, 32, 32), Score: 1}}
	s := EvaluateBoxes(gts, dets, nil, nil)
	if !near(s.APSmall, 1) || !near(s.APMedium, 1) || s.APLarge != -1 {
		t.Errorf("area 32²: APs %v APm %v APl %v, want 1 1 -1", s.APSmall, s.APMedium, s.APLarge)
	}
	gts[0].Area = 20000 // large by its Area field, whatever the box says
	s = EvaluateBoxes(gts, dets, nil, nil)
	if s.APSmall != -1 || s.APMedium != -1 || !near(s.APLarge, 1) {
		t.Errorf("Area 20000: APs %v APm %v APl %v, want -1 -1 1", s.APSmall, s.APMedium, s.APLarge)
	}

	// A small false positive ranked above a large hit hurts AP but not
	// APl, where it lies outside the range.
	gts = []GroundTruth{{ImageID: 1, CategoryID: 1, Box: box(0, 0, 200, 200)}}
	dets = []Detection{
		{ImageID: 1, CategoryID: 1, Box: box(300, 300, 10, 10), Score: 0.9},
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 200, 200), Score: 0.8},
	}
	s = EvaluateBoxes(gts, dets, nil, nil)
	if !near(s.AP, 0.5) || !near(s.APLarge, 1) {
		t.Errorf("AP %v APl %v, want 0.5 and 1", s.AP, s.APLarge)
	}
}

// TestCOCOMaxDets: AR1 sees only each image's best detection.
func TestCOCOMaxDets(t *testing.T) {
	gts := []GroundTruth{
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 50, 50)},
		{ImageID: 1, CategoryID: 1, Box: box(100, 0, 50, 50)},
	}
	dets := []Detection{
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 50, 50), Score: 0.9},
		{ImageID: 1, CategoryID: 1, Box: box(100, 0, 50, 50), Score: 0.8},
	}
	s := EvaluateBoxes(gts, dets, nil, nil)
	if s.AR1 != 0.5 || s.AR10 != 1 || s.AR100 != 1 {
		t.Errorf("AR1 %v AR10 %v AR100 %v, want 0.5 1 1", s.AR1, s.AR10, s.AR100)
	}
}

func TestCOCOFilters(t *testing.T) {
	gts := []GroundTruth{{ImageID: 1, CategoryID: 1, Box: box(0, 0, 50, 50)}}
	dets := []Detection{
		{ImageID: 1, CategoryID: 1, Box: box(0, 0, 50, 50), Score: 0.5},
		{ImageID: 3, CategoryID: 1, Box: box(0, 0, 50, 50), Score: 0.9}, // image not evaluated
		{ImageID: 1, CategoryID: 2, Box: box(0, 0, 50, 50), Score: 0.9}, // category not evaluated
	}
	if s := EvaluateBoxes(gts, dets, []int{1, 2, 1}, []int{1}); !near(s.AP, 1) {
		t.Errorf("AP %v, want 1 with the other image and category left out", s.AP)
	}
}

func TestLinspace(t *testing.T) {
	// The values np.linspace gives (printed by Python's repr).
	if got := fmt.Sprint(iouThresholds); got != "[0.5 0.55 0.6 0.65 0.7 0.75 0.8 0.85 0.8999999999999999 0.95]" {
		t.Errorf("IoU thresholds %s", got)
	}
	if len(recallThresholds) != 101 || recallThresholds[100] != 1 || recallThresholds[3] != 3*0.01 {
		t.Errorf("recall thresholds %v", recallThresholds)
	}
}

func TestPixelBox(t *testing.T) {
	got := PixelBox([4]float64{0.25, 0.5, 0.75, 1}, 640, 480)
	if want := [4]float64{160, 240, 320, 240}; got != want {
		t.Errorf("PixelBox = %v, want %v", got, want)
	}
}
