package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
	"github.com/lcpdiff/lcpdiff/internal/train"
)

var trainFlags = []flagSpec{
	{"model", "m", "", "Stable Diffusion model to train against (frozen): a diffusers folder or a .safetensors checkpoint"},
	{"data", "", "", "training `MANIFEST` (JSON lines, e.g. train.jsonl of lcpdiff data toyworld)"},
	{"adapter", "", "", "LCP adapter checkpoint to start from (default: a fresh adapter)"},
	{"ip-adapter", "", "", "public IP-Adapter Plus weights to start the adapter from (instead of --adapter)"},
	{"gligen", "", "", "diffusers GLIGEN unet/ folder to start the grounding layers from (instead of --adapter)"},
	{"image-encoder", "", "", "CLIP image encoder folder for the lcp conditioner (default: image_encoder/ in the model folder)"},
	{"tokenizer", "", "", "tokenizer folder for a single-file checkpoint (default: tokenizer/ beside it)"},
	{"device", "", "cpu", "cpu, cuda or cuda:N"},
	{"quiet", "q", false, "no progress bar"},
	{"eval-loss", "", 0, "train nothing: measure the objective on `N` batches of --data (held-out data, e.g. another toy world's train.jsonl), every condition present, each batch's noise and timesteps those of a run's step of the same number, so that models measured alike are compared on the same draws; print it and its part on the subjects' latent cells"},

	// These override the config's keys of the same meaning.
	{"out", "o", "", "output folder: log, plot and checkpoints (overrides out_dir)"},
	{"resume", "", "", "checkpoint folder to continue from, or \"latest\" for the newest under the output folder (none yet: start afresh)"},
	{"steps", "", 0, "optimizer steps in all, counting those before a resume (overrides steps)"},
	{"lr", "", 0.0, "learning rate (overrides lr)"},
	{"seed", "s", 0, "seed of the noise, timesteps, dropout and data order (overrides seed)"},
}

// configFlags maps the flags that override a train.Config key to that key.
var configFlags = map[string]string{"out": "out_dir", "resume": "resume", "steps": "steps", "lr": "lr", "seed": "seed"}

func newTrainCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train an LCP adapter on a data manifest, the Stable Diffusion model frozen",
		Long: `Train an LCP adapter on a data manifest, the Stable Diffusion model frozen.

` + fill("The run is described by the YAML file of the root --config flag, which holds "+
			"the training keys ("+strings.Join(train.ConfigKeys(), ", ")+") beside this command's flag "+
			"names (model, data, adapter, ...), as in configs/toyworld-tiny.yaml. "+
			"Keys the file leaves out keep their defaults; any other key is an error. The "+
			"flags --out, --resume, --steps, --lr and --seed, given on the command line, "+
			"override the file.", 76) + `

A run writes train.csv, loss.png and checkpoints/step-N into its output
folder. Ctrl-C stops it after the current step with a checkpoint; continue
with --resume latest.

Past one process the run is data-parallel on libtorch's c10d, started the
torchrun way: every process runs this same command with the environment
variables RANK (0..WORLD_SIZE-1), WORLD_SIZE, LOCAL_RANK (the process's
index on its machine), MASTER_ADDR and MASTER_PORT (where rank 0 listens).
Each rank reads its own share of the data (rank r takes samples r, r+W,
r+2W, ...), so W ranks with batch_size B train as one process with
batch_size B*W would, with the same noise and dropout per sample, up to
rounding; gradients are averaged over the ranks every step. The backend
is Gloo on the CPU and NCCL with --device cuda, where rank r uses
cuda:LOCAL_RANK (LCPDIFF_DIST_BACKEND overrides the backend,
LCPDIFF_DIST_TIMEOUT the 30m the ranks wait for each other). Only rank 0
prints progress and writes the log, the plot, samples and checkpoints; give
every rank the same --out on a shared file system, so that --resume reads
the same checkpoint everywhere.
Started by hand, two ranks on one machine:

  export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500
  RANK=0 LOCAL_RANK=0 lcpdiff --config run.yaml train ... &
  RANK=1 LOCAL_RANK=1 lcpdiff --config run.yaml train ...

or with torchrun, which sets the five variables (--no-python runs a
program that is not a Python script):

  torchrun --nproc-per-node 2 --no-python lcpdiff --config run.yaml train ...`,
		Example: "  lcpdiff --config configs/toyworld-tiny.yaml train -m tiny-sd --data toy/train.jsonl --out runs/toy\n" +
			"  lcpdiff --config configs/toyworld-tiny.yaml train -m tiny-sd --data toy/train.jsonl --out runs/toy --resume latest --steps 600",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTrain(cmd, v)
		},
	}
	addFlags(cmd, false, trainFlags)
	return cmd
}

