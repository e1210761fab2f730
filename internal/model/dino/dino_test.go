package dino

import (
	"image"
	"math"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// eval/README.md's tolerance for single modules; fp32 against fp64 differs
// by 5.95e-7 on the class token.
const atol = 1e-5

// tinyHeads is the tiny model's head count (eval/report.json,
// dino_tiny_config): 32 wide, so not the published 64 per head.
const tinyHeads = 4

func loadTiny(t *testing.T) *Model {
	t.Helper()
	m, err := Load(golden.Path(t, "eval", "dino_vits16_tiny.safetensors"), tinyHeads, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

func TestConfigFromShapes(t *testing.T) {
	m := loadTiny(t)
	want := Config{PatchSize: 16, InChannels: 3, EmbedDim: 32, Depth: 2, NumHeads: 4, MLPHidden: 128,
		Positions: 197, LayerNormEps: 1e-6}
	if m.Config != want {
		t.Errorf("config %+v, want %+v", m.Config, want)
	}
}

func TestLoadRejectsBadHeads(t *testing.T) {
	// 32 / 64 rounds to no head at all; 5 does not divide 32.
	for _, heads := range []int64{0, 5} {
		m, err := Load(golden.Path(t, "eval", "dino_vits16_tiny.safetensors"), heads, torch.Options{})
		if err == nil {
			m.Free()
			t.Errorf("heads %d: loaded", heads)
		} else if !strings.Contains(err.Error(), "heads") {
			t.Errorf("heads %d: %v", heads, err)
		}
	}
}

func TestLoadRejectsStrayKeys(t *testing.T) {
	src, err := nn.OpenFiles(golden.Path(t, "eval", "dino_vits16_tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// A checkpoint with a head (or any extra key) fails, as strict loading does.
	names := map[string]string{"head.weight": "norm.weight"}
	for _, k := range src.Keys() {
		names[k] = k
	}
	m, err := FromSource(nn.Rename(src, names), tinyHeads, torch.Options{})
	if err == nil {
		m.Free()
		t.Fatal("loaded")
	}
	if !strings.Contains(err.Error(), "head.weight") {
		t.Errorf("error %q does not name head.weight", err)
	}
}

func TestPreprocessMatchesTorchvision(t *testing.T) {
	// The reference photo as Pillow decoded it: 780 x 780.
	photo, err := data.ReadImage(golden.Path(t, "tiny-ip-adapter", "dog00_decoded_pil.png"))
	if err != nil {
		t.Fatal(err)
	}
	// 780x405 resizes to 493x256 and is cropped from left 134 (269 / 2
	// rounded to even), top 16.
	crop := photo.Crop(image.Rect(0, 180, 780, 585))
	got := torch.Cat([]*torch.Tensor{Preprocess(photo), Preprocess(crop)}, 0)
	f := golden.File(t, "eval", "golden.safetensors")
	golden.Compare(t, "dino.pixel_values", got, golden.Tensor(t, f, "dino.pixel_values"), 0)
}

func TestCenterCropRoundsHalfToEven(t *testing.T) {
	for _, c := range []struct{ w, h, left, top int }{
		{493, 256, 134, 16}, // 269 / 2 = 134.5 -> 134
		{495, 256, 136, 16}, // 271 / 2 = 135.5 -> 136
		{256, 256, 16, 16},
	} {
		r := centerCrop(c.w, c.h, CropSize)
		if r.Min.X != c.left || r.Min.Y != c.top || r.Dx() != CropSize || r.Dy() != CropSize {
			t.Errorf("%dx%d: crop %v, want corner (%d, %d)", c.w, c.h, r, c.left, c.top)
		}
	}
}

func TestModelMatchesDINO(t *testing.T) {
	m := loadTiny(t)
	f := golden.File(t, "eval", "golden.safetensors")
	out := m.Forward(golden.Tensor(t, f, "dino.pixel_values"))
	defer out.Free()
	for _, c := range []struct {
		key string
		got *torch.Tensor
	}{
		{"dino.tokens_in", out.Tokens},
		{"dino.block0_out", out.Blocks[0]},
		{"dino.block1_out", out.Blocks[1]},
		{"dino.norm_out", out.Norm},
		{"dino.cls_embedding", out.CLS},
		{"dino.cls_embedding_f64", out.CLS},
	} {
		golden.Compare(t, c.key, c.got, golden.Tensor(t, f, c.key), atol)
	}
}

// TestPositionInterpolation checks interpolate_pos_encoding's shapes and
// that it keeps the class position; no golden covers other sizes (the
// README's model runs at 224, where it is a no-op). libtorch warns, as
// Python's torch does for DINO, that a scale factor is used as given.
func TestPositionInterpolation(t *testing.T) {
	m := loadTiny(t)
	same := m.posEmbed(196, 224, 224)
	if same != m.PosEmbed {
		t.Error("224 x 224 does not use the stored embeddings")
	}
	for _, c := range []struct{ h, w, n int64 }{{448, 448, 784}, {224, 320, 280}, {160, 96, 60}} {
		pos := m.posEmbed(c.n, c.h, c.w)
		if got := pos.Shape(); got[0] != 1 || got[1] != 1+c.n || got[2] != m.Config.EmbedDim {
			t.Errorf("%dx%d: position embeddings %v", c.h, c.w, got)
		}
		golden.Compare(t, "class position", pos.Narrow(1, 0, 1), m.PosEmbed.Narrow(1, 0, 1), 0)
		emb := m.Embed(torch.Zeros(2, 3, c.h, c.w))
		if got := emb.Shape(); got[0] != 2 || got[1] != m.Config.EmbedDim {
			t.Errorf("%dx%d: embedding %v", c.h, c.w, got)
		}
	}
}

// TestPositionInterpolationSamples compares the interpolated grid with
// PyTorch's bicubic upsampling written out (upsample_bicubic2d, A = -0.75,
// borders clamped): with a scale factor given, output pixel i samples the
// input at (i + 0.5) / factor - 0.5, where the factor is DINO's
// (n / patch + 0.1) / grid, not the sizes' ratio.
func TestPositionInterpolationSamples(t *testing.T) {
	m := loadTiny(t)
	const h, w = 160, 96 // 10 x 6 patches
	grid, d := m.Config.grid(), m.Config.EmbedDim
	got := m.posEmbed(60, h, w).Narrow(1, 1, 60).Float64s() // [1, 10*6, D], row-major grid
	stored := m.PosEmbed.Narrow(1, 1, grid*grid).Contiguous().Float64s()
	at := func(y, x, c int64) float64 {
		y, x = min(max(y, 0), grid-1), min(max(x, 0), grid-1)
		return stored[(y*grid+x)*d+c]
	}
	cubic := func(t float64) [4]float64 { // weights of the samples at -1, 0, 1, 2
		const a = -0.75
		near := func(x float64) float64 { return ((a+2)*x-(a+3))*x*x + 1 }
		far := func(x float64) float64 { return ((a*x-5*a)*x+8*a)*x - 4*a }
		return [4]float64{far(t + 1), near(t), near(1 - t), far(2 - t)}
	}
	src := func(i int64, factor float64) (int64, [4]float64) {
		r := (float64(i)+0.5)/factor - 0.5
		f := math.Floor(r)
		return int64(f), cubic(r - f)
	}
	fy, fx := (float64(h/16)+0.1)/float64(grid), (float64(w/16)+0.1)/float64(grid)
	var worst float64
	for oy := range int64(h / 16) {
		y0, wy := src(oy, fy)
		for ox := range int64(w / 16) {
			x0, wx := src(ox, fx)
			for c := range d {
				var want float64
				for i := range int64(4) {
					var row float64
					for j := range int64(4) {
						row += wx[j] * at(y0-1+i, x0-1+j, c)
					}
					want += wy[i] * row
				}
				worst = max(worst, math.Abs(got[(oy*(w/16)+ox)*d+c]-want))
			}
		}
	}
	t.Logf("bicubic position grid: max abs %.3g against the float64 formula", worst)
	if worst > 1e-5 {
		t.Errorf("interpolated positions differ by %.3g", worst)
	}
}
