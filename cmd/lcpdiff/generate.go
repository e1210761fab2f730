package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

var generateFlags = []flagSpec{
	{"model", "m", "", "Stable Diffusion model: a diffusers folder or a single-file .safetensors checkpoint"},
	{"prompt", "p", "", "the prompt"},
	{"negative-prompt", "n", "", "the negative prompt"},
	{"steps", "", 50, "DDIM denoising steps"},
	{"cfg-scale", "", 7.5, "classifier-free guidance scale (1 or less: no guidance)"},
	{"eta", "", 0.0, "DDIM eta (0: deterministic)"},
	{"seed", "s", 42, "random seed (-1: a random one)"},
	{"width", "W", 512, "image width in pixels (a multiple of 8)"},
	{"height", "H", 512, "image height in pixels (a multiple of 8)"},
	{"batch", "b", 1, "images to make (numbered out_0.png, out_1.png, ...)"},
	{"output", "o", "output.png", "output PNG path"},
	{"device", "", "cpu", "cpu, cuda or cuda:N"},
	{"dtype", "", "fp32", "compute dtype: fp32, or fp16/bf16 on CUDA"},
	{"latents", "", "", "safetensors file whose tensor \"latents\" replaces the initial noise"},
	{"clip-skip", "", 0, "text-encoder layers to skip at the end (1: the penultimate layer)"},
	{"tokenizer", "", "", "tokenizer folder for a single-file checkpoint (default: tokenizer/ beside it)"},
	{"quiet", "q", false, "no progress bar"},
}

func newGenerateCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Make an image from a prompt",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return generate(v, cmd.ErrOrStderr())
		},
	}
	addFlags(cmd, false, generateFlags)
	return cmd
}

func generate(v *viper.Viper, stderr io.Writer) error {
	req := pipeline.Text2Image{
		Prompt:         v.GetString("prompt"),
		NegativePrompt: v.GetString("negative-prompt"),
		Steps:          v.GetInt("steps"),
		CFGScale:       v.GetFloat64("cfg-scale"),
		Eta:            v.GetFloat64("eta"),
		Width:          v.GetInt("width"),
		Height:         v.GetInt("height"),
		Batch:          v.GetInt("batch"),
		ClipSkip:       v.GetInt("clip-skip"),
		Warn:           func(msg string) { fmt.Fprintln(stderr, "warning:", msg) },
	}
	seed := v.GetInt64("seed")
	if seed < -1 {
		return fmt.Errorf("--seed %d: use -1 for a random seed", seed)
	}
	if seed == -1 {
		var b [8]byte
		rand.Read(b[:])
		seed = int64(binary.LittleEndian.Uint64(b[:]) >> 1)
	}
	req.Seed = uint64(seed)
	if err := req.Check(); err != nil {
		return err
	}
	opts, err := computeOptions(v.GetString("device"), v.GetString("dtype"))
	if err != nil {
		return err
	}
	modelPath := v.GetString("model")
	if modelPath == "" {
		return fmt.Errorf("no model: give -m/--model (a diffusers folder or a .safetensors checkpoint)")
	}
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
	images, err := m.Generate(req)
	if err != nil {
		return err
	}
	defer images.Free()
	return writeImages(images, output, pipeline.Parameters{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, Steps: req.Steps, Sampler: "DDIM",
		CFGScale: req.CFGScale, Seed: req.Seed, Width: req.Width, Height: req.Height, Model: m.Name,
		Extra: extraParameters(req),
	}, stderr)
}

func extraParameters(r pipeline.Text2Image) [][2]string {
	var extra [][2]string
	if r.Eta != 0 {
		extra = append(extra, [2]string{"Eta", fmt.Sprint(r.Eta)})
	}
	if r.ClipSkip != 0 {
		// A1111 counts the last layer as 1.
		extra = append(extra, [2]string{"Clip skip", fmt.Sprint(r.ClipSkip + 1)})
	}
	return extra
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

// writeImages writes one PNG, or out_0.png, out_1.png, ... for a batch.
func writeImages(images *torch.Tensor, output string, params pipeline.Parameters, stderr io.Writer) error {
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
	}
	return nil
}