// runTrain checks the configuration, the manifest and the weight flags
// before it loads the model, so that a mistake costs no loading time.
func runTrain(cmd *cobra.Command, v *viper.Viper) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	cfg, err := trainConfig(cmd, v)
	if err != nil {
		return err
	}
	manifestPath := v.GetString("data")
	if manifestPath == "" {
		return errors.New("no data: give --data MANIFEST (e.g. train.jsonl of `lcpdiff data toyworld`)")
	}
	manifest, err := data.LoadManifest(manifestPath)
	if err != nil {
		return err
	}
	modelPath := v.GetString("model")
	if modelPath == "" {
		return errors.New("no model: give -m/--model (a diffusers folder or a .safetensors checkpoint)")
	}
	adapterPath, ipPath, gligenDir := v.GetString("adapter"), v.GetString("ip-adapter"), v.GetString("gligen")
	if adapterPath != "" && (ipPath != "" || gligenDir != "") {
		return errors.New("--adapter is a whole LCP checkpoint: give it or the public parts (--ip-adapter, --gligen), not both")
	}
	for _, p := range []struct{ flag, path string }{{"--adapter", adapterPath}, {"--ip-adapter", ipPath}, {"--gligen", gligenDir}} {
		if _, err := os.Stat(p.path); p.path != "" && err != nil {
			return fmt.Errorf("%s %s: %w", p.flag, p.path, unwrapPathError(err))
		}
	}
	device := v.GetString("device")
	heldOut := v.GetInt("eval-loss")
	if heldOut < 0 {
		return fmt.Errorf("--eval-loss %d: want a number of batches", heldOut)
	}
	var pg *torch.ProcessGroup
	var backend string
	if heldOut == 0 {
		if pg, backend, err = joinTrainingJob(device); err != nil {
			return err
		}
	} else {
		// Measured with every condition, so that a model's number does
		// not hang on which samples the dropout draws struck.
		cfg.TextDropout, cfg.ImageDropout, cfg.PhraseDropout = 0, 0, 0
	}
	lead := pg == nil || pg.Rank() == 0
	if pg != nil {
		defer pg.Close()
		if device == "cuda" {
			device = fmt.Sprintf("cuda:%d", pg.LocalRank())
		}
		if lead {
			fmt.Fprintf(stderr, "data-parallel training: rank 0 of %d (%s, master %s:%s); rank 0 reports and writes for all\n",
				pg.WorldSize(), backend, os.Getenv("MASTER_ADDR"), os.Getenv("MASTER_PORT"))
		}
	}
	// Training runs in fp32: AdamW's small updates vanish in half
	// precision weights.
	opts, err := computeOptions(device, "fp32")
	if err != nil {
		return err
	}

	m, err := pipeline.LoadModel(modelPath, pipeline.LoadOptions{Options: opts, Tokenizer: v.GetString("tokenizer")})
	if err != nil {
		return err
	}
	defer m.Free()
	enc, err := trainEncoders(v.GetString("image-encoder"), modelPath, cfg.Conditioner == "lcp", m)
	if err != nil {
		return err
	}
	if enc.Vision != nil {
		defer enc.Vision.Free()
	}
	var a *lcp.Adapter
	if adapterPath == "" && ipPath == "" && gligenDir == "" {
		a, err = lcp.Fresh(m.UNet, freshResampler(cfg.Resampler, enc, m), m.Options)
	} else {
		a, err = loadAdapter(m, adapterPath, ipPath, gligenDir)
	}
	if err != nil {
		return err
	}
	defer a.Free()
	batches, err := train.NewManifestBatches(manifest, cfg)
	if err != nil {
		return err
	}
	defer batches.Close()
	var cond train.Conditioner
	switch cfg.Conditioner {
	case "lcp":
		cond = train.NewLCPConditioner(m, a, enc, cfg)
	case "grounding":
		cond = train.NewGroundingConditioner(m, a, cfg)
	default:
		cond = &train.TextConditioner{Model: m, Dropout: cfg.TextDropout}
	}

	if heldOut > 0 {
		return printHeldOutLoss(stdout, cfg, m, a, batches, cond, heldOut, manifestPath)
	}

	ctx, stop := train.OnInterrupt(cmd.Context())
	defer stop()
	progress := newTrainProgress(stderr, v.GetBool("quiet") || !lead)
	hooks := train.Hooks{Progress: progress.update, Logf: progress.logf}
	if cfg.SampleEvery > 0 && lead {
		samples, err := newTrainSamples(m, a, enc, manifest, cfg)
		if err != nil {
			return err
		}
		hooks.Sample = samples.render
	}
	start := time.Now()
	err = train.Run(ctx, pg, cfg, m, a, batches, cond, hooks)
	progress.finish()
	if errors.Is(err, train.ErrInterrupted) {
		return fmt.Errorf("%w; continue with --resume latest", err)
	}
	if err != nil || !lead {
		return err
	}
	ckpt, err := train.LatestCheckpoint(cfg.OutDir)
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	fmt.Fprintf(stdout, "trained to step %d (%d steps in %.1fs, %.2f steps/s); adapter in %s\n",
		cfg.Steps, progress.steps, elapsed, float64(progress.steps)/elapsed, ckpt)
	return nil
}

