package main

import (
	"errors"
	"fmt"
	"image"
	"io"
	"path/filepath"

	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/eval"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// evalGenerator makes a benchmark's images with the pipeline, from the
// same flags as generate: plain text-to-image when no weights are given
// (the "base" row: the subjects' words are in the prompt, nothing else of
// them), else LCP-Diffusion with the adapter or the public parts. The
// model and weights load when the first image is asked for, so a run that
// only re-summarises finished records loads neither.
type evalGenerator struct {
	modelPath, tokenizer string
	opts                 torch.Options
	weights              weightSpec
	hasWeights           bool
	req                  pipeline.LCP // the flags' request; prompt, seed and subjects per item
	roundTrip            bool         // --vae-round-trip: each item's target through the VAE
	log                  io.Writer

	m      *pipeline.Model
	loaded *subjectWeights
	photos map[string]*data.RGB // views, read once per run
	masks  map[string]*data.Gray
}

// maxCachedImages bounds the views and masks kept between items: items
// come subject by subject, so a few suffice.
const maxCachedImages = 64

// newEvalGenerator checks the generation flags before anything loads.
func newEvalGenerator(v *viper.Viper, stderr io.Writer) (*evalGenerator, error) {
	// eval has no --prompt or --batch: each item is one image of its own
	// prompt. newRequest checks a batch, so it is given one.
	v.SetDefault("batch", 1)
	req, err := newRequest(v, scene{}, stderr)
	if err != nil {
		return nil, err
	}
	req.Batch = 1
	g := &evalGenerator{
		modelPath: v.GetString("model"), tokenizer: v.GetString("tokenizer"), req: req, log: stderr, roundTrip: v.GetBool("vae-round-trip"),
		photos: map[string]*data.RGB{}, masks: map[string]*data.Gray{},
	}
	if g.modelPath == "" {
		return nil, errors.New("no model: give -m/--model (a diffusers folder or a .safetensors checkpoint)")
	}
	if g.opts, err = computeOptions(v.GetString("device"), v.GetString("dtype")); err != nil {
		return nil, err
	}
	for _, name := range []string{"adapter", "ip-adapter", "gligen"} {
		g.hasWeights = g.hasWeights || v.GetString(name) != ""
	}
	if g.hasWeights {
		if g.weights, err = weightsFromFlags(v); err != nil {
			return nil, err
		}
		if err := checkStrengths(req); err != nil {
			return nil, err
		}
	} else if v.GetString("image-encoder") != "" {
		fmt.Fprintln(stderr, "warning: --image-encoder is unused without weights (--adapter, --ip-adapter or --gligen): the images are plain text-to-image")
	}
	return g, nil
}

// method is the run's default label.
func (g *evalGenerator) method() string {
	if g.roundTrip {
		return "targets through the VAE"
	}
	if !g.hasWeights {
		return "base"
	}
	return methodLabel(g.weights, g.req.Guidance, g.req.RegionRestrict)
}

// Generate implements eval.Generator.
func (g *evalGenerator) Generate(item *eval.Item) (*image.RGBA, string, error) {
	if err := g.load(); err != nil {
		return nil, "", err
	}
	if g.roundTrip {
		return g.reconstruct(item)
	}
	req := g.req
	req.Prompt, req.Seed = item.Prompt, item.Seed
	params := pipeline.Parameters{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, Steps: req.Steps, Sampler: "DDIM",
		CFGScale: req.CFGScale, Seed: req.Seed, Width: req.Width, Height: req.Height, Model: g.m.Name,
		Extra: extraParameters(req.Text2Image),
	}
	var images *torch.Tensor
	var err error
	if g.loaded == nil {
		images, err = g.m.Generate(req.Text2Image)
	} else {
		for k := range item.Subjects {
			s, err := g.subject(&item.Subjects[k])
			if err != nil {
				return nil, "", fmt.Errorf("subject %s: %w", item.Subjects[k].Name, err)
			}
			req.Subjects = append(req.Subjects, s)
		}
		images, err = g.m.GenerateLCP(req, g.loaded.adapter, g.loaded.encoders)
		params.Extra = append(params.Extra, subjectParameters(req, g.weights.name())...)
	}
	if err != nil {
		return nil, "", err
	}
	imgs, err := pipeline.Images(images)
	if err != nil {
		return nil, "", err
	}
	return imgs[0], params.String(), nil
}

// reconstruct is item's target image through the model's VAE.
func (g *evalGenerator) reconstruct(item *eval.Item) (*image.RGBA, string, error) {
	if item.Target == "" {
		return nil, "", errors.New("--vae-round-trip: the benchmark has no target images (toyworld has)")
	}
	img, err := data.ReadImage(item.Target)
	if err != nil {
		return nil, "", err
	}
	x, err := g.m.RoundTrip(img)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", item.Target, err)
	}
	defer x.Free()
	imgs, err := pipeline.Images(x)
	if err != nil {
		return nil, "", err
	}
	return imgs[0], fmt.Sprintf("%s through the VAE\nModel: %s", filepath.Base(item.Target), g.m.Name), nil
}

// load reads the model and the weights, once.
func (g *evalGenerator) load() error {
	if g.m != nil {
		return nil
	}
	m, err := pipeline.LoadModel(g.modelPath, pipeline.LoadOptions{Options: g.opts, Tokenizer: g.tokenizer})
	if err != nil {
		return err
	}
	if g.hasWeights {
		if g.loaded, err = g.weights.load(m); err != nil {
			m.Free()
			return err
		}
	}
	g.m = m
	return nil
}

// subject is an item's subject with its views (and masks) read.
func (g *evalGenerator) subject(s *eval.ItemSubject) (pipeline.Subject, error) {
	ps := pipeline.Subject{Box: s.Box, Words: s.Word, Category: s.Class, Phrase: s.Phrase}
	masks := make([]*data.Gray, len(s.Views))
	anyMask := false
	for i, path := range s.Views {
		img, err := cached(g.photos, path, data.ReadImage)
		if err != nil {
			return ps, err
		}
		ps.References = append(ps.References, img)
		if i >= len(s.Masks) || s.Masks[i] == "" {
			continue
		}
		mask, err := cached(g.masks, s.Masks[i], data.ReadMask)
		if err != nil {
			return ps, err
		}
		var ok bool
		if masks[i], ok = fitMask(mask, img); !ok {
			return ps, fmt.Errorf("mask %s is %dx%d but its image %s is %dx%d, a different aspect ratio",
				s.Masks[i], mask.W, mask.H, path, img.W, img.H)
		}
		anyMask = true
	}
	if anyMask {
		ps.Masks = masks
	}
	return ps, nil
}

// cached reads path through cache, which is emptied when it grows past
// maxCachedImages.
func cached[T any](cache map[string]*T, path string, read func(string) (*T, error)) (*T, error) {
	if x, ok := cache[path]; ok {
		return x, nil
	}
	x, err := read(path)
	if err != nil {
		return nil, err
	}
	if len(cache) >= maxCachedImages {
		clear(cache)
	}
	cache[path] = x
	return x, nil
}

// Free releases the model and weights.
func (g *evalGenerator) Free() {
	if g.loaded != nil {
		g.loaded.Free()
	}
	if g.m != nil {
		g.m.Free()
	}
}
