package main

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/builtin"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

var generateFlags = []flagSpec{
	{"model", "m", "", "Stable Diffusion model: a diffusers folder or a single-file .safetensors checkpoint (default: the built-in toy-world model)"},
	{"prompt", "p", "", "the prompt (overrides the layout's)"},
	{"negative-prompt", "n", "", "the negative prompt (overrides the layout's)"},
	{"steps", "", 50, "DDIM denoising steps"},
	{"cfg-scale", "", 7.5, "classifier-free guidance scale (1 or less: no guidance)"},
	{"guidance-rescale", "", 0.0, "0 to 1: scales the guided prediction back toward the conditional one's spread (diffusers' guidance_rescale; 0.7 for zero-terminal-SNR models)"},
	{"eta", "", 0.0, "DDIM eta (0: deterministic)"},
	{"seed", "s", 42, "random seed (-1: a random one)"},
	{"width", "W", 0, "image width in pixels, a multiple of 8 (0: the model's, 512 for SD 1.5)"},
	{"height", "H", 0, "image height in pixels, a multiple of 8 (0: the model's, 512 for SD 1.5)"},
	{"batch", "b", 1, "images to make (numbered out_0.png, out_1.png, ...)"},
	{"output", "o", "output.png", "output PNG path"},
	{"device", "", "cpu", "cpu, cuda or cuda:N"},
	{"dtype", "", "fp32", "compute dtype: fp32, or fp16/bf16 on CUDA"},
	{"latents", "", "", "safetensors file whose tensor \"latents\" replaces the initial noise"},
	{"clip-skip", "", 0, "text-encoder layers to skip at the end (1: the penultimate layer)"},
	{"tokenizer", "", "", "tokenizer folder for a single-file checkpoint (default: tokenizer/ beside it)"},
	{"quiet", "q", false, "no progress bar"},

	// Subjects (LCP-Diffusion): a layout file, or a single subject by flags.
	{"layout", "", "", "YAML or JSON scene: prompt, negative_prompt and subjects (refs, masks, box, word, category, phrase)"},
	{"ref", "", []string{}, "a reference image of the single subject (repeat for more views)"},
	{"mask", "", []string{}, "the subject's mask for the --ref in the same position (none: the whole image)"},
	{"box", "", "", "the subject's box x0,y0,x1,y1 in fractions of the width and height"},
	{"word", "", "", "the word(s) of the prompt that name the subject"},
	{"category", "", "", "the subject's category, for the static refiner (default: --word)"},
	{"phrase", "", "", "the subject's grounding phrase (default: --word)"},
	{"adapter", "", "", "LCP adapter checkpoint (needs --image-encoder)"},
	{"ip-adapter", "", "", "public IP-Adapter Plus weights (instead of --adapter)"},
	{"image-encoder", "", "", "CLIP image encoder folder (default with --ip-adapter: image_encoder/ beside the file)"},
	{"gligen", "", "", "diffusers GLIGEN unet/ folder: its grounding layers and position net (instead of --adapter)"},
	{"ip-scale", "", 1.0, "strength of the subjects' image features (dynamic attention)"},
	{"static-scale", "", 1.0, "strength of the subjects' details (static attention)"},
	{"grounding-tau", "", 0.3, "fraction of the steps, from the first, in which the boxes ground the subjects"},
	{"guidance-eta", "", 20.0, "step size of the box guidance"},
	{"guidance-steps", "", 0, "how many of the first steps the box guidance moves (0: half)"},
	{"no-guidance", "", false, "no box guidance"},
	{"region-restrict", "", true, "subjects' image features act only inside their boxes (false: on the whole image, as plain IP-Adapter)"},
	{"show-boxes", "", false, "also write OUT_boxes.png, the image with the subjects' boxes drawn"},
}

func newGenerateCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Make an image from a prompt, with subjects from reference images placed in boxes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			subjects := v.GetString("layout") != "" || len(v.GetStringSlice("ref")) > 0
			if err := useModelDefaults(cmd, v, subjects); err != nil {
				return err
			}
			return generate(v, cmd.ErrOrStderr())
		},
	}
	addFlags(cmd, false, generateFlags)
	return cmd
}