// backendEnv is the variable torch.InitFromEnv takes the c10d backend from.
const backendEnv = "LCPDIFF_DIST_BACKEND"

// joinTrainingJob joins the data-parallel job the environment describes
// (torchrun's variables; nil when WORLD_SIZE is unset or 1), over NCCL for
// a CUDA device and Gloo otherwise unless LCPDIFF_DIST_BACKEND says which,
// and returns the backend's name. It waits for every rank to arrive.
func joinTrainingJob(device string) (*torch.ProcessGroup, string, error) {
	backend := os.Getenv(backendEnv)
	if backend == "" {
		// InitFromEnv reads only the variable, and takes Gloo without it.
		backend = "gloo"
		if strings.HasPrefix(device, "cuda") {
			backend = "nccl"
			os.Setenv(backendEnv, backend)
		}
	}
	pg, err := torch.InitFromEnv()
	if err != nil {
		return nil, "", fmt.Errorf("joining the data-parallel job: %w", err)
	}
	return pg, backend, nil
}

// trainConfig is train.Defaults, then the keys of the --config file, then
// the overriding flags given on the command line; validated.
func trainConfig(cmd *cobra.Command, v *viper.Viper) (train.Config, error) {
	cfg := train.Defaults()
	if path := v.GetString("config"); path != "" {
		if err := readTrainKeys(path, cmd, &cfg); err != nil {
			return cfg, err
		}
	}
	fs := cmd.Flags()
	for flag, key := range configFlags {
		if !fs.Changed(flag) {
			continue
		}
		switch key {
		case "out_dir":
			cfg.OutDir = v.GetString(flag)
		case "resume":
			cfg.Resume = v.GetString(flag)
		case "steps":
			cfg.Steps = v.GetInt(flag)
		case "lr":
			cfg.LR = v.GetFloat64(flag)
		case "seed":
			seed := v.GetInt64(flag)
			if seed < 0 {
				return cfg, fmt.Errorf("--seed %d: must be 0 or more", seed)
			}
			cfg.Seed = uint64(seed)
		}
	}
	return cfg, cfg.Validate()
}

// readTrainKeys decodes the train.Config keys of the YAML file at path into
// cfg. The file may also hold the command's flag names, which the root
// command has already read; any other key is most likely a typo, which
// would otherwise silently leave a setting at its default.
func readTrainKeys(path string, cmd *cobra.Command, cfg *train.Config) error {
	f := viper.New()
	f.SetConfigFile(path)
	if err := f.ReadInConfig(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	file := struct {
		train.Config `mapstructure:",squash"`
		Rest         map[string]any `mapstructure:",remain"`
	}{Config: *cfg}
	if err := f.Unmarshal(&file); err != nil {
		return fmt.Errorf("config %s: %s", path, oneLine(err))
	}
	// mapstructure fills an array from a shorter list and leaves the rest
	// zero: a beta2 of 0 would go unnoticed.
	if betas, ok := f.Get("betas").([]any); ok && len(betas) != len(cfg.Betas) {
		return fmt.Errorf("config %s: betas: want [beta1, beta2], got %d values", path, len(betas))
	}
	var unknown []string
	for key := range file.Rest {
		_, overrides := configFlags[key]
		if cmd.Flags().Lookup(key) == nil || overrides && configFlags[key] != key {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config %s: unknown key %s (training keys are train.Config's, e.g. out_dir, batch_size)", path, strings.Join(quoteAll(unknown), ", "))
	}
	*cfg = file.Config
	return nil
}

// oneLine joins the lines of mapstructure's error list, after its
// heading, into one line.
func oneLine(err error) string {
	var parts []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
		if line != "" && !strings.HasPrefix(line, "decoding failed") {
			parts = append(parts, line)
		}
	}
	if len(parts) == 0 {
		return strings.ReplaceAll(err.Error(), "\n", " ")
	}
	return strings.Join(parts, "; ")
}

func quoteAll(s []string) []string {
	q := slices.Clone(s)
	for i := range q {
		q[i] = fmt.Sprintf("%q", q[i])
	}
	return q
}

// trainProgress is the progress bar with the loss, and the notes of the
// run printed above it.
type trainProgress struct {
	w       io.Writer
	quiet   bool
	bar     *progressbar.ProgressBar
	started bool
	first   int // step before this process's first, so the bar's ETA counts only its own steps
	steps   int // steps this process made
}

func newTrainProgress(w io.Writer, quiet bool) *trainProgress {
	return &trainProgress{w: w, quiet: quiet}
}

func (p *trainProgress) update(step, total int, loss float64) {
	if !p.started {
		p.started, p.first = true, step-1
		if !p.quiet {
			// The bar is made at the first step, not before, so that a
			// resumed run's rate and ETA are of its own steps.
			p.bar = progressbar.NewOptions(total-p.first, progressbar.OptionSetWriter(p.w),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("step"),
				progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true))
		}
	}
	p.steps = step - p.first
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("step %d/%d loss %.4f", step, total, loss))
		p.bar.Set(p.steps)
	}
}

