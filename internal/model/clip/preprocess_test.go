package clip

import (
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TestPreprocessMatchesTransformers runs the whole chain from the JPEG file:
// libjpeg decoding, Pillow's bicubic resize, centre crop and normalisation
// must reproduce CLIPImageProcessor's float32 values exactly.
func TestPreprocessMatchesTransformers(t *testing.T) {
	photo, err := data.ReadImage(golden.Path(t, "tiny-ip-adapter", "dog00.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := LoadImageProcessorConfig(golden.Path(t, "tiny-ip-adapter", "feature_extractor", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := golden.File(t, "tiny-ip-adapter", "golden.safetensors")
	for _, c := range []struct {
		key string
		cfg ImageProcessorConfig
		img *data.RGB
	}{
		{"preproc.square_56", tiny, photo},
		// 780x405 resizes to 107x56 and is cropped from x = (107-56)//2 = 25.
		{"preproc.nonsquare_56", tiny, photo.Crop(image.Rect(0, 180, 780, 585))},
		{"preproc.square_224", DefaultImageProcessorConfig(), photo},
	} {
		got := c.cfg.Preprocess(c.img)
		golden.Compare(t, c.key, got, golden.Tensor(t, f, c.key), 0)
	}
}

func TestImageProcessorConfig(t *testing.T) {
	cfg, err := LoadImageProcessorConfig(golden.Path(t, "tiny-ip-adapter", "feature_extractor", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultImageProcessorConfig()
	want.Size, want.CropSize = ImageSize{ShortestEdge: 56}, ImageSize{Height: 56, Width: 56}
	if cfg != want {
		t.Errorf("tiny feature_extractor read as %+v, want %+v", cfg, want)
	}

	for _, c := range []struct {
		name, json string
		want       func(*ImageProcessorConfig)
		errHas     string
	}{
		{"empty is the default", `{}`, func(*ImageProcessorConfig) {}, ""},
		{"legacy sizes", `{"size": 256, "crop_size": 240}`, func(c *ImageProcessorConfig) {
			c.Size, c.CropSize = ImageSize{ShortestEdge: 256}, ImageSize{Height: 240, Width: 240}
		}, ""},
		{"exact size", `{"size": {"height": 30, "width": 40}, "resample": 2, "do_center_crop": false}`, func(c *ImageProcessorConfig) {
			c.Size, c.Resample, c.DoCenterCrop = ImageSize{Height: 30, Width: 40}, data.Bilinear, false
		}, ""},
		{"lanczos", `{"resample": 1}`, nil, "resample 1"},
		{"two means", `{"image_mean": [0.5, 0.5]}`, nil, "image_mean has 2 values"},
		{"zero std", `{"image_std": [0.5, 0, 0.5]}`, nil, "image_std [0.5 0 0.5] has a zero"},
		{"bad size", `{"size": {"longest_edge": 3}}`, nil, "neither shortest_edge nor height and width"},
		{"not json", `{`, nil, "unexpected end"},
	} {
		path := filepath.Join(t.TempDir(), "preprocessor_config.json")
		if err := os.WriteFile(path, []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := LoadImageProcessorConfig(path)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: error %v, want one naming the file and saying %q", c.name, err, c.errHas)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := DefaultImageProcessorConfig()
		c.want(&want)
		if got != want {
			t.Errorf("%s: read %+v, want %+v", c.name, got, want)
		}
	}
}

func TestPreprocessGeometry(t *testing.T) {
	cfg := DefaultImageProcessorConfig()
	for _, c := range []struct{ w, h, ow, oh int }{
		{780, 405, 431, 224}, // int(224 * 780 / 405) = int(431.4)
		{405, 780, 224, 431},
		{224, 224, 224, 224},
		{100, 300, 224, 672},
	} {
		if ow, oh := cfg.resizedSize(c.w, c.h); ow != c.ow || oh != c.oh {
			t.Errorf("%dx%d resizes to %dx%d, want %dx%d", c.w, c.h, ow, oh, c.ow, c.oh)
		}
	}

	// transformers pads a crop larger than the image with zeros, placing the
	// image at ceil of half the excess; odd excesses show the rounding.
	for _, c := range []struct {
		w, h, cw, ch int
		want         image.Rectangle
	}{
		{107, 56, 56, 56, image.Rect(25, 0, 81, 56)},
		{5, 4, 2, 3, image.Rect(1, 0, 3, 3)},
		{3, 2, 4, 5, image.Rect(-1, -2, 3, 3)},
	} {
		if got := centerCrop(c.w, c.h, c.cw, c.ch); got != c.want {
			t.Errorf("crop %dx%d from %dx%d: %v, want %v", c.cw, c.ch, c.w, c.h, got, c.want)
		}
	}

	// Without resize or normalisation the pixels are x / 255, channels first,
	// and padding is black.
	cfg = ImageProcessorConfig{DoCenterCrop: true, CropSize: ImageSize{Height: 3, Width: 2}, DoRescale: true, RescaleFactor: 1.0 / 255}
	img := &data.RGB{W: 2, H: 1, Pix: []uint8{255, 0, 51, 102, 0, 255}}
	got := cfg.Preprocess(img)
	want := torch.New([]float32{
		0, 0, 1, 0.4, 0, 0, // R
		0, 0, 0, 0, 0, 0, // G
		0, 0, 0.2, 1, 0, 0, // B
	}, 1, 3, 3, 2)
	golden.Compare(t, "padded crop", got, want, 1e-7)
}
