package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"os"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// ImageProcessorConfig is transformers' CLIPImageProcessor, as a
// preprocessor_config.json describes it: resize, centre crop, rescale,
// normalise.
type ImageProcessorConfig struct {
	DoResize      bool
	Size          ImageSize // shortest edge, or height and width
	Resample      data.Filter
	DoCenterCrop  bool
	CropSize      ImageSize // height and width
	DoRescale     bool
	RescaleFactor float64
	DoNormalize   bool
	ImageMean     [3]float64
	ImageStd      [3]float64
}

// ImageSize is a transformers size dict: {"shortest_edge": S} resizes the
// shorter side to S keeping the aspect ratio; {"height": H, "width": W}
// resizes to exactly H x W.
type ImageSize struct {
	ShortestEdge  int
	Height, Width int
}

// OpenAI's CLIP normalisation, transformers' OPENAI_CLIP_MEAN and _STD.
var (
	clipMean = [3]float64{0.48145466, 0.4578275, 0.40821073}
	clipStd  = [3]float64{0.26862954, 0.26130258, 0.27577711}
)

// DefaultImageProcessorConfig is CLIPImageProcessor() with no arguments:
// 224 pixels, what diffusers builds for an IP-Adapter that ships no
// feature_extractor (and the ViT-H/14 input size).
func DefaultImageProcessorConfig() ImageProcessorConfig {
	return ImageProcessorConfig{
		DoResize:      true,
		Size:          ImageSize{ShortestEdge: 224},
		Resample:      data.Bicubic,
		DoCenterCrop:  true,
		CropSize:      ImageSize{Height: 224, Width: 224},
		DoRescale:     true,
		RescaleFactor: 1.0 / 255,
		DoNormalize:   true,
		ImageMean:     clipMean,
		ImageStd:      clipStd,
	}
}

