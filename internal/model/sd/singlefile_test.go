package sd

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

const singleFile = "tiny-sd-single-file.safetensors"

// tinyVAELayout reads the levels and layers per block of tiny-sd/vae.
func tinyVAELayout(t *testing.T) (levels, layers int) {
	t.Helper()
	b, err := os.ReadFile(golden.Path(t, "tiny-sd", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		BlockOutChannels []int `json:"block_out_channels"`
		LayersPerBlock   int   `json:"layers_per_block"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return len(c.BlockOutChannels), c.LayersPerBlock
}

func tinyUNetConfig(t *testing.T) unet.Config {
	t.Helper()
	c, err := unet.LoadConfig(golden.Path(t, "tiny-sd", "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openTiny opens the golden single file with the configuration of the
// same model in diffusers layout.
func openTiny(t *testing.T, path string) *SingleFile {
	t.Helper()
	levels, layers := tinyVAELayout(t)
	s, err := OpenSingleFile(path, tinyUNetConfig(t), levels, layers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func openRaw(t *testing.T, path string) *nn.Files {
	t.Helper()
	f, err := nn.OpenFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// TestSingleFileMatchesDiffusers reads every tensor of tiny-sd's unet, vae
// and text_encoder through the single file's sources: the same keys, shapes
// and bits (the conversion script only renames, and reshapes the VAE
// attention projections, which the source views back).
func TestSingleFileMatchesDiffusers(t *testing.T) {
	path := golden.Path(t, singleFile)
	s := openTiny(t, path)
	for _, m := range []struct {
		dir, base string
		src       nn.Source
	}{
		{"unet", "diffusion_pytorch_model", s.UNet},
		{"vae", "diffusion_pytorch_model", s.VAE},
		{"text_encoder", "model", s.Text},
	} {
		t.Run(m.dir, func(t *testing.T) {
			scope := torch.NewScope()
			defer scope.Close()
			want, err := nn.OpenWeights(golden.Path(t, "tiny-sd", m.dir), m.base)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			if missing, extra := diff(want.Keys(), m.src.Keys()); len(missing)+len(extra) > 0 {
				t.Fatalf("%d keys missing (%v), %d extra (%v)", len(missing), firstFew(missing, 5), len(extra), firstFew(extra, 5))
			}
			for _, key := range want.Keys() {
				w, err := want.Tensor(key)
				if err != nil {
					t.Fatal(err)
				}
				g, err := m.src.Tensor(key)
				if err != nil {
					t.Fatal(err)
				}
				shape, _ := m.src.Shape(key)
				if !slices.Equal(shape, w.Shape()) || !slices.Equal(g.Shape(), w.Shape()) {
					t.Fatalf("%s: shape %v (tensor %v), want %v", key, shape, g.Shape(), w.Shape())
				}
				if i := firstDifference(g.Float32s(), w.Float32s()); i >= 0 {
					t.Fatalf("%s: element %d differs", key, i)
				}
			}
			t.Logf("%d tensors bitwise equal", len(want.Keys()))
		})
	}

	// Every tensor of the three models is accounted for.
	raw := openRaw(t, path)
	stored := 0
	for _, k := range raw.Keys() {
		if strings.HasPrefix(k, unetPrefix) || strings.HasPrefix(k, vaePrefix) || strings.HasPrefix(k, textPrefix) {
			stored++
		}
	}
	if mapped := len(s.UNet.Keys()) + len(s.VAE.Keys()) + len(s.Text.Keys()); mapped != stored || stored != 980 {
		t.Fatalf("%d of %d stored tensors mapped, want 980", mapped, stored)
	}
}

// diff lists the keys of want that got lacks and those of got that want lacks.
func diff(want, got []string) (missing, extra []string) {
	in := func(keys []string) map[string]bool {
		m := map[string]bool{}
		for _, k := range keys {
			m[k] = true
		}
		return m
	}
	w, g := in(want), in(got)
	for _, k := range want {
		if !g[k] {
			missing = append(missing, k)
		}
	}
	for _, k := range got {
		if !w[k] {
			extra = append(extra, k)
		}
	}
	return missing, extra
}

// firstDifference is the first index where a and b differ in bits, or -1.
func firstDifference(a, b []float32) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestInferConfig compares the configuration read from shapes with
// tiny-sd's config.json: every field but sample_size, which the weights do
// not say.
func TestInferConfig(t *testing.T) {
	raw := openRaw(t, golden.Path(t, singleFile))
	got, err := InferUNetConfig(raw, 8)
	if err != nil {
		t.Fatal(err)
	}
	want := tinyUNetConfig(t)
	got.SampleSize = want.SampleSize
	got.OnlyCrossAttention = want.OnlyCrossAttention // false in the file, unset here: the same
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("inferred\n%+v\nwant\n%+v", got, want)
	}

	levels, layers, err := InferVAELayout(raw)
	if err != nil {
		t.Fatal(err)
	}
	if wl, wn := tinyVAELayout(t); levels != wl || layers != wn {
		t.Fatalf("VAE layout %d levels x %d layers, want %d x %d", levels, layers, wl, wn)
	}

	if _, err := InferUNetConfig(openRaw(t, golden.Path(t, "tiny-sd", "unet", "diffusion_pytorch_model.safetensors")), 8); err == nil {
		t.Fatal("a diffusers UNet file gave a single-file config")
	}
}

// TestUNetFromSingleFile builds the UNet from the single file alone (config
// inferred) and checks it against diffusers' output for tiny-sd.
func TestUNetFromSingleFile(t *testing.T) {
	scope := torch.NewScope()
	defer scope.Close()
	path := golden.Path(t, singleFile)
	raw := openRaw(t, path)
	c, err := InferUNetConfig(raw, 8)
	if err != nil {
		t.Fatal(err)
	}
	levels, layers, err := InferVAELayout(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenSingleFile(path, c, levels, layers)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := unet.FromSource(s.UNet, c, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Free()

	f := golden.File(t, "core", "unet.safetensors")
	torch.NoGrad(func() {
		out := u.Forward(golden.Tensor(t, f, "sample"), golden.Tensor(t, f, "timesteps"), golden.Tensor(t, f, "encoder_hidden_states"))
		golden.Compare(t, "out", out, golden.Tensor(t, f, "out"), 1e-5)
	})
}

func TestOpenSingleFileErrors(t *testing.T) {
	path := golden.Path(t, singleFile)
	levels, layers := tinyVAELayout(t)
	c := tinyUNetConfig(t)

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.safetensors")
	if err := os.WriteFile(truncated, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(t.TempDir(), "corrupt.safetensors")
	if err := os.WriteFile(corrupt, append([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, b[8:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	noAttention := c
	noAttention.DownBlockTypes = slices.Repeat([]string{"DownBlock2D"}, len(c.DownBlockTypes))

	for _, tc := range []struct {
		name, path string
		c          unet.Config
		want       string
	}{
		{"truncated", truncated, c, truncated},
		{"corrupt header", corrupt, c, corrupt},
		{"diffusers file", golden.Path(t, "tiny-sd", "vae", "diffusion_pytorch_model.safetensors"), c, "not an original Stable Diffusion checkpoint"},
		{"other layout", path, noAttention, "do not fit the configured layout (model.diffusion_model.input_blocks.1.1."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenSingleFile(tc.path, tc.c, levels, layers)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestIncompleteCheckpoint rewrites the file without one UNet weight and
// with the training state a real checkpoint carries: the state is ignored
// and the UNet reports the missing weight by its diffusers name.
func TestIncompleteCheckpoint(t *testing.T) {
	scope := torch.NewScope()
	defer scope.Close()
	const dropped = unetPrefix + "input_blocks.4.0.in_layers.2.weight"
	raw := openRaw(t, golden.Path(t, singleFile))
	tensors := map[string]*torch.Tensor{
		"alphas_cumprod":         torch.Options{}.Ones(1000),
		"model_ema.decay":        torch.Options{}.Ones(),
		textPrefix + positionIDs: torch.Options{DType: torch.Int64}.Arange(0, 77, 1).Reshape(1, 77),
	}
	for _, k := range raw.Keys() {
		if k != dropped {
			var err error
			if tensors[k], err = raw.Tensor(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "incomplete.safetensors")
	if err := torch.SaveSafetensors(path, tensors, nil); err != nil {
		t.Fatal(err)
	}

	s := openTiny(t, path)
	if n := len(s.Text.Keys()); n != 52 {
		t.Fatalf("text encoder has %d tensors, want 52 (position_ids left out)", n)
	}
	u, err := unet.FromSource(s.UNet, tinyUNetConfig(t), torch.Options{})
	if err == nil {
		u.Free()
		t.Fatal("built a UNet without " + dropped)
	}
	if !strings.Contains(err.Error(), "missing (down_blocks.1.resnets.0.conv1.weight)") {
		t.Fatalf("error %q does not name the missing weight", err)
	}
}
