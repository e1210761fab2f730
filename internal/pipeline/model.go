package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/model/vae"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Model is a Stable Diffusion model: the networks and the scheduler
// configuration they were trained with.
type Model struct {
	Name      string // for the image's parameters: the folder or file name
	Tokenizer *clip.Tokenizer
	Text      *clip.TextEncoder
	UNet      *unet.UNet
	VAE       *vae.AutoencoderKL
	GLIGEN    *gligen.Grounding // a GLIGEN model's grounding layers, or nil
	Scheduler SchedulerConfig
	Options   torch.Options // dtype and device of the weights
}

// Free releases the networks' weights.
func (m *Model) Free() {
	if m.Text != nil {
		m.Text.Free()
	}
	if m.UNet != nil {
		m.UNet.Free()
	}
	if m.VAE != nil {
		m.VAE.Free()
	}
	if m.GLIGEN != nil {
		m.GLIGEN.Free()
	}
}

// LoadOptions tune LoadModel.
type LoadOptions struct {
	Options torch.Options
	// Tokenizer is a tokenizer folder (vocab.json, merges.txt) for a
	// single-file checkpoint, which carries none; by default a "tokenizer"
	// folder beside the file is used.
	Tokenizer string
	// Configs is a diffusers folder whose unet/, vae/ and text_encoder/
	// config.json describe a single-file checkpoint's networks; by default
	// they are inferred from the tensor shapes.
	Configs string
}

// LoadModel reads a diffusers folder (model_index.json, unet/, vae/,
// text_encoder/, tokenizer/, scheduler/) or an original single-file
// checkpoint (.safetensors).
func LoadModel(path string, o LoadOptions) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if !st.IsDir() {
		return loadSingleFile(path, o)
	}
	return loadFolder(path, o)
}

func loadFolder(dir string, o LoadOptions) (m *Model, err error) {
	index := filepath.Join(dir, "model_index.json")
	b, err := os.ReadFile(index)
	if err != nil {
		return nil, fmt.Errorf("model %s: not a diffusers folder: %w", dir, err)
	}
	var parts map[string]any
	if err := json.Unmarshal(b, &parts); err != nil {
		return nil, fmt.Errorf("model %s: %w", index, err)
	}
	for _, p := range []string{"unet", "vae", "text_encoder", "tokenizer"} {
		if _, ok := parts[p]; !ok {
			return nil, fmt.Errorf("model %s: model_index.json names no %s", dir, p)
		}
	}
	m = &Model{Name: filepath.Base(filepath.Clean(dir)), Options: o.Options}
	defer func() {
		if err != nil {
			m.Free()
			m = nil
		}
	}()
	if m.Tokenizer, err = clip.LoadTokenizer(filepath.Join(dir, "tokenizer")); err != nil {
		return m, err
	}
	if m.Text, err = clip.LoadTextEncoder(filepath.Join(dir, "text_encoder"), o.Options); err != nil {
		return m, err
	}
	unetDir := filepath.Join(dir, "unet")
	uc, err := unet.LoadConfig(filepath.Join(unetDir, "config.json"))
	if err != nil {
		return m, err
	}
	if uc.AttentionType == "gated" {
		m.UNet, m.GLIGEN, err = gligen.LoadUNet(unetDir, o.Options)
	} else {
		m.UNet, err = unet.Load(unetDir, o.Options)
	}
	if err != nil {
		return m, err
	}
	if m.VAE, err = vae.Load(filepath.Join(dir, "vae"), o.Options); err != nil {
		return m, err
	}
	sched := filepath.Join(dir, "scheduler", "scheduler_config.json")
	if m.Scheduler, err = LoadSchedulerConfig(sched); errors.Is(err, os.ErrNotExist) {
		m.Scheduler, err = DefaultSchedulerConfig(), nil
	}
	return m, err
}

// modelName is a file's name without its extension.
func modelName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// DefaultSize is the image side a model makes when none is asked for, as
// diffusers' pipelines choose it: the UNet's sample_size times the VAE's
// downsampling, read from a diffusers folder's configs (512 for SD 1.5,
// 64 for the toy world's model). A single-file checkpoint has no such
// configs: SD 1.x's 512.
func DefaultSize(path string) (int, error) {
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		return 512, nil
	}
	u, err := unet.LoadConfig(filepath.Join(path, "unet", "config.json"))
	if err != nil {
		return 0, err
	}
	v, err := vae.LoadConfig(filepath.Join(path, "vae", "config.json"))
	if err != nil {
		return 0, err
	}
	return int(u.SampleSize) * v.Downsampling(), nil
}
