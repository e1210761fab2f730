package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestGenerateWritesReproduciblePNG(t *testing.T) {
	dir := t.TempDir()
	model := golden.Path(t, "tiny-sd")
	args := []string{"generate", "-m", model, "-p", "a photo of a corgi on the beach", "-n", "blurry",
		"--steps", "3", "-W", "64", "-H", "64", "-s", "123", "-q"}
	out1, out2 := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png")
	if log, err := run(t, append(args, "-o", out1)...); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if _, err := run(t, append(args, "-o", out2)...); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out1)
	b, _ := os.ReadFile(out2)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("same seed and settings gave different files")
	}
	img, err := png.Decode(bytes.NewReader(a))
	if err != nil || img.Bounds().Dx() != 64 || img.Bounds().Dy() != 64 {
		t.Fatalf("decode: %v %v", err, img.Bounds())
	}
	params, ok, err := pipeline.ReadParameters(out1)
	if err != nil || !ok {
		t.Fatalf("parameters: %v %v", ok, err)
	}
	want := "a photo of a corgi on the beach\nNegative prompt: blurry\nSteps: 3, Sampler: DDIM, CFG scale: 7.5, Seed: 123, Size: 64x64, Model: tiny-sd, Version: lcpdiff"
	if params != want {
		t.Fatalf("parameters\n got %q\nwant %q", params, want)
	}
}

func TestGenerateBatchConfigAndLatents(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gen.yaml")
	os.WriteFile(cfg, []byte("prompt: a red cube\nsteps: 2\nwidth: 64\nheight: 64\nbatch: 2\nquiet: true\n"), 0o644)
	out := filepath.Join(dir, "out.png")
	if log, err := run(t, "--config", cfg, "generate", "-m", golden.Path(t, "tiny-sd"), "-o", out); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for _, name := range []string{"out_0.png", "out_1.png"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	p, _, _ := pipeline.ReadParameters(filepath.Join(dir, "out_1.png"))
	if !strings.HasPrefix(p, "a red cube\nSteps: 2,") {
		t.Fatalf("config values not used: %q", p)
	}

	// --latents: the golden run's initial latents reproduce diffusers' image.
	f := golden.File(t, "core", "pipeline_t2i.safetensors")
	lat := filepath.Join(dir, "latents.safetensors")
	if err := torch.SaveSafetensors(lat, map[string]*torch.Tensor{"latents": golden.Tensor(t, f, "initial_latents")}, nil); err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(dir, "golden.png")
	if log, err := run(t, "generate", "-m", golden.Path(t, "tiny-sd"), "-p", "a photo of a corgi on the beach",
		"--steps", "4", "-W", "128", "-H", "128", "--latents", lat, "-q", "-o", out); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	fh, _ := os.Open(out)
	img, err := png.Decode(fh)
	fh.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := golden.Tensor(t, f, "image").Float32s() // [1, 3, 128, 128] in [0, 1]
	worst := 0.0
	for y := range 128 {
		for x := range 128 {
			r, g, b, _ := img.At(x, y).RGBA()
			for c, v := range []uint32{r >> 8, g >> 8, b >> 8} {
				exact := float64(want[(c*128+y)*128+x]) * 255
				if d := float64(v) - exact; d*d > worst*worst {
					worst = max(d, -d)
				}
			}
		}
	}
	// 8-bit rounding of values within 4e-6 of the reference: at most half a level.
	if worst > 0.5+1e-3 {
		t.Fatalf("PNG differs from diffusers' image by %.3f levels", worst)
	}
}

func TestGenerateBadInput(t *testing.T) {
	dir := t.TempDir()
	model := golden.Path(t, "tiny-sd")
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, []byte("not safetensors"), 0o644)
	out := filepath.Join(dir, "x.png")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-W", "100"}, "multiples of 8"},
		{[]string{"--steps", "0"}, "steps"},
		{[]string{"-m", filepath.Join(dir, "nope")}, "nope"},
		{[]string{"-m", bad}, bad},
		{[]string{"--device", "tpu"}, "unknown device"},
		{[]string{"--dtype", "fp16"}, "--device cuda"},
		{[]string{"--dtype", "int8"}, "dtype"},
		{[]string{"--latents", bad}, "--latents"},
		{[]string{"--latents", filepath.Join(dir, "none.safetensors")}, "none.safetensors"},
		{[]string{"-o", filepath.Join(dir, "no", "dir", "x.png")}, "does not exist"},
		{[]string{"-s", "-5"}, "seed"},
	} {
		args := append([]string{"generate", "-m", model, "-p", "x", "--steps", "1", "-W", "64", "-H", "64", "-q", "-o", out}, c.args...)
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", c.args, err, c.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failed runs left files: %v", entries)
	}
}

func TestGenerateWarnsOnLongPrompt(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.png")
	log, err := run(t, "generate", "-m", golden.Path(t, "tiny-sd"), "-p", strings.Repeat("cat ", 90),
		"--steps", "1", "-W", "64", "-H", "64", "-q", "-o", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "warning: prompt is longer than 77 tokens") {
		t.Fatalf("no truncation warning:\n%s", log)
	}
}