// useModelDefaults fills in what a generation leaves to its model: with
// no --model the built-in toy-world model (its CFG scale and box guidance
// step unless given, and, with subjects, its adapter and image encoder
// unless weights are given), and without --width and
// --height the model's own size (pipeline.DefaultSize), as diffusers'
// pipelines do.
func useModelDefaults(cmd *cobra.Command, v *viper.Viper, subjects bool) error {
	if v.GetString("model") == "" {
		dir, err := builtin.ToyWorld()
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.ErrOrStderr(), "using the built-in toy-world model (64x64 toy shapes); for real pictures give -m a Stable Diffusion 1.5 folder or .safetensors file")
		v.Set("model", dir)
		if !v.IsSet("cfg-scale") {
			v.Set("cfg-scale", builtin.CFGScale)
		}
		if !v.IsSet("guidance-eta") {
			v.Set("guidance-eta", builtin.GuidanceEta)
		}
		if subjects && v.GetString("adapter") == "" && v.GetString("ip-adapter") == "" && v.GetString("gligen") == "" {
			v.Set("adapter", filepath.Join(dir, builtin.AdapterFile))
			if v.GetString("image-encoder") == "" {
				v.Set("image-encoder", filepath.Join(dir, builtin.ImageEncoder))
			}
		}
	}
	size, err := pipeline.DefaultSize(v.GetString("model"))
	if err != nil {
		size = 512 // loading the model will say what is wrong with it
	}
	for _, side := range []string{"width", "height"} {
		if v.GetInt(side) == 0 {
			v.Set(side, size)
		}
	}
	return nil
}

// generate checks every flag, file and subject it can before loading the
// model, so that a mistake costs no loading time.
func generate(v *viper.Viper, stderr io.Writer) error {
	sc, err := readScene(v)
	if err != nil {
		return err
	}
	req, err := newRequest(v, sc, stderr)
	if err != nil {
		return err
	}
	var weights weightSpec
	if len(sc.Subjects) == 0 {
		warnUnused(v, stderr)
	} else if weights, err = addSubjects(v, sc, &req, stderr); err != nil {
		return err
	}
	opts, err := computeOptions(v.GetString("device"), v.GetString("dtype"))
	if err != nil {
		return err
	}
	modelPath := v.GetString("model")
	output := v.GetString("output")
	if dir := filepath.Dir(output); dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("--output %s: directory %s does not exist", output, dir)
		}
	}

	m, err := pipeline.LoadModel(modelPath, pipeline.LoadOptions{Options: opts, Tokenizer: v.GetString("tokenizer")})
	if err != nil {
		return err
	}
	defer m.Free()

	if path := v.GetString("latents"); path != "" {
		lat, err := readLatents(path)
		if err != nil {
			return err
		}
		defer lat.Free()
		req.Latents = lat
	}
	if !v.GetBool("quiet") {
		bar := progressbar.NewOptions(req.Steps, progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("denoising"), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
		req.Progress = func(step, total int) { bar.Set(step) }
	}
	images, err := generateImages(m, req, weights)
	if err != nil {
		return err
	}
	defer images.Free()
	params := pipeline.Parameters{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, Steps: req.Steps, Sampler: "DDIM",
		CFGScale: req.CFGScale, Seed: req.Seed, Width: req.Width, Height: req.Height, Model: m.Name,
		Extra: extraParameters(req.Text2Image),
	}
	var boxes [][4]float64
	if len(req.Subjects) > 0 {
		params.Extra = append(params.Extra, subjectParameters(req, weights.name())...)
		if v.GetBool("show-boxes") {
			for _, s := range req.Subjects {
				boxes = append(boxes, s.Box)
			}
		}
	}
	return writeImages(images, output, params, boxes, stderr)
}

// addSubjects reads the scene's subjects into req and checks the weight
// flags they need.
func addSubjects(v *viper.Viper, sc scene, req *pipeline.LCP, stderr io.Writer) (weightSpec, error) {
	weights, err := weightsFromFlags(v)
	if err != nil {
		return weights, err
	}
	if req.Subjects, err = loadSubjects(sc.Subjects, stderr); err != nil {
		return weights, err
	}
	return weights, req.Check()
}

