package eval

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func tinyDetectorPath(t *testing.T) string { return golden.Path(t, "eval", "tiny_detector.pt") }

func loadTinyDetector(t *testing.T) *Detector {
	t.Helper()
	d, err := LoadDetector(tinyDetectorPath(t), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// goldenSources are the golden detector's two images before preprocessing.
func goldenSources(t *testing.T, f *torch.SafetensorsFile) []*data.RGB {
	var imgs []*data.RGB
	for i := range 2 {
		x := golden.Tensor(t, f, fmt.Sprintf("detector.source_u8.%d", i))
		imgs = append(imgs, &data.RGB{W: int(x.Size(1)), H: int(x.Size(0)), Pix: torch.Data[uint8](x)})
	}
	return imgs
}

// The golden inputs were made with F.interpolate(bilinear, no antialias)
// and (x - mean) / std in float32: the same calls here give the same bits.
func TestDetectorPreprocessMatchesGolden(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	d := loadTinyDetector(t)
	f := golden.File(t, "eval", "tiny_detector_golden.safetensors")
	got := d.Preprocess(goldenSources(t, f))
	golden.Compare(t, "detector.images (from detector.source_u8.*)", got, golden.Tensor(t, f, "detector.images"), 0)
}

// TestDetectorEndToEnd runs preprocessing, the module and the contract's
// reading of its rows on the golden source images: the padding rows go,
// the real rows keep the golden boxes, scores and labels.
func TestDetectorEndToEnd(t *testing.T) {
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			defer torch.SetNumThreads(torch.NumThreads())
			torch.SetNumThreads(threads)
			// The README's tolerance: one thread is bitwise on an AMD EPYC,
			// 5.96e-08 (boxes) and 1.79e-07 (scores) off on an Intel Xeon.
			const atol = 1e-6
			d := loadTinyDetector(t)
			f := golden.File(t, "eval", "tiny_detector_golden.safetensors")
			dets, err := d.Detect(goldenSources(t, f))
			if err != nil {
				t.Fatal(err)
			}
			boxes := golden.Tensor(t, f, "detector.boxes").Float64s()
			scores := golden.Tensor(t, f, "detector.scores").Float64s()
			labels := torch.Data[int64](golden.Tensor(t, f, "detector.labels"))
			classes := []string{"dog", "cat", "backpack"}
			var boxErr, scoreErr float64
			for i, want := range []int{5, 10} { // real rows per image
				if len(dets[i]) != want {
					t.Fatalf("image %d: %d detections, want %d", i, len(dets[i]), want)
				}
				for j, det := range dets[i] {
					k := i*10 + j
					if det.Label != int(labels[k]) || det.Class != classes[labels[k]] {
						t.Errorf("image %d row %d: label %d %q, want %d", i, j, det.Label, det.Class, labels[k])
					}
					scoreErr = max(scoreErr, math.Abs(det.Score-scores[k]))
					for c := range 4 {
						boxErr = max(boxErr, math.Abs(det.Box[c]-boxes[4*k+c]))
					}
				}
			}
			t.Logf("end to end from detector.source_u8.*: boxes max abs %.3g, scores max abs %.3g", boxErr, scoreErr)
			if boxErr > atol || scoreErr > atol {
				t.Errorf("boxes %.3g, scores %.3g: want <= %g", boxErr, scoreErr, atol)
			}
		})
	}
}

