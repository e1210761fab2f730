package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
)

// The subject tests run the tiny models end to end: tiny-sd, the tiny
// IP-Adapter Plus with its image encoder, and the tiny GLIGEN's grounding,
// at 64x64 with two steps.

// dogImage is the reference photo, 780x780.
func dogImage(t *testing.T) string { return golden.Path(t, "tiny-ip-adapter", "dog00.jpg") }

// tinyParts are the weight flags of the tiny public parts; the image
// encoder is left to its default, image_encoder/ beside the IP-Adapter.
func tinyParts(t *testing.T) []string {
	return []string{"--ip-adapter", golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"),
		"--gligen", golden.Path(t, "tiny-gligen", "unet")}
}

// tinyArgs are "generate" on tiny-sd, small and fast, writing out.
func tinyArgs(t *testing.T, prompt, out string) []string {
	return []string{"generate", "-m", golden.Path(t, "tiny-sd"), "-p", prompt,
		"--steps", "2", "-W", "64", "-H", "64", "-s", "7", "-q", "-o", out}
}

// writeMask writes a w x h mask PNG whose middle half is the subject.
func writeMask(t *testing.T, path string, w, h int) {
	t.Helper()
	m := image.NewGray(image.Rect(0, 0, w, h))
	for y := h / 4; y < h*3/4; y++ {
		for x := w / 4; x < w*3/4; x++ {
			m.Pix[y*m.Stride+x] = 255
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestGenerateSubjectsFromLayout(t *testing.T) {
	dir := t.TempDir()
	// Half the photo's size: the same aspect ratio, so it is resized. Its
	// path is relative to the layout file, not to the working directory.
	writeMask(t, filepath.Join(dir, "dog_mask.png"), 390, 390)
	layout := filepath.Join(dir, "scene.yaml")
	writeFile(t, layout, fmt.Sprintf(`prompt: a dog and a red ball on the beach
subjects:
  - refs: [%[1]q]
    masks: [dog_mask.png]
    box: [0.05, 0.3, 0.45, 0.95]
    word: dog
    phrase: a brown dog
  - refs: [%[1]q]
    masks: [null]
    box: [0.55, 0.1, 0.95, 0.6]
    word: red ball
    category: ball
`, dogImage(t)))
	out := filepath.Join(t.TempDir(), "out.png")
	args := append(tinyArgs(t, "", out), "--layout", layout, "-b", "2", "--show-boxes",
		"--image-encoder", golden.Path(t, "tiny-ip-adapter", "image_encoder"))
	log, err := run(t, append(args, tinyParts(t)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "subject 2: no mask, using the whole image") || strings.Contains(log, "subject 1: no mask") {
		t.Errorf("log does not say which subjects have no mask:\n%s", log)
	}
	for _, name := range []string{"out_0.png", "out_1.png", "out_0_boxes.png", "out_1_boxes.png"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(out), name)); err != nil {
			t.Fatal(err)
		}
	}
	params, _, err := pipeline.ReadParameters(filepath.Join(filepath.Dir(out), "out_1.png"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"a dog and a red ball on the beach\n", // the layout's prompt
		`Subjects: "dog@0.05,0.3,0.45,0.95; red ball@0.55,0.1,0.95,0.6"`,
		"LCP weights: ip-adapter-plus_sd15 + tiny-gligen",
		"IP scale: 1, Static scale: 1, Grounding tau: 0.3, Guidance eta: 20, Guidance steps: 1,",
	} {
		if !strings.Contains(params, want) {
			t.Errorf("parameters lack %q:\n%s", want, params)
		}
	}
	// The boxes image is the image with the outlines, in each subject's colour.
	plain := readPNG(t, filepath.Join(filepath.Dir(out), "out_0.png"))
	boxed := readPNG(t, filepath.Join(filepath.Dir(out), "out_0_boxes.png"))
	for k, b := range [][4]float64{{0.05, 0.3, 0.45, 0.95}, {0.55, 0.1, 0.95, 0.6}} {
		corner := pixelRect(b, 64, 64).Min
		if got := boxed.At(corner.X, corner.Y); got != boxColour(k) {
			t.Errorf("subject %d's corner is %v, want %v", k+1, got, boxColour(k))
		}
	}
	if boxed.At(32, 2) != plain.At(32, 2) {
		t.Error("the boxes image differs from the image away from the boxes")
	}
}

func TestGenerateSingleSubjectFromFlagsAsLayout(t *testing.T) {
	dir := t.TempDir()
	mask := filepath.Join(dir, "mask.png")
	writeMask(t, mask, 780, 780)
	prompt := "a photo of a dog on the grass"
	out := filepath.Join(dir, "flags.png")
	args := append(tinyArgs(t, prompt, out), "--ref", dogImage(t), "--ref", dogImage(t),
		"--mask", "none", "--mask", mask, "--box", "0.1,0.2,0.6,0.9", "--word", "dog",
		"--no-guidance", "--region-restrict=false", "--ip-scale", "0.5", "--show-boxes")
	log, err := run(t, append(args, tinyParts(t)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "subject 1, view 1: no mask, using the whole image") {
		t.Errorf("log does not say that view 1 has no mask:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(dir, "flags_boxes.png")); err != nil {
		t.Fatal(err)
	}
	params, _, _ := pipeline.ReadParameters(out)
	for _, want := range []string{"Subjects: \"dog@0.1,0.2,0.6,0.9\"", "IP scale: 0.5", "Guidance: off", "Region restrict: off"} {
		if !strings.Contains(params, want) {
			t.Errorf("parameters lack %q:\n%s", want, params)
		}
	}

	// The same subject as a JSON layout makes the same file.
	layout := filepath.Join(dir, "scene.json")
	writeFile(t, layout, fmt.Sprintf(`{
	"prompt": %q,
	"subjects": [{"refs": [%q, %[2]q], "masks": [null, "mask.png"], "box": [0.1, 0.2, 0.6, 0.9], "word": "dog"}]
}`, prompt, dogImage(t)))
	out2 := filepath.Join(dir, "layout.png")
	args = append(tinyArgs(t, "", out2), "--layout", layout, "--no-guidance", "--region-restrict=false", "--ip-scale", "0.5")
	if log, err := run(t, append(args, tinyParts(t)...)...); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("the flags and the equivalent layout made different images")
	}
}

func TestGenerateWithAdapterCheckpoint(t *testing.T) {
	dir := t.TempDir()
	// The checkpoint assembled from the tiny public parts, as a user would
	// save it before training.
	opts, err := computeOptions("cpu", "fp32")
	if err != nil {
		t.Fatal(err)
	}
	m, err := pipeline.LoadModel(golden.Path(t, "tiny-sd"), pipeline.LoadOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	a, err := lcp.FromParts(golden.Path(t, "tiny-ip-adapter", "ip-adapter-plus_sd15.safetensors"),
		golden.Path(t, "tiny-gligen", "unet"), m.UNet, m.Options)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "lcp-tiny.safetensors")
	err = a.Save(ckpt)
	a.Free()
	m.Free()
	if err != nil {
		t.Fatal(err)
	}

	subject := []string{"--ref", dogImage(t), "--box", "0.2,0.2,0.8,0.8", "--word", "dog"}
	prompt := "a photo of a dog on the grass"
	fromCkpt := filepath.Join(dir, "ckpt.png")
	args := append(tinyArgs(t, prompt, fromCkpt), subject...)
	log, err := run(t, append(args, "--adapter", ckpt, "--image-encoder", golden.Path(t, "tiny-ip-adapter", "image_encoder"))...)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if p, _, _ := pipeline.ReadParameters(fromCkpt); !strings.Contains(p, "LCP weights: lcp-tiny,") {
		t.Errorf("parameters do not name the checkpoint:\n%s", p)
	}
	// What the parts initialise at random leaves the output alone, so the
	// checkpoint reproduces the parts' image.
	fromParts := filepath.Join(dir, "parts.png")
	args = append(tinyArgs(t, prompt, fromParts), subject...)
	if log, err := run(t, append(args, tinyParts(t)...)...); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	got, want := readPNG(t, fromCkpt).(*image.RGBA), readPNG(t, fromParts).(*image.RGBA)
	if !bytes.Equal(got.Pix, want.Pix) {
		t.Error("the saved checkpoint and its parts made different images")
	}
	// ... and that image is not the one without the subject.
	plain := filepath.Join(dir, "plain.png")
	if log, err := run(t, tinyArgs(t, prompt, plain)...); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if bytes.Equal(readPNG(t, plain).(*image.RGBA).Pix, got.Pix) {
		t.Error("the subject left the image unchanged")
	}
}

func TestGenerateSubjectErrors(t *testing.T) {
	dir := t.TempDir()
	notImage := filepath.Join(dir, "notes.jpg")
	writeFile(t, notImage, "not an image")
	wide := filepath.Join(dir, "wide.png")
	writeMask(t, wide, 100, 50)
	many := filepath.Join(dir, "many.yaml")
	var b strings.Builder
	b.WriteString("prompt: a dog\nsubjects:\n")
	for range 31 {
		fmt.Fprintf(&b, "  - {refs: [%q], box: [0.1, 0.1, 0.5, 0.5], word: dog}\n", dogImage(t))
	}
	writeFile(t, many, b.String())
	typo := filepath.Join(dir, "typo.yaml")
	writeFile(t, typo, "prompt: a dog\nsubjects:\n  - refs: [dog.jpg]\n    mask: [m.png]\n    box: [0, 0, 1, 1]\n    word: dog\n")

	dog := []string{"--ref", dogImage(t), "--word", "dog"}
	parts := tinyParts(t)
	outDir := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{append(dog, "--box", "0.1,0.2,1.3,0.9"), []string{"box", "outside [0, 1]"}},
		{append(dog, "--box", "-0.1,0.2,0.5,0.9"), []string{"box", "outside [0, 1]"}},
		{append(dog, "--box", "0.6,0.2,0.6,0.9"), []string{"box", "x0 < x1"}},
		{append(dog, "--box", "0.1,0.2,0.6"), []string{"--box", "four numbers"}},
		{[]string{"--ref", dogImage(t), "--box", "0.1,0.2,0.6,0.9", "--word", "cat"}, []string{`"cat"`, "not among the prompt's tokens", "dog@"}},
		{append(dog, "--box", "0.1,0.2,0.6,0.9", "--mask", wide), []string{"mask", "100x50", "780x780", "aspect ratio"}},
		{append(dog, "--box", "0.1,0.2,0.6,0.9", "--mask", wide, "--mask", wide), []string{"2 masks for 1 reference"}},
		{[]string{"--ref", notImage, "--box", "0.1,0.2,0.6,0.9", "--word", "dog"}, []string{notImage, "not a JPEG or PNG"}},
		{[]string{"--ref", filepath.Join(dir, "gone.jpg"), "--box", "0.1,0.2,0.6,0.9", "--word", "dog"}, []string{"gone.jpg", "no such file"}},
		{[]string{"--layout", many}, []string{"31 subjects", "at most 30"}},
		{[]string{"--layout", typo}, []string{typo, "mask"}},
		{[]string{"--layout", filepath.Join(dir, "none.yaml")}, []string{"none.yaml", "no such file"}},
		{append(dog, "--layout", many, "--box", "0.1,0.2,0.6,0.9"), []string{"--layout and --ref"}},
		{[]string{"--word", "dog"}, []string{"--word", "--ref"}},
		{[]string{"--ref", dogImage(t)}, []string{"--ref needs --box"}},
		{append(dog, "--box", "0.1,0.2,0.6,0.9", "--grounding-tau", "2"), []string{"--grounding-tau"}},
		{append(dog, "--box", "0.1,0.2,0.6,0.9", "--guidance-eta", "0"), []string{"--guidance-eta", "--no-guidance"}},
	} {
		args := append(tinyArgs(t, "a dog on the beach", filepath.Join(outDir, "x.png")), c.args...)
		_, err := run(t, append(args, parts...)...)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line", c.args, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", c.args, err, w)
			}
		}
	}

	// Weights: none, or a checkpoint without its image encoder.
	subject := append(dog, "--box", "0.1,0.2,0.6,0.9")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "subjects need weights"},
		{[]string{"--adapter", filepath.Join(dir, "lcp.safetensors")}, "--image-encoder"},
		{[]string{"--adapter", filepath.Join(dir, "lcp.safetensors"), "--ip-adapter", parts[1]}, "not both"},
		{[]string{"--ip-adapter", filepath.Join(dir, "ip.safetensors")}, "ip.safetensors"},
	} {
		args := append(tinyArgs(t, "a dog on the beach", filepath.Join(outDir, "x.png")), subject...)
		if _, err := run(t, append(args, c.args...)...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
	if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
		t.Fatalf("failed runs left files: %v", entries)
	}
}

func TestFitMask(t *testing.T) {
	img := data.NewRGB(780, 520)
	for _, c := range []struct {
		w, h int
		ok   bool
	}{
		{780, 520, true},
		{390, 260, true},
		{391, 260, true}, // a resize rounds: 780x520 at half is 390x260, 391 is close enough
		{1560, 1040, true},
		{520, 780, false},
		{400, 260, false},
	} {
		got, ok := fitMask(data.NewGray(c.w, c.h), img)
		if ok != c.ok || ok && (got.W != 780 || got.H != 520) {
			t.Errorf("%dx%d: ok %v %v, want %v", c.w, c.h, ok, got, c.ok)
		}
	}
}
