package main

import (
	"fmt"
	"image"
	"image/draw"
	"os"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
	"github.com/lcpdiff/lcpdiff/internal/train"
)

// sampleCount is how many data samples each sample sheet shows.
const sampleCount = 4

// trainSamples renders, every sample_every steps, the same few samples
// of the training data as the model generates them at that step: with the
// lcp conditioner from their subjects (references, boxes, phrases), with
// the grounding conditioner from their captions, phrases and boxes, with
// the text conditioner from their captions. Each sheet is OUT/samples/step-NNNNNNNN.png, the data's
// images in the top row and the generations below, requested boxes drawn.
type trainSamples struct {
	model   *pipeline.Model
	adapter *lcp.Adapter
	enc     pipeline.Encoders
	cfg     train.Config
	samples []*data.Sample
}

// newTrainSamples picks the samples: the first of a sampler with a seed
// of its own, so that they do not depend on the run's data order.
func newTrainSamples(m *pipeline.Model, a *lcp.Adapter, enc pipeline.Encoders, manifest *data.Manifest, cfg train.Config) (*trainSamples, error) {
	opts := data.DefaultSampleOptions()
	opts.Size = cfg.Resolution
	sampler, err := data.NewSampler(manifest, 1<<40, opts)
	if err != nil {
		return nil, err
	}
	s := &trainSamples{model: m, adapter: a, enc: enc, cfg: cfg}
	for i := range sampleCount {
		sample, err := sampler.Sample(i)
		if err != nil {
			return nil, err
		}
		s.samples = append(s.samples, sample)
	}
	return s, nil
}

// render is train.Hooks.Sample.
func (s *trainSamples) render(step int) error {
	size := s.cfg.Resolution
	var top, bottom []*image.RGBA
	for i, sample := range s.samples {
		img, boxes, err := s.generate(sample, uint64(i))
		if err != nil {
			return err
		}
		top = append(top, drawBoxes(rgbaOf(sample.Target), boxes))
		bottom = append(bottom, drawBoxes(img, boxes))
	}
	sheet := image.NewRGBA(image.Rect(0, 0, size*len(top), 2*size))
	for i := range top {
		draw.Draw(sheet, image.Rect(i*size, 0, (i+1)*size, size), top[i], image.Point{}, draw.Src)
		draw.Draw(sheet, image.Rect(i*size, size, (i+1)*size, 2*size), bottom[i], image.Point{}, draw.Src)
	}
	dir := filepath.Join(s.cfg.OutDir, "samples")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return pipeline.WritePNG(filepath.Join(dir, fmt.Sprintf("step-%08d.png", step)), sheet, "")
}

// generate makes one sample's image: 20 DDIM steps at guidance scale 5,
// no box guidance (a sample sheet should cost little).
func (s *trainSamples) generate(sample *data.Sample, seed uint64) (*image.RGBA, [][4]float64, error) {
	r := pipeline.LCP{
		Text2Image: pipeline.Text2Image{
			Prompt: sample.Caption, Steps: 20, CFGScale: 5, Seed: seed,
			Width: s.cfg.Resolution, Height: s.cfg.Resolution, Batch: 1,
		},
		IPScale: 1, StaticScale: 1, GroundingTau: 1, RegionRestrict: true,
	}
	g := pipeline.GLIGEN{Text2Image: r.Text2Image, Tau: 1}
	var boxes [][4]float64
	for _, sub := range sample.Subjects {
		box := [4]float64(sub.Box)
		boxes = append(boxes, box)
		r.Subjects = append(r.Subjects, pipeline.Subject{
			References: []*data.RGB{sub.Dynamic.Image}, Masks: []*data.Gray{sub.Dynamic.Mask},
			Box: box, Words: sub.Phrase, Category: sub.Category, Phrase: sub.Phrase,
		})
		g.Phrases, g.Boxes = append(g.Phrases, sub.Phrase), append(g.Boxes, box)
	}
	var images *torch.Tensor
	var err error
	switch {
	case len(r.Subjects) == 0 || s.cfg.Conditioner == "text":
		images, err = s.model.Generate(r.Text2Image)
	case s.cfg.Conditioner == "lcp":
		images, err = s.model.GenerateLCP(r, s.adapter, s.enc)
	default:
		images, err = s.model.GenerateGLIGEN(s.adapter.Grounding, g)
	}
	if err != nil {
		return nil, nil, err
	}
	defer images.Free()
	imgs, err := pipeline.Images(images)
	if err != nil {
		return nil, nil, err
	}
	return imgs[0], boxes, nil
}

// rgbaOf is a data image as an image.RGBA.
func rgbaOf(img *data.RGB) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, img.W, img.H))
	for i := range img.W * img.H {
		copy(out.Pix[4*i:4*i+3], img.Pix[3*i:3*i+3])
		out.Pix[4*i+3] = 255
	}
	return out
}
