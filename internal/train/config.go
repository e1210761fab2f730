// Package train fine-tunes an LCP adapter on a frozen Stable Diffusion
// model with the epsilon-prediction objective every method shares (paper
// Eq. 1): a step encodes the batch's images, noises them at random
// timesteps and regresses the UNet's noise prediction on the noise, with
// gradients only for the parameters the configuration names.
//
// A run writes into its output folder a CSV log, a plot of the loss and
// checkpoints from which a later run resumes exactly where it stopped.
package train

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"
)

// Config is one training run, read from YAML by the caller (viper; keys
// are the mapstructure tags). Start from Defaults so that keys the file
// leaves out keep their defaults.
type Config struct {
	Steps     int     `mapstructure:"steps"`      // optimizer steps in all, counting those before a resume
	BatchSize int     `mapstructure:"batch_size"` // samples per micro-batch
	GradAccum int     `mapstructure:"grad_accum"` // micro-batches per optimizer step
	LR        float64 `mapstructure:"lr"`         // peak learning rate
	// LRScheduler shapes the learning rate over the run (LRSchedulers):
	// constant, or a linear warmup over LRWarmupSteps and then constant,
	// a linear decay or a cosine decay to 0 at Steps.
	LRScheduler   string     `mapstructure:"lr_scheduler"`
	LRWarmupSteps int        `mapstructure:"lr_warmup_steps"`
	Betas         [2]float64 `mapstructure:"betas"`        // AdamW's beta1, beta2
	WeightDecay   float64    `mapstructure:"weight_decay"` // AdamW's decoupled weight decay
	// ClipGradNorm caps the global L2 norm of the trainable gradients;
	// 0 leaves them as they are.
	ClipGradNorm float64 `mapstructure:"clip_grad_norm"`
	// TextDropout and ImageDropout are the probabilities that a sample's
	// prompt becomes "" and that its subject conditioning is dropped, so
	// that the model also learns the unconditional branches classifier-free
	// guidance needs. The conditioner applies them.
	TextDropout  float64 `mapstructure:"text_dropout"`
	ImageDropout float64 `mapstructure:"image_dropout"`
	// PhraseDropout is the probability that a sample's subjects are named
	// by their category alone, in its caption and grounding phrases, so
	// that their look must come from the reference images (the lcp
	// conditioner's; phrase_dropout.go says why). 0, the default, keeps
	// every caption as written.
	PhraseDropout float64 `mapstructure:"phrase_dropout"`
	// DroppedImage is what the lcp conditioner gives a sample whose
	// subjects are dropped (DroppedImages): "zero", the zero image's
	// tokens in each subject's box, as IP-Adapter trains its dropped
	// samples and as guidance's unconditional rows see at generation; or
	// "none", no image term at all (the built-in toy-world model's LCP
	// stages were trained so).
	DroppedImage string `mapstructure:"dropped_image"`
	// SubjectLossWeight makes the loss count a latent cell that a subject's
	// mask touches 1 + SubjectLossWeight times as much as a background
	// cell (the weights scaled to mean 1 over the batch, so the loss stays
	// on an MSE's scale). Subjects are a small part of a toy-world image
	// and the part the method is about; 0, the default, is the paper's
	// plain Eq. 1. It needs a data source with masks (a manifest).
	SubjectLossWeight float64 `mapstructure:"subject_loss_weight"`
	// Seed keys every random draw: the data order and augmentation, and
	// each sample's noise, timestep and dropout decisions (see Draws).
	Seed uint64 `mapstructure:"seed"`
	// LogEvery, SampleEvery and CheckpointEvery are intervals in optimizer
	// steps; 0 turns sampling and the periodic checkpoints off (a run
	// still checkpoints when it ends or is stopped).
	LogEvery        int `mapstructure:"log_every"`
	SampleEvery     int `mapstructure:"sample_every"`
	CheckpointEvery int `mapstructure:"checkpoint_every"`
	// CheckpointsTotalLimit is the most checkpoints a run keeps, as
	// diffusers' --checkpoints_total_limit: once a checkpoint is written,
	// the oldest of those before it go (one holds the optimizer's two
	// moments per weight, 90 MB for the toy world's stages). 0 keeps all.
	CheckpointsTotalLimit int    `mapstructure:"checkpoints_total_limit"`
	OutDir                string `mapstructure:"out_dir"`
	// Trainable are glob patterns (path.Match) over the adapter's parameter
	// keys; the parameters they match train and every other weight stays
	// frozen. Every pattern must match at least one key, so that a typo
	// cannot silently freeze a part.
	Trainable []string `mapstructure:"trainable"`
	// Resolution is the side of the square training images, in pixels.
	Resolution int `mapstructure:"resolution"`
	// Conditioner is what the UNet sees besides the noisy latent: "lcp",
	// the paper's condition (captions, static references, image tokens,
	// grounding tokens, each row its own sample's), "grounding" (captions
	// and the grounding tokens of boxes and phrases) or "text" (captions).
	Conditioner string `mapstructure:"conditioner"`
	// Resampler sizes the resampler of an adapter trained from scratch;
	// zero fields keep IP-Adapter Plus SD 1.5's.
	Resampler ResamplerSize `mapstructure:"resampler"`
	// MixedPrecision is "no", "fp16" or "bf16" (see Precisions): fp16 needs
	// CUDA and scales the loss; bf16 runs on CPU too.
	MixedPrecision string `mapstructure:"mixed_precision"`
	// GradientCheckpointing recomputes the UNet's resnets and transformers
	// in backward rather than keeping their activations: less memory for
	// about a third more compute.
	GradientCheckpointing bool `mapstructure:"gradient_checkpointing"`
	// Resume is a checkpoint folder to continue from, or "latest" for the
	// newest one under OutDir (afresh while there is none); empty starts
	// afresh.
	Resume string `mapstructure:"resume"`
}