// newRequest is the request the flags and the scene describe, subjects
// aside; -p and -n override the scene's prompts.
func newRequest(v *viper.Viper, sc scene, stderr io.Writer) (pipeline.LCP, error) {
	req := pipeline.LCP{
		Text2Image: pipeline.Text2Image{
			Prompt:          cmp.Or(v.GetString("prompt"), sc.Prompt),
			NegativePrompt:  cmp.Or(v.GetString("negative-prompt"), sc.NegativePrompt),
			Steps:           v.GetInt("steps"),
			CFGScale:        v.GetFloat64("cfg-scale"),
			GuidanceRescale: v.GetFloat64("guidance-rescale"),
			Eta:             v.GetFloat64("eta"),
			Width:           v.GetInt("width"),
			Height:          v.GetInt("height"),
			Batch:           v.GetInt("batch"),
			ClipSkip:        v.GetInt("clip-skip"),
			Warn:            func(msg string) { fmt.Fprintln(stderr, "warning:", msg) },
		},
		IPScale:        v.GetFloat64("ip-scale"),
		StaticScale:    v.GetFloat64("static-scale"),
		GroundingTau:   v.GetFloat64("grounding-tau"),
		Guidance:       !v.GetBool("no-guidance"),
		GuidanceEta:    v.GetFloat64("guidance-eta"),
		GuidanceSteps:  v.GetInt("guidance-steps"),
		RegionRestrict: v.GetBool("region-restrict"),
	}
	seed := v.GetInt64("seed")
	if seed < -1 {
		return req, fmt.Errorf("--seed %d: use -1 for a random seed", seed)
	}
	if seed == -1 {
		var b [8]byte
		rand.Read(b[:])
		seed = int64(binary.LittleEndian.Uint64(b[:]) >> 1)
	}
	req.Seed = uint64(seed)
	if err := req.Check(); err != nil {
		return req, err
	}
	if len(sc.Subjects) > 0 {
		return req, checkStrengths(req)
	}
	return req, nil
}

// checkStrengths rejects strengths the pipeline would misread: a zero eta,
// for one, means the default there.
func checkStrengths(r pipeline.LCP) error {
	switch {
	case r.IPScale < 0:
		return fmt.Errorf("--ip-scale %g: must be 0 or more", r.IPScale)
	case r.StaticScale < 0:
		return fmt.Errorf("--static-scale %g: must be 0 or more", r.StaticScale)
	case r.GroundingTau < 0 || r.GroundingTau > 1:
		return fmt.Errorf("--grounding-tau %g: want a fraction of the steps, in [0, 1]", r.GroundingTau)
	case !r.Guidance:
		return nil
	case r.GuidanceEta <= 0:
		return fmt.Errorf("--guidance-eta %g: must be positive (--no-guidance turns the guidance off)", r.GuidanceEta)
	case r.GuidanceSteps < 0 || r.GuidanceSteps > r.Steps:
		return fmt.Errorf("--guidance-steps %d: want 0 (half) to --steps %d", r.GuidanceSteps, r.Steps)
	}
	return nil
}

// warnUnused says that subject flags given without subjects do nothing:
// the image is then plain text-to-image.
func warnUnused(v *viper.Viper, stderr io.Writer) {
	for _, name := range []string{"adapter", "ip-adapter", "gligen", "image-encoder"} {
		if v.GetString(name) != "" {
			fmt.Fprintf(stderr, "warning: --%s is unused without subjects (--layout or --ref)\n", name)
		}
	}
	if v.GetBool("show-boxes") {
		fmt.Fprintln(stderr, "warning: --show-boxes: no subjects, so no boxes to draw")
	}
}

// generateImages runs req: plain text-to-image without subjects, else
// LCP-Diffusion with the weights, loaded once the prompt's words are known
// to name every subject.
func generateImages(m *pipeline.Model, req pipeline.LCP, weights weightSpec) (*torch.Tensor, error) {
	if len(req.Subjects) == 0 {
		return m.Generate(req.Text2Image)
	}
	if err := checkWords(m.Tokenizer, req.Prompt, req.Subjects); err != nil {
		return nil, err
	}
	w, err := weights.load(m)
	if err != nil {
		return nil, err
	}
	defer w.Free()
	return m.GenerateLCP(req, w.adapter, w.encoders)
}

func extraParameters(r pipeline.Text2Image) [][2]string {
	var extra [][2]string
	if r.Eta != 0 {
		extra = append(extra, [2]string{"Eta", fmt.Sprint(r.Eta)})
	}
	if r.GuidanceRescale != 0 {
		extra = append(extra, [2]string{"CFG rescale", fmt.Sprint(r.GuidanceRescale)})
	}
	if r.ClipSkip != 0 {
		// A1111 counts the last layer as 1.
		extra = append(extra, [2]string{"Clip skip", fmt.Sprint(r.ClipSkip + 1)})
	}
	return extra
}

