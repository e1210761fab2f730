package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
)

// weightSpec names what subjects need besides the Stable Diffusion model:
// an LCP adapter checkpoint, or the public parts one is assembled from, and
// the CLIP image encoder of the dynamic attention.
type weightSpec struct {
	adapter      string // an LCP checkpoint (lcp.Adapter.Save)
	ipAdapter    string // public IP-Adapter Plus weights
	gligen       string // a diffusers GLIGEN unet/ folder
	imageEncoder string // a transformers CLIPVisionModelWithProjection folder
}

// weightsFromFlags checks the weight flags before anything is loaded, so
// that a missing file is reported at once, not after the model loads.
func weightsFromFlags(v *viper.Viper) (weightSpec, error) {
	w := weightSpec{
		adapter:      v.GetString("adapter"),
		ipAdapter:    v.GetString("ip-adapter"),
		gligen:       v.GetString("gligen"),
		imageEncoder: v.GetString("image-encoder"),
	}
	encoderFlag := "--image-encoder"
	switch {
	case w.adapter != "" && (w.ipAdapter != "" || w.gligen != ""):
		return w, errors.New("--adapter is a whole LCP checkpoint: give it or the public parts (--ip-adapter, --gligen), not both")
	case w.adapter == "" && w.ipAdapter == "" && w.gligen == "":
		return w, errors.New("subjects need weights: --adapter FILE (an LCP checkpoint), or --ip-adapter FILE and --gligen DIR")
	case w.imageEncoder == "" && w.adapter == "" && w.ipAdapter != "":
		// The public IP-Adapter layout (h94/IP-Adapter) keeps the encoder
		// in image_encoder/ beside the weights.
		w.imageEncoder = filepath.Join(filepath.Dir(w.ipAdapter), "image_encoder")
		encoderFlag = "image encoder (default: image_encoder/ beside --ip-adapter)"
	case w.imageEncoder == "":
		return w, errors.New("subjects need a CLIP image encoder: give --image-encoder DIR")
	}
	for _, p := range []struct{ flag, path string }{
		{"--adapter", w.adapter}, {"--ip-adapter", w.ipAdapter}, {"--gligen", w.gligen}, {encoderFlag, w.imageEncoder},
	} {
		if p.path == "" {
			continue
		}
		if _, err := os.Stat(p.path); err != nil {
			return w, fmt.Errorf("%s %s: %w", p.flag, p.path, unwrapPathError(err))
		}
	}
	return w, nil
}

// name is how the image's parameters name the weights.
func (w weightSpec) name() string {
	if w.adapter != "" {
		return fileStem(w.adapter)
	}
	var parts []string
	if w.ipAdapter != "" {
		parts = append(parts, fileStem(w.ipAdapter))
	}
	if w.gligen != "" {
		// A GLIGEN unet/ folder is named by the model folder holding it.
		dir := filepath.Clean(w.gligen)
		if filepath.Base(dir) == "unet" {
			dir = filepath.Dir(dir)
		}
		parts = append(parts, filepath.Base(dir))
	}
	return strings.Join(parts, " + ")
}

func fileStem(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// subjectWeights are the loaded adapter, attached to the model's UNet, and
// the image encoder.
type subjectWeights struct {
	adapter  *lcp.Adapter
	encoders pipeline.Encoders
}

// load reads the weights in m's dtype and device and attaches the adapter
// to m's UNet.
func (w weightSpec) load(m *pipeline.Model) (*subjectWeights, error) {
	a, err := loadAdapter(m, w.adapter, w.ipAdapter, w.gligen)
	if err != nil {
		return nil, err
	}
	proc, err := imageProcessor(w.imageEncoder)
	if err != nil {
		a.Free()
		return nil, err
	}
	vision, err := clip.LoadVisionEncoder(w.imageEncoder, m.Options)
	if err != nil {
		a.Free()
		return nil, fmt.Errorf("image encoder %s: %w", w.imageEncoder, err)
	}
	return &subjectWeights{adapter: a, encoders: pipeline.Encoders{Vision: vision, Processor: proc}}, nil
}

// loadAdapter attaches an LCP adapter to m's UNet: the checkpoint at
// adapter, or one assembled from public IP-Adapter Plus and GLIGEN weights
// (both empty: a fresh adapter, inert until trained). generate and train
// choose their adapter the same way.
func loadAdapter(m *pipeline.Model, adapter, ipAdapter, gligen string) (*lcp.Adapter, error) {
	if adapter != "" {
		return lcp.Load(adapter, m.UNet, m.Options)
	}
	return lcp.FromParts(ipAdapter, gligen, m.UNet, m.Options)
}

// Free detaches the adapter from the UNet and releases every weight.
func (sw *subjectWeights) Free() {
	sw.adapter.Free()
	sw.encoders.Vision.Free()
}

// imageProcessor is the image encoder's preprocessing. diffusers and
// h94/IP-Adapter keep preprocessor_config.json in a feature_extractor/
// folder beside image_encoder/, and a transformers save keeps it in the
// encoder's own folder; with neither, CLIPImageProcessor's defaults
// (224 pixels, ViT-H/14's input) are also what diffusers falls back to.
func imageProcessor(encoderDir string) (clip.ImageProcessorConfig, error) {
	for _, path := range []string{
		filepath.Join(filepath.Dir(filepath.Clean(encoderDir)), "feature_extractor", "preprocessor_config.json"),
		filepath.Join(encoderDir, "preprocessor_config.json"),
	} {
		c, err := clip.LoadImageProcessorConfig(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		return c, err
	}
	return clip.DefaultImageProcessorConfig(), nil
}