// logf prints a note on a line of its own, clearing the bar first; the
// bar draws itself again at the next step.
func (p *trainProgress) logf(format string, args ...any) {
	if p.bar != nil {
		p.bar.Clear()
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *trainProgress) finish() {
	if p.bar != nil {
		p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}

// trainEncoders loads the image encoder the lcp conditioner feeds the
// subjects' dynamic views to: the --image-encoder folder, or the model
// folder's image_encoder/. The other conditioners do without, but a fresh
// adapter's resampler is still sized to it when there is one, so that
// later stages can train on the adapter.
func trainEncoders(dir, modelPath string, required bool, m *pipeline.Model) (pipeline.Encoders, error) {
	if dir == "" {
		dir = filepath.Join(modelPath, "image_encoder")
		if _, err := os.Stat(dir); err != nil {
			if !required {
				return pipeline.Encoders{}, nil
			}
			return pipeline.Encoders{}, fmt.Errorf("the lcp conditioner needs an image encoder: give --image-encoder (none in %s)", modelPath)
		}
	}
	proc, err := imageProcessor(dir)
	if err != nil {
		return pipeline.Encoders{}, err
	}
	vision, err := clip.LoadVisionEncoder(dir, m.Options)
	if err != nil {
		return pipeline.Encoders{}, fmt.Errorf("image encoder %s: %w", dir, err)
	}
	return pipeline.Encoders{Vision: vision, Processor: proc}, nil
}

// freshResampler sizes the resampler of an adapter trained from scratch:
// IP-Adapter Plus SD 1.5's, over the image encoder's width when one is
// loaded, with the fields the configuration sets replaced.
func freshResampler(s train.ResamplerSize, enc pipeline.Encoders, m *pipeline.Model) ipadapter.ResamplerConfig {
	r := lcp.DefaultResampler(m.UNet.Config.CrossAttentionDim)
	if enc.Vision != nil {
		r.EmbeddingDim = enc.Vision.Config.HiddenSize
	}
	for _, f := range []struct {
		dst *int64
		v   int64
	}{
		{&r.Dim, s.Dim}, {&r.Heads, s.Heads}, {&r.DimHead, s.DimHead}, {&r.NumQueries, s.Queries}, {&r.FFMult, s.FFMult},
	} {
		if f.v > 0 {
			*f.dst = f.v
		}
	}
	if s.Depth > 0 {
		r.Depth = s.Depth
	}
	return r
}

// printHeldOutLoss measures and prints --eval-loss.
func printHeldOutLoss(w io.Writer, cfg train.Config, m *pipeline.Model, a *lcp.Adapter, data train.Batches, cond train.Conditioner, n int, manifest string) error {
	r, err := train.MeasureHeldOut(cfg, m, a, data, cond, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "held-out loss %.5f over %d batches of %d from %s", r.Loss, r.Batches, cfg.BatchSize, manifest)
	if !math.IsNaN(r.Subjects) {
		fmt.Fprintf(w, "; on the subjects' latent cells %.5f (%.1f%% of the cells)", r.Subjects, 100*r.SubjectShare)
	}
	fmt.Fprintln(w)
	return nil
}
