package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/toymodel"
	"github.com/lcpdiff/lcpdiff/internal/train"
)

func newModelCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Make a base model from scratch: a freshly initialised folder, then its VAE trained",
	}
	cmd.AddCommand(newModelInitCommand(v), newTrainVAECommand(v), newModelExportCommand(v))
	return cmd
}

var modelInitFlags = []flagSpec{
	{"out", "o", "", "model folder to write (must not exist, or be empty)"},
	{"seed", "s", 0, "seed of every initial weight: the same seed writes the same files"},
}

func newModelInitCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a diffusers folder of freshly initialised networks sized by a model config",
		Long: `Write a diffusers folder of freshly initialised networks: model_index.json,
scheduler/ (DDIM), tokenizer/ (a CLIP BPE tokenizer built for the config's
words), text_encoder/ (CLIPTextModel), unet/ (UNet2DConditionModel), vae/
(AutoencoderKL) and image_encoder/ (CLIPVisionModelWithProjection and its
image processor). Weights start as PyTorch, diffusers and transformers start
new modules, drawn from --seed.

The sizes come from the root --config file (configs/toyworld-model.yaml, whose
sections use each part's config.json key names); without it, the built-in
toy-world sizes, which equal that file.`,
		Example: "  lcpdiff model init --config configs/toyworld-model.yaml --out toymodel --seed 0",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return modelInit(v, cmd.OutOrStdout())
		},
	}
	addFlags(cmd, false, modelInitFlags)
	return cmd
}

func modelInit(v *viper.Viper, out io.Writer) error {
	dir := v.GetString("out")
	if dir == "" {
		return errors.New("--out: give the model folder to write")
	}
	seed := v.GetInt64("seed")
	if seed < 0 {
		return fmt.Errorf("--seed %d: must be 0 or more", seed)
	}
	spec := toymodel.Default()
	if path := v.GetString("config"); path != "" {
		var err error
		if spec, err = toymodel.LoadSpec(path); err != nil {
			return err
		}
	}
	start := time.Now()
	sum, err := toymodel.Write(dir, spec, uint64(seed))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s in %.1fs (seed %d): tokenizer of %d tokens", dir, time.Since(start).Seconds(), seed, sum.VocabSize)
	parts := make([]string, 0, len(sum.Params))
	for p := range sum.Params {
		parts = append(parts, p)
	}
	sort.Strings(parts)
	for _, p := range parts {
		fmt.Fprintf(out, ", %s %.2fM", p, float64(sum.Params[p])/1e6)
	}
	fmt.Fprintln(out, " parameters")
	return nil
}

var vaeDefaults = train.DefaultVAEConfig()

var trainVAEFlags = []flagSpec{
	{"model", "m", "", "diffusers model folder whose vae/ trains (written back in place)"},
	{"data", "", "", "training `MANIFEST`: every frame and image of it (e.g. train.jsonl of lcpdiff data toyworld)"},
	{"eval", "", "", "test `MANIFEST` to measure the reconstructions' PSNR on, with a sheet of them in the model folder"},
	{"steps", "", vaeDefaults.Steps, "optimizer steps"},
	{"batch-size", "", vaeDefaults.BatchSize, "images a step"},
	{"lr", "", vaeDefaults.LR, "peak AdamW learning rate (linear warm-up, then cosine decay to a tenth)"},
	{"warmup", "", vaeDefaults.WarmupSteps, "warm-up steps"},
	{"kl-weight", "", vaeDefaults.KLWeight, "weight of the KL term against the reconstruction error, both summed per image (LDM's 1e-6)"},
	{"subject-weight", "", vaeDefaults.SubjectWeight, "extra weight of the squared error inside the subjects' masks (0: plain MSE)"},
	{"decoder-only", "", vaeDefaults.DecoderOnly, "train the decoder alone on the frozen encoder's latents (as SD's ft-MSE VAE): the latent space, the scaling factor and any UNet trained on them stay valid"},
	{"resolution", "", 0, "image side in pixels (0: the first image's)"},
	{"seed", "s", 0, "seed of the batches, flips and posterior samples"},
	{"quiet", "q", false, "no progress bar"},
}

func newTrainVAECommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "train-vae",
		Short: "Train a model folder's VAE on a manifest's images and measure its latents' scaling factor",
		Long: `Train a model folder's VAE (AutoencoderKL) from where it stands on every frame
and image of a manifest: the squared error of the decoded posterior sample,
--subject-weight times more inside the subjects' masks, plus --kl-weight
times the KL divergence (LDM's recipe without its perceptual and adversarial
terms); AdamW with a linear warm-up and a cosine decay to a tenth of --lr,
gradients clipped to norm 1, half the images mirrored. Then 1 / std of the
encoder's latent means over 256 training images becomes the scaling factor,
as SD's 0.18215 was chosen. With --decoder-only the encoder, and so the
latents and their scaling factor, stay as they are (its log is
vae_decoder_train.csv and vae_decoder_loss.png). The defaults are the toy
world's recipe (about 13 minutes on one thread of a 2-core machine).

vae/diffusion_pytorch_model.safetensors and vae/config.json's scaling_factor
are replaced atomically; vae_train.csv and vae_loss.png go beside them, and
with --eval the test PSNR is printed and vae_recon.png shows 8 test scenes
above their reconstructions. Ctrl-C stops after the current step and saves
what was trained.`,
		Example: "  lcpdiff --threads 1 model train-vae -m toymodel --data toy/train.jsonl --eval toy/test.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return trainVAE(cmd, v)
		},
	}
	addFlags(cmd, false, trainVAEFlags)
	return cmd
}

// ReconSheetFile is the reconstructions' sheet train-vae --eval writes
// into the model folder.
const ReconSheetFile = "vae_recon.png"

func trainVAE(cmd *cobra.Command, v *viper.Viper) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	modelDir := v.GetString("model")
	if modelDir == "" {
		return errors.New("no model: give -m/--model (a diffusers folder, e.g. from lcpdiff model init)")
	}
	manifestPath := v.GetString("data")
	if manifestPath == "" {
		return errors.New("no data: give --data MANIFEST (e.g. train.jsonl of lcpdiff data toyworld)")
	}
	seed := v.GetInt64("seed")
	if seed < 0 {
		return fmt.Errorf("--seed %d: must be 0 or more", seed)
	}
	cfg := train.DefaultVAEConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR = v.GetInt("steps"), v.GetInt("batch-size"), v.GetFloat64("lr")
	cfg.WarmupSteps, cfg.KLWeight, cfg.Seed = v.GetInt("warmup"), v.GetFloat64("kl-weight"), uint64(seed)
	cfg.SubjectWeight, cfg.DecoderOnly = v.GetFloat64("subject-weight"), v.GetBool("decoder-only")
	cfg.WarmupSteps = min(cfg.WarmupSteps, cfg.Steps)
	if err := cfg.Validate(); err != nil {
		return err
	}
	resolution := v.GetInt("resolution")
	load := func(path string) (*train.VAEImages, error) {
		m, err := data.LoadManifest(path)
		if err != nil {
			return nil, err
		}
		return train.LoadVAEImages(m, resolution)
	}
	imgs, err := load(manifestPath)
	if err != nil {
		return err
	}
	resolution = imgs.Images[0].W // the test images must match
	var test *train.VAEImages
	if path := v.GetString("eval"); path != "" {
		if test, err = load(path); err != nil {
			return err
		}
	}

	ctx, stop := train.OnInterrupt(cmd.Context())
	defer stop()
	progress := newTrainProgress(stderr, v.GetBool("quiet"))
	res, err := train.TrainVAE(ctx, modelDir, imgs, cfg, train.VAEHooks{Progress: progress.update, Logf: progress.logf})
	progress.finish()
	if err != nil && !errors.Is(err, train.ErrInterrupted) {
		return err
	}
	fmt.Fprintf(stdout, "trained the VAE of %s: %d steps in %.1fs (%.2f steps/s, %.1f images/s), loss %.5f -> %.5f (MSE %.5f), scaling factor %.5f\n",
		modelDir, res.Steps, res.Seconds, res.StepsPerSec, res.StepsPerSec*float64(cfg.BatchSize),
		res.FirstLoss, res.FinalLoss, res.FinalMSE, res.ScalingFactor)
	if err != nil {
		return err
	}
	if test != nil {
		sheet := filepath.Join(modelDir, ReconSheetFile)
		ev, err := train.EvaluateVAE(modelDir, test, sheet, 8)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "test PSNR %.2f dB on %d images (%.2f dB inside the subjects); reconstructions in %s\n",
			ev.PSNR, ev.Images, ev.SubjectPSNR, sheet)
	}
	return nil
}
