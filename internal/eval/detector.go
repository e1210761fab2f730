package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// A detector for box AP follows shared/spec/detector.md: a TorchScript
// module whose forward takes images [B, 3, S, S] (float32, resized to S x S
// bilinearly from [0, 1] pixels, then normalised) and returns (boxes
// [B, N, 4] float32 normalised x0, y0, x1, y1; scores [B, N] float32;
// labels [B, N] int64 indices into classes), with a JSON file beside it
// (the module's path with ".json" appended) giving S, the normalisation,
// the class names and a score threshold.

// DetectorConfig is the JSON beside a detector.
type DetectorConfig struct {
	InputSize int `json:"input_size"`
	Normalize struct {
		Mean []float64 `json:"mean"`
		Std  []float64 `json:"std"`
	} `json:"normalize"`
	Classes []string `json:"classes"`
	// ScoreThreshold is the caller's cut: a row is a detection when its
	// score is at least this and above 0 (padding rows score 0).
	ScoreThreshold float64 `json:"score_threshold"`
}

// DetectorConfigPath is where a detector's JSON lives: beside it, with
// ".json" appended to its name.
func DetectorConfigPath(module string) string { return module + ".json" }

// LoadDetectorConfig reads and checks a detector's JSON; unknown fields are
// errors, so a misspelt key cannot pass for a default.
func LoadDetectorConfig(path string) (DetectorConfig, error) {
	var c DetectorConfig
	raw, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("detector config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("detector config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("detector config %s: %w", path, err)
	}
	return c, nil
}

// Validate reports every field the contract needs that is missing or wrong.
func (c DetectorConfig) Validate() error {
	var errs []error
	if c.InputSize <= 0 {
		errs = append(errs, fmt.Errorf("input_size %d: want a positive size in pixels", c.InputSize))
	}
	if len(c.Normalize.Mean) != 3 || len(c.Normalize.Std) != 3 {
		errs = append(errs, fmt.Errorf("normalize: want mean and std of 3 values (R, G, B), got %d and %d",
			len(c.Normalize.Mean), len(c.Normalize.Std)))
	} else if c.Normalize.Std[0] == 0 || c.Normalize.Std[1] == 0 || c.Normalize.Std[2] == 0 {
		errs = append(errs, fmt.Errorf("normalize: std %v has a zero", c.Normalize.Std))
	}
	if len(c.Classes) == 0 {
		errs = append(errs, errors.New("classes: empty"))
	}
	seen := map[string]bool{}
	for i, name := range c.Classes {
		key := strings.ToLower(strings.TrimSpace(name))
		if key == "" {
			errs = append(errs, fmt.Errorf("classes[%d] is empty", i))
		} else if seen[key] {
			errs = append(errs, fmt.Errorf("classes[%d] %q is listed twice", i, name))
		}
		seen[key] = true
	}
	if !(c.ScoreThreshold >= 0) {
		errs = append(errs, fmt.Errorf("score_threshold %v: want 0 or more", c.ScoreThreshold))
	}
	return errors.Join(errs...)
}

// DetectedBox is one detection: Box is normalised x0, y0, x1, y1 (origin
// at the top left), Label the index in the detector's classes and Class its
// name.
type DetectedBox struct {
	Box   [4]float64 `json:"box"`
	Score float64    `json:"score"`
	Label int        `json:"label"`
	Class string     `json:"class"`
}

// Detector is a loaded detector and its config.
type Detector struct {
	Path   string
	Config DetectorConfig
	module *torch.Module
}

// LoadDetector loads the TorchScript module at path onto device, with its
// JSON from DetectorConfigPath(path).
func LoadDetector(path string, device torch.Device) (*Detector, error) {
	cfg, err := LoadDetectorConfig(DetectorConfigPath(path))
	if err != nil {
		return nil, err
	}
	m, err := torch.LoadModule(path, device)
	if err != nil {
		return nil, err
	}
	return &Detector{Path: path, Config: cfg, module: m}, nil
}

// Close releases the module.
func (d *Detector) Close() { d.module.Close() }

