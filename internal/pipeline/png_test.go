package pipeline

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestImagesAndPNGParameters(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	// Two 1x2 images; 0.5 rounds to 128 as (0.5*255).round() = 128 in numpy.
	x := torch.New([]float32{
		0, 1, 1, 0.5, 0.2, -3, // R, G, B planes of image 0 (2 pixels each)
		1, 1, 0, 0, 0.7, 0.7,
	}, 2, 3, 1, 2)
	imgs, err := Images(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Bounds().Dx() != 2 || imgs[0].Bounds().Dy() != 1 {
		t.Fatalf("got %d images of %v", len(imgs), imgs[0].Bounds())
	}
	if p := imgs[0].Pix[:8]; p[0] != 0 || p[1] != 255 || p[2] != 51 || p[3] != 255 || p[4] != 255 || p[5] != 128 || p[6] != 0 {
		t.Fatalf("pixels %v", p)
	}

	dir := t.TempDir()
	for _, prompt := range []string{"a photo of a corgi, on the beach", "ein Hund am Strand: über alles ☀"} {
		params := Parameters{Prompt: prompt, NegativePrompt: "blurry", Steps: 50, Sampler: "DDIM", CFGScale: 7.5,
			Seed: 42, Width: 512, Height: 512, Model: "tiny-sd", Extra: [][2]string{{"Eta", "0"}}}
		path := filepath.Join(dir, "out.png")
		if err := WritePNG(path, imgs[1], params.String()); err != nil {
			t.Fatal(err)
		}
		got, ok, err := ReadParameters(path)
		if err != nil || !ok {
			t.Fatalf("read back: %v %v", ok, err)
		}
		want := prompt + "\nNegative prompt: blurry\nSteps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: tiny-sd, Eta: 0, Version: lcpdiff"
		if got != want {
			t.Fatalf("parameters\n got %q\nwant %q", got, want)
		}
		// Still a valid PNG for the standard decoder.
		f, _ := os.Open(path)
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() != 2 {
			t.Fatalf("decode: %v", err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := WritePNG(filepath.Join(dir, "missing", "x.png"), imgs[0], "p"); err == nil ||
		!strings.Contains(err.Error(), "missing") {
		t.Fatalf("write into a missing directory: %v", err)
	}
}