// ConfigKeys are the YAML keys of a Config, in field order: the
// mapstructure tags, so that a help text listing them cannot fall behind
// the struct.
func ConfigKeys() []string {
	t := reflect.TypeFor[Config]()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, t.Field(i).Tag.Get("mapstructure"))
	}
	return keys
}

// ResamplerSize is the shape of a fresh adapter's resampler.
type ResamplerSize struct {
	Dim     int64 `mapstructure:"dim"`      // width of its latents
	Depth   int   `mapstructure:"depth"`    // attention + feed-forward blocks
	Heads   int64 `mapstructure:"heads"`    // attention heads
	DimHead int64 `mapstructure:"dim_head"` // width of a head
	Queries int64 `mapstructure:"queries"`  // image tokens per subject
	FFMult  int64 `mapstructure:"ff_mult"`  // feed-forward expansion
}

// Conditioners are the values Config.Conditioner takes.
var Conditioners = []string{"lcp", "grounding", "text"}

// DroppedImages are the values Config.DroppedImage takes.
var DroppedImages = []string{"zero", "none"}

// AdapterTrainable is the paper's recipe: every parameter of the LCP
// adapter trains (resampler, dynamic, static and grounding attention, the
// layout-aware MLPs, the static projection) and nothing of the base model.
var AdapterTrainable = []string{"static.*", "image_proj.*", "ip_adapter.*", "position_net.*", "*fuser*", "static_projection.*"}

