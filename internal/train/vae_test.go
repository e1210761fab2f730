package train

import (
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
	"github.com/lcpdiff/lcpdiff/internal/toymodel"
)

// smallToyModel writes a toy model whose VAE has two blocks of 32
// channels (latents half the side of 32-pixel images), to train in seconds.
func smallToyModel(t *testing.T) string {
	t.Helper()
	s := toymodel.Default()
	s.VAE.BlockOutChannels = []int64{32, 32}
	s.VAE.DownBlockTypes = s.VAE.DownBlockTypes[:2]
	s.VAE.UpBlockTypes = s.VAE.UpBlockTypes[:2]
	s.VAE.SampleSize = 32
	dir := filepath.Join(t.TempDir(), "toy")
	if _, err := toymodel.Write(dir, s, 1); err != nil {
		t.Fatal(err)
	}
	return dir
}

// toyImages are the frames of a tiny toy world's train and test manifests.
func toyImages(t *testing.T) (train, test *VAEImages) {
	t.Helper()
	dir := t.TempDir()
	if _, err := data.WriteToyWorld(dir, data.ToyWorldConfig{Seed: 5, Clips: 3, Images: 3, Size: 32, Frames: 2}); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *VAEImages {
		m, err := data.LoadManifest(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := LoadVAEImages(m, 32)
		if err != nil {
			t.Fatal(err)
		}
		return imgs
	}
	return load("train.jsonl"), load("test.jsonl")
}

func TestTrainVAELowersTheLossAndSavesALoadableFolder(t *testing.T) {
	model := smallToyModel(t)
	trainImgs, testImgs := toyImages(t)
	if len(trainImgs.Images) != 3*2+3 || len(trainImgs.Firsts) != 6 {
		t.Fatalf("%d images of %d records", len(trainImgs.Images), len(trainImgs.Firsts))
	}
	before, err := EvaluateVAE(model, testImgs, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultVAEConfig()
	cfg.Steps, cfg.BatchSize, cfg.WarmupSteps, cfg.LogEvery, cfg.ScaleImages = 40, 4, 5, 10, 8
	var progress int
	var live []int64
	torch.Settle() // unrelated garbage is freed now, not while we count
	res, err := TrainVAE(context.Background(), model, trainImgs, cfg, VAEHooks{
		Progress: func(step, total int, loss float64) {
			progress = step
			live = append(live, torch.LiveTensors())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Constant memory: after the first step (which makes the optimizer's
	// state and the gradients), every step ends with as many tensors.
	for i, n := range live[1:] {
		if n != live[1] {
			t.Fatalf("live tensors after each step: %v (step %d differs from step 2)", live, i+2)
		}
	}
	if res.Steps != 40 || progress != 40 || !(res.StepsPerSec > 0) {
		t.Fatalf("result %+v, progress at %d", res, progress)
	}
	t.Logf("loss %.4f -> %.4f, %.1f steps/s", res.FirstLoss, res.FinalLoss, res.StepsPerSec)
	if !(res.FinalLoss < 0.7*res.FirstLoss) {
		t.Fatalf("loss went from %.4f to %.4f", res.FirstLoss, res.FinalLoss)
	}
	if f := res.ScalingFactor; math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
		t.Fatalf("scaling factor %g", f)
	}

	// The folder loads as a whole model, with the measured factor.
	m, err := pipeline.LoadModel(model, pipeline.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if m.VAE.Config.ScalingFactor != res.ScalingFactor {
		t.Fatalf("vae/config.json says %g, the run measured %g", m.VAE.Config.ScalingFactor, res.ScalingFactor)
	}
	b, _ := os.ReadFile(filepath.Join(model, "vae", "config.json"))
	var cfgJSON map[string]any
	if err := json.Unmarshal(b, &cfgJSON); err != nil || cfgJSON["_class_name"] != "AutoencoderKL" {
		t.Fatalf("the config lost its other keys: %v %v", err, cfgJSON)
	}

	sheet := filepath.Join(model, "recon.png")
	after, err := EvaluateVAE(model, testImgs, sheet, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !(after.PSNR > before.PSNR) || after.Images != len(testImgs.Images) {
		t.Fatalf("test PSNR %.2f dB before training, %.2f after", before.PSNR, after.PSNR)
	}
	f, err := os.Open(sheet)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() != min(4, len(testImgs.Firsts))*32*2 || img.Bounds().Dy() != 2*32*2 {
		t.Fatalf("sheet: %v %v", err, img.Bounds())
	}
	for _, name := range []string{VAELogFile, VAEPlotFile} {
		if _, err := os.Stat(filepath.Join(model, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrainVAEStopsAndSavesOnCancel(t *testing.T) {
	model := smallToyModel(t)
	imgs, _ := toyImages(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	cfg := DefaultVAEConfig()
	cfg.Steps, cfg.BatchSize, cfg.ScaleImages = 100, 2, 4
	res, err := TrainVAE(ctx, model, imgs, cfg, VAEHooks{Progress: func(step, total int, loss float64) {
		if step == 3 {
			cancel(ErrInterrupted)
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "stopped after step 3") || res.Steps != 3 {
		t.Fatalf("got %v after %d steps", err, res.Steps)
	}
	if _, err := pipeline.LoadModel(model, pipeline.LoadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Decoder-only training (as SD's ft-MSE VAE) must leave the encoder, and
// so the latent space and its scaling factor, exactly as they were: a UNet
// trained on those latents stays valid.
func TestTrainVAEDecoderOnlyKeepsTheLatents(t *testing.T) {
	model := smallToyModel(t)
	imgs, _ := toyImages(t)
	weights := filepath.Join(model, "vae", "diffusion_pytorch_model.safetensors")
	before := loadWeights(t, weights)
	cfgBefore, _ := os.ReadFile(filepath.Join(model, "vae", "config.json"))
	cfg := DefaultVAEConfig()
	cfg.Steps, cfg.BatchSize, cfg.WarmupSteps, cfg.DecoderOnly = 3, 2, 1, true
	res, err := TrainVAE(context.Background(), model, imgs, cfg, VAEHooks{})
	if err != nil {
		t.Fatal(err)
	}
	after := loadWeights(t, weights)
	var changed, decoder int
	for name, b := range before {
		isDecoder := strings.HasPrefix(name, "decoder.") || strings.HasPrefix(name, "post_quant_conv.")
		same := sameBits(after[name], b)
		switch {
		case !isDecoder && !same:
			t.Errorf("encoder tensor %s changed", name)
		case isDecoder:
			decoder++
			if !same {
				changed++
			}
		}
	}
	if decoder == 0 || changed < decoder/2 {
		t.Errorf("%d of %d decoder tensors changed", changed, decoder)
	}
	var c0, c1 map[string]any
	cfgAfter, _ := os.ReadFile(filepath.Join(model, "vae", "config.json"))
	json.Unmarshal(cfgBefore, &c0)
	json.Unmarshal(cfgAfter, &c1)
	if c0["scaling_factor"] != c1["scaling_factor"] || res.ScalingFactor != c0["scaling_factor"] {
		t.Errorf("scaling factor %v before, %v after, result %v", c0["scaling_factor"], c1["scaling_factor"], res.ScalingFactor)
	}
	// Its log goes beside the whole VAE's, which it must not replace.
	for _, name := range []string{VAEDecoderLogFile, VAEDecoderPlotFile} {
		if _, err := os.Stat(filepath.Join(model, name)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(model, VAELogFile)); err == nil {
		t.Errorf("a decoder-only run wrote %s", VAELogFile)
	}
}

func TestTrainVAERefusesBadFolders(t *testing.T) {
	imgs := &VAEImages{Images: []*data.RGB{data.NewRGB(32, 32)}, Subjects: []*data.Gray{data.NewGray(32, 32)}, Firsts: []int{0}}
	noVAE := t.TempDir()
	os.WriteFile(filepath.Join(noVAE, "model_index.json"), []byte("{}"), 0o644)
	for dir, want := range map[string]string{
		filepath.Join(t.TempDir(), "missing"): "no such file or directory",
		noVAE:                                 "has no vae/config.json",
	} {
		_, err := TrainVAE(context.Background(), dir, imgs, DefaultVAEConfig(), VAEHooks{})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line naming it and %q", dir, err, want)
		}
	}
	if _, err := TrainVAE(context.Background(), noVAE, &VAEImages{Images: imgs.Images}, DefaultVAEConfig(), VAEHooks{}); err == nil ||
		!strings.Contains(err.Error(), "1 images with 0 subject masks") {
		t.Errorf("images without masks: %v", err)
	}
	bad := DefaultVAEConfig()
	bad.BatchSize = 0
	if _, err := TrainVAE(context.Background(), noVAE, imgs, bad, VAEHooks{}); err == nil || !strings.Contains(err.Error(), "batch size 0") {
		t.Errorf("batch size 0: %v", err)
	}
}

func TestVAELearningRateWarmsUpAndDecays(t *testing.T) {
	c := DefaultVAEConfig()
	c.Steps, c.WarmupSteps, c.LR = 100, 10, 1e-3
	for step, want := range map[int]float64{1: 1e-4, 10: 1e-3, 11: 1e-3, 100: 1e-4} {
		if got := c.lrAt(step); math.Abs(got-want) > 1e-12 {
			t.Errorf("step %d: lr %g, want %g", step, got, want)
		}
	}
	if mid := c.lrAt(55); !(mid > 1e-4 && mid < 1e-3) {
		t.Errorf("step 55: lr %g", mid)
	}
}

func TestSubjectPixelsWeighMore(t *testing.T) {
	mask := data.NewGray(5, 4)
	mask.Pix[1*5+3] = 255 // one subject pixel at (3, 1)
	grown := subjectsMask(&data.Frame{Image: data.NewRGB(5, 4), Masks: []*data.Gray{mask}})
	var inside []int
	for i, v := range grown.Pix {
		if v != 0 {
			inside = append(inside, i)
		}
	}
	// Rows 0-2, columns 2-4.
	if want := []int{2, 3, 4, 7, 8, 9, 12, 13, 14}; !slices.Equal(inside, want) {
		t.Fatalf("grown mask covers %v, want %v", inside, want)
	}
	if got := flippedMask(grown).Pix[0:5]; !slices.Equal(got, []uint8{255, 255, 255, 0, 0}) {
		t.Fatalf("flipped row 0: %v", got)
	}
	w := pixelWeights([]*data.Gray{grown}, 9).Float32s()
	// 9 pixels of weight 10 and 11 of weight 1, scaled to mean 1.
	scale := 20.0 / (9*10 + 11)
	if math.Abs(float64(w[2])-10*scale) > 1e-6 || math.Abs(float64(w[0])-scale) > 1e-6 {
		t.Fatalf("weights %v", w)
	}
}