// LoadImageProcessorConfig reads a preprocessor_config.json; what it leaves
// out keeps CLIPImageProcessor's default.
func LoadImageProcessorConfig(path string) (ImageProcessorConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ImageProcessorConfig{}, err
	}
	c, err := parseImageProcessorConfig(b)
	if err != nil {
		return ImageProcessorConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func parseImageProcessorConfig(b []byte) (ImageProcessorConfig, error) {
	c := DefaultImageProcessorConfig()
	var raw struct {
		DoResize      *bool           `json:"do_resize"`
		Size          json.RawMessage `json:"size"`
		Resample      *int            `json:"resample"`
		DoCenterCrop  *bool           `json:"do_center_crop"`
		CropSize      json.RawMessage `json:"crop_size"`
		DoRescale     *bool           `json:"do_rescale"`
		RescaleFactor *float64        `json:"rescale_factor"`
		DoNormalize   *bool           `json:"do_normalize"`
		ImageMean     []float64       `json:"image_mean"`
		ImageStd      []float64       `json:"image_std"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return c, err
	}
	setIf(&c.DoResize, raw.DoResize)
	setIf(&c.DoCenterCrop, raw.DoCenterCrop)
	setIf(&c.DoRescale, raw.DoRescale)
	setIf(&c.RescaleFactor, raw.RescaleFactor)
	setIf(&c.DoNormalize, raw.DoNormalize)
	if raw.Resample != nil {
		c.Resample = data.Filter(*raw.Resample)
	}
	var errs []error
	var err error
	// A bare number is a legacy size: CLIPImageProcessor reads it as the
	// shortest edge for size and as a square for crop_size.
	if c.Size, err = parseImageSize(raw.Size, c.Size, false); err != nil {
		errs = append(errs, fmt.Errorf("size: %w", err))
	}
	if c.CropSize, err = parseImageSize(raw.CropSize, c.CropSize, true); err != nil {
		errs = append(errs, fmt.Errorf("crop_size: %w", err))
	}
	for _, v := range []struct {
		name string
		from []float64
		to   *[3]float64
	}{{"image_mean", raw.ImageMean, &c.ImageMean}, {"image_std", raw.ImageStd, &c.ImageStd}} {
		if v.from == nil {
			continue
		}
		if len(v.from) != 3 {
			errs = append(errs, fmt.Errorf("%s has %d values, want 3 (R, G, B)", v.name, len(v.from)))
			continue
		}
		copy(v.to[:], v.from)
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func parseImageSize(raw json.RawMessage, def ImageSize, square bool) (ImageSize, error) {
	if raw == nil || string(raw) == "null" {
		return def, nil
	}
	var n int
	if json.Unmarshal(raw, &n) == nil {
		if square {
			return ImageSize{Height: n, Width: n}, nil
		}
		return ImageSize{ShortestEdge: n}, nil
	}
	var d struct {
		ShortestEdge *int `json:"shortest_edge"`
		Height       *int `json:"height"`
		Width        *int `json:"width"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return def, err
	}
	switch {
	case d.ShortestEdge != nil:
		return ImageSize{ShortestEdge: *d.ShortestEdge}, nil
	case d.Height != nil && d.Width != nil:
		return ImageSize{Height: *d.Height, Width: *d.Width}, nil
	}
	return def, fmt.Errorf("%s has neither shortest_edge nor height and width", raw)
}

// Validate reports settings Preprocess cannot follow.
func (c ImageProcessorConfig) Validate() error {
	var errs []error
	if c.DoResize && !c.Resample.Supported() {
		errs = append(errs, fmt.Errorf("resample %d: only 0 (nearest), 2 (bilinear) and 3 (bicubic) are supported", int(c.Resample)))
	}
	if c.DoResize && c.Size.ShortestEdge <= 0 && (c.Size.Height <= 0 || c.Size.Width <= 0) {
		errs = append(errs, fmt.Errorf("size %+v is not positive", c.Size))
	}
	if c.DoCenterCrop && (c.CropSize.Height <= 0 || c.CropSize.Width <= 0) {
		errs = append(errs, fmt.Errorf("crop_size %dx%d is not positive", c.CropSize.Height, c.CropSize.Width))
	}
	if c.DoNormalize && (c.ImageStd[0] == 0 || c.ImageStd[1] == 0 || c.ImageStd[2] == 0) {
		errs = append(errs, fmt.Errorf("image_std %v has a zero", c.ImageStd))
	}
	return errors.Join(errs...)
}

// Preprocess is CLIPImageProcessor(img, return_tensors="pt").pixel_values:
// a float32 CPU tensor [1, 3, H, W]. It follows transformers 4.39 step by
// step, so that the result is the reference's to the last bit: Pillow's
// resize (data.RGB.Resize), a centre crop, x * rescale_factor in float64
// rounded to float32, then (x - mean) / std in float32. c must be valid.
func (c ImageProcessorConfig) Preprocess(img *data.RGB) *torch.Tensor {
	if c.DoResize {
		w, h := c.resizedSize(img.W, img.H)
		img = img.Resize(w, h, c.Resample)
	}
	if c.DoCenterCrop {
		img = img.Crop(centerCrop(img.W, img.H, c.CropSize.Width, c.CropSize.Height))
	}
	var mean, std [3]float32
	for ch := range 3 {
		mean[ch], std[ch] = float32(c.ImageMean[ch]), float32(c.ImageStd[ch])
	}
	plane := img.W * img.H
	pix := make([]float32, 3*plane) // channels first
	for i := range plane {
		for ch := range 3 {
			v := img.Pix[3*i+ch]
			x := float32(v)
			if c.DoRescale {
				x = float32(float64(v) * c.RescaleFactor)
			}
			if c.DoNormalize {
				x = (x - mean[ch]) / std[ch]
			}
			pix[ch*plane+i] = x
		}
	}
	return torch.New(pix, 1, 3, int64(img.H), int64(img.W))
}

// resizedSize is transformers' get_resize_output_image_size: the shorter
// side becomes the shortest edge and the longer one is scaled with it,
// truncated (int(S * long / short)).
func (c ImageProcessorConfig) resizedSize(w, h int) (ow, oh int) {
	s := c.Size.ShortestEdge
	if s <= 0 {
		return c.Size.Width, c.Size.Height
	}
	if w <= h {
		return s, int(float64(s*h) / float64(w))
	}
	return int(float64(s*w) / float64(h)), s
}

// centerCrop is the window transformers' center_crop takes from a w x h
// image: its corner at floor((w - cw) / 2), floor((h - ch) / 2). A window
// larger than the image reaches past it, where Crop makes black, which is
// how transformers pads.
func centerCrop(w, h, cw, ch int) image.Rectangle {
	left, top := floorHalf(w-cw), floorHalf(h-ch)
	return image.Rect(left, top, left+cw, top+ch)
}

// floorHalf is Python's n // 2.
func floorHalf(n int) int {
	if n < 0 {
		return -((-n + 1) / 2)
	}
	return n / 2
}