// Defaults is the paper's setup (IV-A) at one GPU's batch of 16 (set
// grad_accum, or gradient_checkpointing, where memory is short): AdamW at a
// constant 5e-5 with PyTorch's betas and weight decay, 512x512, the whole
// adapter trainable, and the usual 5% condition dropout.
func Defaults() Config {
	return Config{
		Steps:           100_000,
		BatchSize:       16,
		GradAccum:       1,
		LR:              5e-5,
		LRScheduler:     "constant",
		Betas:           [2]float64{0.9, 0.999},
		WeightDecay:     1e-2,
		ClipGradNorm:    1,
		TextDropout:     0.05,
		ImageDropout:    0.05,
		DroppedImage:    "zero",
		Seed:            0,
		LogEvery:        10,
		SampleEvery:     0,
		CheckpointEvery: 5_000,
		OutDir:          "train-out",
		Trainable:       append([]string(nil), AdapterTrainable...),
		Resolution:      512,
		Conditioner:     "lcp",
		MixedPrecision:  "no",
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("train: steps must be at least 1, got %d", c.Steps)
	case c.BatchSize < 1:
		return fmt.Errorf("train: batch_size must be at least 1, got %d", c.BatchSize)
	case c.GradAccum < 1:
		return fmt.Errorf("train: grad_accum must be at least 1, got %d", c.GradAccum)
	case !(c.LR > 0):
		return fmt.Errorf("train: lr must be positive, got %g", c.LR)
	case c.LRWarmupSteps < 0:
		return fmt.Errorf("train: lr_warmup_steps must be 0 or more, got %d", c.LRWarmupSteps)
	case c.Betas[0] < 0 || c.Betas[0] >= 1 || c.Betas[1] < 0 || c.Betas[1] >= 1:
		return fmt.Errorf("train: betas must lie in [0, 1), got %v", c.Betas)
	case c.WeightDecay < 0:
		return fmt.Errorf("train: weight_decay must be 0 or more, got %g", c.WeightDecay)
	case c.ClipGradNorm < 0:
		return fmt.Errorf("train: clip_grad_norm must be 0 (off) or more, got %g", c.ClipGradNorm)
	case c.TextDropout < 0 || c.TextDropout > 1 || c.ImageDropout < 0 || c.ImageDropout > 1:
		return fmt.Errorf("train: text_dropout and image_dropout are probabilities, got %g and %g", c.TextDropout, c.ImageDropout)
	case c.PhraseDropout < 0 || c.PhraseDropout > 1:
		return fmt.Errorf("train: phrase_dropout is a probability, got %g", c.PhraseDropout)
	case c.PhraseDropout > 0 && c.Conditioner != "lcp":
		return fmt.Errorf("train: phrase_dropout needs the lcp conditioner (the %s conditioner has no reference images to carry the words it drops)", c.Conditioner)
	case c.SubjectLossWeight < 0:
		return fmt.Errorf("train: subject_loss_weight must be 0 (off) or more, got %g", c.SubjectLossWeight)
	case c.LogEvery < 1:
		return fmt.Errorf("train: log_every must be at least 1, got %d", c.LogEvery)
	case c.SampleEvery < 0 || c.CheckpointEvery < 0:
		return fmt.Errorf("train: sample_every and checkpoint_every must be 0 (off) or more, got %d and %d", c.SampleEvery, c.CheckpointEvery)
	case c.CheckpointsTotalLimit < 0:
		return fmt.Errorf("train: checkpoints_total_limit must be 0 (keep all) or more, got %d", c.CheckpointsTotalLimit)
	case c.OutDir == "":
		return errors.New("train: out_dir is not set")
	case len(c.Trainable) == 0:
		return errors.New("train: trainable names no parameter")
	case c.Resolution < 8 || c.Resolution%8 != 0:
		return fmt.Errorf("train: resolution must be a positive multiple of 8, got %d", c.Resolution)
	}
	if !slices.Contains(Conditioners, c.Conditioner) {
		return fmt.Errorf("train: conditioner %q: want one of %s", c.Conditioner, strings.Join(Conditioners, ", "))
	}
	if !slices.Contains(DroppedImages, c.DroppedImage) {
		return fmt.Errorf("train: dropped_image %q: want one of %s", c.DroppedImage, strings.Join(DroppedImages, ", "))
	}
	if !slices.Contains(LRSchedulers, c.LRScheduler) {
		return fmt.Errorf("train: lr_scheduler %q: want one of %s", c.LRScheduler, strings.Join(LRSchedulers, ", "))
	}
	if !slices.Contains(Precisions, c.MixedPrecision) {
		return fmt.Errorf("train: mixed_precision %q: want one of %s", c.MixedPrecision, strings.Join(Precisions, ", "))
	}
	for _, p := range c.Trainable {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("train: trainable pattern %q: %v", p, err)
		}
	}
	return nil
}

// SamplesPerStep is how many samples one optimizer step sees.
func (c Config) SamplesPerStep() int { return c.BatchSize * c.GradAccum }