// subjectParameters records the subjects (words@box) and every strength,
// so that the image's parameters reproduce it.
func subjectParameters(r pipeline.LCP, weights string) [][2]string {
	subjects := make([]string, len(r.Subjects))
	for k, s := range r.Subjects {
		b := s.Box
		subjects[k] = fmt.Sprintf("%s@%g,%g,%g,%g", s.Words, b[0], b[1], b[2], b[3])
	}
	extra := [][2]string{
		{"LCP weights", infotextQuote(weights)},
		{"Subjects", infotextQuote(strings.Join(subjects, "; "))},
		{"IP scale", fmt.Sprint(r.IPScale)},
		{"Static scale", fmt.Sprint(r.StaticScale)},
		{"Grounding tau", fmt.Sprint(r.GroundingTau)},
	}
	if r.Guidance {
		steps := r.GuidanceSteps
		if steps == 0 {
			steps = r.Steps / 2 // guidance.Params' "half"
		}
		extra = append(extra, [2]string{"Guidance eta", fmt.Sprint(r.GuidanceEta)}, [2]string{"Guidance steps", fmt.Sprint(steps)})
	} else {
		extra = append(extra, [2]string{"Guidance", "off"})
	}
	if !r.RegionRestrict {
		extra = append(extra, [2]string{"Region restrict", "off"})
	}
	return extra
}

// infotextQuote quotes a value as AUTOMATIC1111 does (JSON string syntax)
// when a comma, colon or newline in it would break the "Key: value, ..."
// line apart.
func infotextQuote(s string) string {
	if !strings.ContainsAny(s, ",:\n") {
		return s
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// computeOptions checks the device and dtype flags together: half precision
// has no CPU kernels for most of the network in libtorch.
func computeOptions(device, dtype string) (torch.Options, error) {
	dev, err := torch.ParseDevice(device)
	if err != nil {
		return torch.Options{}, fmt.Errorf("--device: %w", err)
	}
	dt, err := torch.ParseDType(dtype)
	if err != nil {
		return torch.Options{}, fmt.Errorf("--dtype: %w", err)
	}
	if !dt.IsFloat() || dt == torch.Float64 {
		return torch.Options{}, fmt.Errorf("--dtype %s: want fp32, fp16 or bf16", dtype)
	}
	if dev.Type == torch.CUDADevice {
		if n := torch.CUDADeviceCount(); dev.Index >= n {
			return torch.Options{}, fmt.Errorf("--device %s: this libtorch sees %d CUDA device(s)", device, n)
		}
	} else if dt == torch.Float16 {
		return torch.Options{}, fmt.Errorf("--dtype fp16 needs --device cuda (libtorch has no fp16 CPU kernels for convolutions)")
	}
	return torch.Options{DType: dt, Device: dev}, nil
}

func readLatents(path string) (*torch.Tensor, error) {
	f, err := torch.OpenSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("--latents: %w", err)
	}
	defer f.Close()
	t, err := f.Tensor("latents")
	if err != nil {
		return nil, fmt.Errorf("--latents: %w", err)
	}
	return t, nil
}

// writeImages writes one PNG, or out_0.png, out_1.png, ... for a batch;
// with boxes, also out_boxes.png (out_0_boxes.png, ...) with them drawn.
func writeImages(images *torch.Tensor, output string, params pipeline.Parameters, boxes [][4]float64, stderr io.Writer) error {
	imgs, err := pipeline.Images(images)
	if err != nil {
		return err
	}
	ext := filepath.Ext(output)
	stem := strings.TrimSuffix(output, ext)
	if ext == "" {
		ext = ".png"
	}
	for i, img := range imgs {
		path := output
		if len(imgs) > 1 {
			path = fmt.Sprintf("%s_%d%s", stem, i, ext)
		}
		if err := pipeline.WritePNG(path, img, params.String()); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "wrote", path)
		if boxes == nil {
			continue
		}
		path = boxesPath(path)
		if err := pipeline.WritePNG(path, drawBoxes(img, boxes), params.String()); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "wrote", path)
	}
	return nil
}
