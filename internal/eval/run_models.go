package eval

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/dino"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Models are the metric models of a run: CLIP ViT-B/32 for CLIP-I and
// CLIP-T, DINO ViT-S/16 for DINO, and a detector for box AP. A nil one is a
// metric the run does not measure.
type Models struct {
	CLIP     *CLIPModel
	DINO     *dino.Model
	Detector *Detector
}

// Close releases every model.
func (m Models) Close() {
	if m.CLIP != nil {
		m.CLIP.Model.Free()
	}
	if m.DINO != nil {
		m.DINO.Free()
	}
	if m.Detector != nil {
		m.Detector.Close()
	}
}

// measure fills rec's embeddings and, when detect is set and there is a
// detector, its detections, from the image as its PNG holds it.
func (m Models) measure(rec *Record, img *data.RGB, detect bool) (err error) {
	defer torch.Recover(&err)
	torch.NoGrad(func() {
		if m.CLIP != nil {
			rec.CLIP = m.CLIP.ImageEmbedding(img)
		}
		if m.DINO != nil {
			rec.DINO = DINOEmbedding(m.DINO, img)
		}
	})
	if detect && m.Detector != nil {
		dets, err := m.Detector.Detect([]*data.RGB{img})
		if err != nil {
			return err
		}
		rec.Detections = dets[0]
	}
	return nil
}

// CLIPModel is a transformers CLIPModel folder: the model, its image
// processor and its tokenizer.
type CLIPModel struct {
	Dir       string
	Model     *clip.Model
	Processor clip.ImageProcessorConfig
	Tokenizer *clip.Tokenizer
}

// LoadCLIP reads a CLIPModel folder (openai/clip-vit-base-patch32's
// layout): config.json and the weights, preprocessor_config.json, and the
// tokenizer files, in the folder itself or in its tokenizer/.
func LoadCLIP(dir string, opts torch.Options) (*CLIPModel, error) {
	proc, err := clip.LoadImageProcessorConfig(filepath.Join(dir, "preprocessor_config.json"))
	if err != nil {
		return nil, fmt.Errorf("CLIP model %s: %w", dir, err)
	}
	tokDir := filepath.Join(dir, "tokenizer")
	if _, err := os.Stat(filepath.Join(tokDir, "vocab.json")); err != nil {
		tokDir = dir
	}
	tok, err := clip.LoadTokenizer(tokDir)
	if err != nil {
		return nil, fmt.Errorf("CLIP model %s: tokenizer: %w", dir, err)
	}
	m, err := clip.LoadModel(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("CLIP model %s: %w", dir, err)
	}
	return &CLIPModel{Dir: dir, Model: m, Processor: proc, Tokenizer: tok}, nil
}

// ImageEmbedding is get_image_features of the image, preprocessed as
// CLIPImageProcessor does: the embedding CLIP-I and CLIP-T compare (the
// cosine makes the normalisation of image_embeds irrelevant).
func (c *CLIPModel) ImageEmbedding(img *data.RGB) []float32 {
	s := torch.NewScope()
	defer s.Close()
	return c.Model.ImageFeatures(c.Processor.Preprocess(img)).ToDevice(torch.CPU).Float32s()
}

// TextEmbedding is get_text_features of the prompt, tokenised as
// CLIPTokenizer(padding="max_length", truncation=True) does.
func (c *CLIPModel) TextEmbedding(prompt string) []float32 {
	s := torch.NewScope()
	defer s.Close()
	ids, _ := c.Tokenizer.EncodePadded(prompt)
	x := torch.New(ids, 1, int64(len(ids))).ToDevice(torch.OptionsOf(c.Model.LogitScale).Device)
	return c.Model.TextFeatures(x).ToDevice(torch.CPU).Float32s()
}

// DINOEmbedding is the DINO class token of the image, through DINO's
// evaluation transform.
func DINOEmbedding(m *dino.Model, img *data.RGB) []float32 {
	s := torch.NewScope()
	defer s.Close()
	return m.Embed(dino.Preprocess(img)).ToDevice(torch.CPU).Float32s()
}