func TestDetectorScoreThreshold(t *testing.T) {
	dir := t.TempDir()
	pt := copyFile(t, tinyDetectorPath(t), filepath.Join(dir, "det.pt"))
	writeText(t, DetectorConfigPath(pt), `{"input_size": 64, "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
		"classes": ["dog", "cat", "backpack"], "score_threshold": 0.5}`)
	d, err := LoadDetector(pt, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dets, err := d.Detect(goldenSources(t, golden.File(t, "eval", "tiny_detector_golden.safetensors")))
	if err != nil {
		t.Fatal(err)
	}
	// Golden scores: image 0 has 0.674, 0.578 above 0.5; image 1 has 7.
	if len(dets[0]) != 2 || len(dets[1]) != 7 {
		t.Fatalf("threshold 0.5 kept %d and %d detections, want 2 and 7", len(dets[0]), len(dets[1]))
	}
}

func TestDetectorConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ json, want string }{
		{`{"input_size": 0, "normalize": {"mean": [0,0,0], "std": [1,1,1]}, "classes": ["a"]}`, "input_size 0"},
		{`{"input_size": 8, "normalize": {"mean": [0,0], "std": [1,1,1]}, "classes": ["a"]}`, "3 values"},
		{`{"input_size": 8, "normalize": {"mean": [0,0,0], "std": [1,0,1]}, "classes": ["a"]}`, "has a zero"},
		{`{"input_size": 8, "normalize": {"mean": [0,0,0], "std": [1,1,1]}, "classes": []}`, "classes: empty"},
		{`{"input_size": 8, "normalize": {"mean": [0,0,0], "std": [1,1,1]}, "classes": ["a", "A"]}`, "listed twice"},
		{`{"input_size": 8, "normalize": {"mean": [0,0,0], "std": [1,1,1]}, "classes": ["a"], "score_treshold": 0.3}`, "score_treshold"},
		{`{"input_size": 8, "normalize": {"mean": [0,0,0], "std": [1,1,1]}, "classes": ["a"], "score_threshold": -1}`, "score_threshold -1"},
		{`not json`, "invalid character"},
	} {
		path := filepath.Join(dir, "det.pt.json")
		writeText(t, path, c.json)
		_, err := LoadDetectorConfig(path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file and saying %q", c.json, err, c.want)
		}
	}
	if _, err := LoadDetector(filepath.Join(dir, "none.pt"), torch.CPU); err == nil || !strings.Contains(err.Error(), "none.pt.json") {
		t.Errorf("missing JSON: %v", err)
	}
}

// TestDetectorContractViolations edits the golden module's forward so that
// it breaks the contract in each way a real export can.
func TestDetectorContractViolations(t *testing.T) {
	src := tinyDetectorPath(t)
	f := golden.File(t, "eval", "tiny_detector_golden.safetensors")
	for _, c := range []struct{ sig, ret, want string }{
		{"Tuple[Tensor, Tensor]", "(boxes1, scores1)", "returned 2 tensors"},
		{"Tuple[Tensor, Tensor, Tensor]", "(boxes1, scores1, torch.to(labels1, 6))", "labels is f32 [2 10], the contract wants i64 [B N]"},
		{"Tuple[Tensor, Tensor, Tensor]", "(torch.slice(boxes1, 2, 0, 3), scores1, labels1)", "boxes is f32 [2 10 3]"},
		{"Tuple[Tensor, Tensor, Tensor]", "(boxes1, torch.slice(scores1, 1, 0, 5), labels1)", "scores is f32 [2 5]"},
		{"Tuple[Tensor, Tensor, Tensor]", "(torch.slice(boxes1, 0, 0, 1), scores1, labels1)", "boxes is f32 [1 10 4]"},
		{"Tuple[Tensor, Tensor, Tensor]", "(boxes1, scores1, torch.add(labels1, 3))", "label 4 is not an index into the 3 classes"},
	} {
		dir := t.TempDir()
		pt := golden.DetectorVariant(t, src, filepath.Join(dir, "det.pt"), c.sig, c.ret)
		copyFile(t, DetectorConfigPath(src), DetectorConfigPath(pt))
		d, err := LoadDetector(pt, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Detect(goldenSources(t, f))
		d.Close()
		t.Logf("%s: %v", c.ret, err)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), pt) || strings.Contains(err.Error(), "\n") {
			t.Errorf("return %s: error %v, want one line naming the file and saying %q", c.ret, err, c.want)
		}
	}
}

func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeText(t, dst, string(b))
	return dst
}

func writeText(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
