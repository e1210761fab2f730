package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

func TestModelInitThenGenerate(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "toy")
	log, err := run(t, "--config", filepath.Join("..", "..", "configs", "toyworld-model.yaml"),
		"model", "init", "--out", model, "--seed", "3")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "wrote "+model) || !strings.Contains(log, "unet ") {
		t.Fatalf("init output:\n%s", log)
	}
	out := filepath.Join(dir, "a.png")
	if log, err := run(t, "generate", "-m", model, "-p", "a red-blue striped star on grass",
		"--steps", "2", "-W", "64", "-H", "64", "-q", "-o", out); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != 64 || img.Bounds().Dy() != 64 {
		t.Fatalf("decode: %v %v", err, img.Bounds())
	}

	// Never over an existing model.
	if _, err := run(t, "model", "init", "--out", model); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("init over a model: %v", err)
	}
	if _, err := run(t, "model", "init"); err == nil || !strings.Contains(err.Error(), "--out") {
		t.Fatalf("init without --out: %v", err)
	}
}

func TestModelTrainVAE(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "toy")
	cfg := filepath.Join(dir, "small.yaml")
	// A two-block VAE on 32-pixel images: seconds, not minutes.
	os.WriteFile(cfg, []byte(`vae:
  block_out_channels: [32, 32]
  down_block_types: [DownEncoderBlock2D, DownEncoderBlock2D]
  up_block_types: [UpDecoderBlock2D, UpDecoderBlock2D]
  sample_size: 32
unet:
  sample_size: 16
`), 0o644)
	if log, err := run(t, "--config", cfg, "model", "init", "--out", model); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	toy := filepath.Join(dir, "world")
	if _, err := data.WriteToyWorld(toy, data.ToyWorldConfig{Seed: 1, Clips: 2, Images: 2, Size: 32, Frames: 2}); err != nil {
		t.Fatal(err)
	}
	log, err := run(t, "model", "train-vae", "-m", model, "--data", filepath.Join(toy, "train.jsonl"),
		"--eval", filepath.Join(toy, "test.jsonl"), "--steps", "6", "--batch-size", "2", "-q")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for _, want := range []string{"trained the VAE of " + model + ": 6 steps", "scaling factor", "test PSNR", ReconSheetFile} {
		if !strings.Contains(log, want) {
			t.Fatalf("output lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(filepath.Join(model, ReconSheetFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "model", "train-vae", "-m", model); err == nil || !strings.Contains(err.Error(), "--data") {
		t.Fatalf("no --data: %v", err)
	}
	if _, err := run(t, "model", "train-vae", "-m", filepath.Join(dir, "none"), "--data", filepath.Join(toy, "train.jsonl"), "-q"); err == nil ||
		!strings.Contains(err.Error(), "none") {
		t.Fatalf("missing model: %v", err)
	}
}