// Preprocess is the contract's input for images: each image as float32
// [0, 1] (u8 / 255), resized to S x S by F.interpolate(mode="bilinear",
// align_corners=False) without antialiasing, libtorch's default and what
// the golden inputs were made with, then (x - mean) / std per channel. It
// returns [len(images), 3, S, S] on the CPU, contiguous.
func (d *Detector) Preprocess(images []*data.RGB) *torch.Tensor {
	c := d.Config
	return torch.Scoped(func() *torch.Tensor {
		mean := torch.New([]float32{float32(c.Normalize.Mean[0]), float32(c.Normalize.Mean[1]), float32(c.Normalize.Mean[2])}, 1, 3, 1, 1)
		std := torch.New([]float32{float32(c.Normalize.Std[0]), float32(c.Normalize.Std[1]), float32(c.Normalize.Std[2])}, 1, 3, 1, 1)
		s := int64(c.InputSize)
		batch := make([]*torch.Tensor, len(images))
		for i, img := range images {
			x := torch.New(img.Pix, 1, int64(img.H), int64(img.W), 3).Permute(0, 3, 1, 2).To(torch.Float32).DivScalar(255)
			batch[i] = torch.Interpolate(x, torch.InterpolateOptions{Mode: torch.Bilinear, Size: [2]int64{s, s}})
		}
		// The permuted bytes make every step above keep channels-last
		// strides, as the golden's torch.from_numpy(u8).permute(2, 0, 1)
		// does; the module is called on the contiguous layout, because a
		// convolution rounds differently on channels-last input.
		return torch.Cat(batch, 0).Sub(mean).Div(std).Contiguous()
	})
}

// Detect runs the detector on images and returns each image's detections,
// highest score first as the module gives them.
func (d *Detector) Detect(images []*data.RGB) (dets [][]DetectedBox, err error) {
	if len(images) == 0 {
		return nil, nil
	}
	defer torch.Recover(&err)
	s := torch.NewScope()
	defer s.Close()
	return d.Run(d.Preprocess(images))
}

// Run calls the module on preprocessed images [B, 3, S, S] and checks its
// outputs against the contract: three tensors, boxes [B, N, 4] float32,
// scores [B, N] float32, labels [B, N] int64 within the classes.
func (d *Detector) Run(pixels *torch.Tensor) (dets [][]DetectedBox, err error) {
	defer torch.Recover(&err)
	s := torch.NewScope()
	defer s.Close()
	b := pixels.Size(0)
	outs, err := d.module.Forward(pixels.ToDevice(d.module.Device()))
	if err != nil {
		return nil, fmt.Errorf("detector: %w", err)
	}
	if len(outs) != 3 {
		return nil, fmt.Errorf("detector %s: forward returned %d tensors, the contract wants (boxes, scores, labels)", d.Path, len(outs))
	}
	var n int64 = -1 // N, from the first output that has it
	for i, want := range []struct {
		name, shape string
		dtype       torch.DType
		dims        []int64 // -1 stands for N
	}{
		{"boxes", "[B N 4]", torch.Float32, []int64{b, -1, 4}},
		{"scores", "[B N]", torch.Float32, []int64{b, -1}},
		{"labels", "[B N]", torch.Int64, []int64{b, -1}},
	} {
		got := outs[i].Shape()
		ok := len(got) == len(want.dims) && outs[i].DType() == want.dtype
		for j := 0; ok && j < len(got); j++ {
			w := want.dims[j]
			if w < 0 {
				if n < 0 {
					n = got[j]
				}
				w = n
			}
			ok = got[j] == w
		}
		if !ok {
			return nil, fmt.Errorf("detector %s: %s is %v %v, the contract wants %v %s with B = %d images and the same N in boxes, scores and labels",
				d.Path, want.name, outs[i].DType(), got, want.dtype, want.shape, b)
		}
	}
	boxes := outs[0].ToDevice(torch.CPU).Float32s()
	scores := outs[1].ToDevice(torch.CPU).Float32s()
	labels := torch.Data[int64](outs[2].ToDevice(torch.CPU))
	dets = make([][]DetectedBox, b)
	for i := range int(b) {
		dets[i] = []DetectedBox{}
		for j := range int(n) {
			k := i*int(n) + j
			score := float64(scores[k])
			if !(score > 0) || score < d.Config.ScoreThreshold {
				continue // a padding row, or below the caller's cut
			}
			label := labels[k]
			if label < 0 || label >= int64(len(d.Config.Classes)) {
				return nil, fmt.Errorf("detector %s: image %d, row %d: label %d is not an index into the %d classes of its JSON",
					d.Path, i, j, label, len(d.Config.Classes))
			}
			box := boxes[4*k : 4*k+4]
			dets[i] = append(dets[i], DetectedBox{
				Box:   [4]float64{float64(box[0]), float64(box[1]), float64(box[2]), float64(box[3])},
				Score: score, Label: int(label), Class: d.Config.Classes[label],
			})
		}
	}
	return dets, nil
}
