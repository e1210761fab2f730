package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/eval"
	"github.com/lcpdiff/lcpdiff/internal/model/dino"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// evalOwnFlags are eval's own flags; the generation flags are generate's
// rows, picked by name (evalGenerationFlags), so each is declared once.
var evalOwnFlags = []flagSpec{
	{"bench", "", "dreambench", "benchmark: dreambench, dreambench-multi or toyworld"},
	{"data", "", "", "the benchmark's folder (DreamBench: the dataset, with prompts_and_classes.txt)"},
	{"out", "", "", "run folder: images, records.jsonl, summary.json/.md, subjects.md, contact sheets; an unfinished run there resumes"},
	{"images-per-prompt", "", eval.DefaultImagesPerPrompt, "images per (subject, prompt)"},
	{"limit", "", 0, "only the first N images of the benchmark (0: all), for a quick run"},
	{"seed", "s", 0, "base seed: image k of every prompt uses seed + k, the same noise for every method compared"},
	{"views", "", 1, "reference photos of each subject given to the generator (the metrics compare with all)"},
	{"method", "", "", "the run's row label in --compare (default: from the weights: base, IP-Adapter, LCP, ...)"},
	{"clip", "", "", "CLIP model folder (transformers CLIPModel, e.g. openai/clip-vit-base-patch32) for CLIP-I and CLIP-T"},
	{"dino", "", "", "DINO ViT checkpoint (.safetensors under dino_vits16's key names) for DINO"},
	{"dino-heads", "", 0, "attention heads of the DINO ViT (0: width / 64, right for the published ones)"},
	{"detector", "", "", "TorchScript detector (spec/detector.md, with FILE.json beside it) for AP, AP50, AP75"},
	{"class-map", "", "", "JSON file {subject or class: [detector classes]} overriding the built-in class map"},
	{"vae-round-trip", "", false, "score the benchmark's own target images (toyworld) through the model's VAE instead of generating: the ceiling of any generator decoding with it"},
	{"rescore", "", false, "measure the images already recorded in --out again from their PNGs (after the detector or a metric model changed), then make any missing ones"},
	{"compare", "", false, "print the runs in the folders given as arguments as one Markdown table, with each run's image-by-image differences from the first, and exit; DIR,DIR,... pools one method's runs on several data sets"},
}

// evalGenerationFlags are the flags of generate that shape an eval run's
// images; the prompt, seed, subjects and outputs come from the benchmark.
var evalGenerationFlags = []string{
	"model", "negative-prompt", "steps", "cfg-scale", "guidance-rescale", "eta", "width", "height", "device", "dtype",
	"clip-skip", "tokenizer", "quiet", "adapter", "ip-adapter", "image-encoder", "gligen",
	"ip-scale", "static-scale", "grounding-tau", "guidance-eta", "guidance-steps", "no-guidance", "region-restrict",
}

// pickFlags are the rows of specs with the given names, in that order.
func pickFlags(specs []flagSpec, names []string) []flagSpec {
	out := make([]flagSpec, len(names))
	for i, name := range names {
		k := slices.IndexFunc(specs, func(s flagSpec) bool { return s.name == name })
		if k < 0 {
			panic("no flag --" + name + " to pick")
		}
		out[i] = specs[k]
	}
	return out
}

func newEvalCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval [--compare RUN[,RUN...]...]",
		Short: "Generate a benchmark (DreamBench, multi-subject, toy world) and score it: CLIP-I, DINO, CLIP-T, box AP",
		Long: "eval generates every image of a benchmark with the generation flags of generate, measures each " +
			"as it is made (one record per image in OUT/records.jsonl; a rerun resumes an interrupted run) and " +
			"writes OUT/summary.json, summary.md, subjects.md and contact sheets. --compare RUN... prints " +
			"several runs as one table.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if v.GetBool("compare") {
				table, err := eval.Compare(args)
				if err != nil {
					return err
				}
				fmt.Fprint(cmd.OutOrStdout(), table)
				return nil
			}
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q (run folders go with --compare)", args)
			}
			if err := useModelDefaults(cmd, v, true); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runEval(ctx, v, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addFlags(cmd, false, evalOwnFlags)
	addFlags(cmd, false, pickFlags(generateFlags, evalGenerationFlags))
	return cmd
}

// runEval checks the flags, loads the metric models (the generator loads
// the diffusion model when it first has an image to make) and runs.
func runEval(ctx context.Context, v *viper.Viper, stdout, stderr io.Writer) error {
	out := v.GetString("out")
	if out == "" {
		return errors.New("no run folder: give --out DIR")
	}
	switch {
	case v.GetInt64("seed") < 0:
		return fmt.Errorf("--seed %d: must be 0 or more", v.GetInt64("seed"))
	case v.GetInt("limit") < 0:
		return fmt.Errorf("--limit %d: must be 0 (all) or more", v.GetInt("limit"))
	case v.GetInt("images-per-prompt") < 1:
		return fmt.Errorf("--images-per-prompt %d: must be 1 or more", v.GetInt("images-per-prompt"))
	case v.GetInt("views") < 1:
		return fmt.Errorf("--views %d: must be 1 or more", v.GetInt("views"))
	}
	bench, err := eval.OpenBench(v.GetString("bench"), eval.BenchOptions{
		Data: v.GetString("data"), ImagesPerPrompt: v.GetInt("images-per-prompt"),
		BaseSeed: uint64(v.GetInt64("seed")), Limit: v.GetInt("limit"), Views: v.GetInt("views"),
	})
	if err != nil {
		return err
	}
	if items := bench.Items(); v.GetBool("vae-round-trip") && len(items) > 0 && items[0].Target == "" {
		return fmt.Errorf("--vae-round-trip: bench %s has no target images (toyworld has)", bench.Name())
	}
	gen, err := newEvalGenerator(v, stderr)
	if err != nil {
		return err
	}
	defer gen.Free()
	models, override, err := loadMetricModels(v, gen.opts.Device)
	if err != nil {
		return err
	}
	defer models.Close()
	settings, err := evalSettings(v)
	if err != nil {
		return err
	}
	method := v.GetString("method")
	if method == "" {
		method = gen.method()
	}

	var (
		bar      *progressbar.ProgressBar
		barStage string
	)
	finishBar := func() {
		if bar != nil {
			bar.Finish()
			fmt.Fprintln(stderr)
			bar = nil
		}
	}
	start, made := time.Now(), 0
	cfg := eval.RunConfig{
		Out: out, Bench: bench, Generator: gen, Method: method, Settings: settings, Models: models,
		ClassOverride: override, Log: stderr, Rescore: v.GetBool("rescore"),
		Progress: func(stage string, done, total int) {
			if stage == eval.StageImages {
				made = done
			}
			if v.GetBool("quiet") {
				return
			}
			if bar == nil || stage != barStage {
				finishBar()
				start, barStage = time.Now(), stage
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr),
					progressbar.OptionSetDescription(stage), progressbar.OptionShowCount(),
					progressbar.OptionShowIts(), progressbar.OptionSetItsString("img"),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true))
			}
			bar.Set(done)
		},
	}
	sum, err := eval.Run(ctx, cfg)
	finishBar()
	if err != nil {
		return err
	}
	if made > 0 {
		secs := time.Since(start).Seconds()
		fmt.Fprintf(stderr, "%d images in %.1f s (%.3g images/s)\n", made, secs, float64(made)/secs)
	}
	fmt.Fprintf(stderr, "wrote %s, %s, %s and %d contact sheet(s) in %s\n",
		eval.SummaryFile, eval.SummaryMarkdownFile, eval.SubjectsMarkdownFile, len(sum.ContactSheets), out)
	fmt.Fprint(stdout, eval.MarkdownTable([]*eval.Summary{sum}))
	for _, n := range sum.Notes {
		fmt.Fprintf(stdout, "- %s\n", n)
	}
	return nil
}

// loadMetricModels loads the models that were given, in float32 on the
// generation device, and the class map override (which needs the
// detector's classes).
func loadMetricModels(v *viper.Viper, device torch.Device) (m eval.Models, override map[string][]string, err error) {
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	opts := torch.Options{DType: torch.Float32, Device: device}
	if dir := v.GetString("clip"); dir != "" {
		if m.CLIP, err = eval.LoadCLIP(dir, opts); err != nil {
			return m, nil, fmt.Errorf("--clip: %w", err)
		}
	}
	if path := v.GetString("dino"); path != "" {
		if m.DINO, err = dino.Load(path, v.GetInt64("dino-heads"), opts); err != nil {
			return m, nil, fmt.Errorf("--dino: %w", err)
		}
	}
	if path := v.GetString("detector"); path != "" {
		if m.Detector, err = eval.LoadDetector(path, device); err != nil {
			return m, nil, fmt.Errorf("--detector: %w", err)
		}
	}
	if path := v.GetString("class-map"); path != "" {
		if m.Detector == nil {
			return m, nil, errors.New("--class-map maps subjects to a detector's classes: give --detector too")
		}
		if override, err = eval.LoadClassMapOverride(path, m.Detector.Config.Classes); err != nil {
			return m, nil, err
		}
	}
	return m, override, nil
}

// evalSettingKeys are the flags whose values shape a run's images or
// their measurements: a resumed run must have the same. --limit, --quiet,
// --method aside (the method is checked on its own), --class-map,
// --rescore and --threads are free: they change no record's image.
var evalSettingKeys = []string{
	"bench", "data", "images-per-prompt", "seed", "views", "clip", "dino", "dino-heads", "detector", "vae-round-trip",
	"model", "negative-prompt", "steps", "cfg-scale", "guidance-rescale", "eta", "width", "height", "device", "dtype",
	"clip-skip", "tokenizer", "adapter", "ip-adapter", "image-encoder", "gligen",
	"ip-scale", "static-scale", "grounding-tau", "guidance-eta", "guidance-steps", "no-guidance", "region-restrict",
}

// evalPathKeys are the settings that name files, recorded as absolute
// paths so that a resume from another folder matches.
var evalPathKeys = []string{"data", "clip", "dino", "detector", "model", "tokenizer", "adapter", "ip-adapter", "image-encoder", "gligen"}

func evalSettings(v *viper.Viper) (map[string]string, error) {
	s := map[string]string{}
	for _, k := range evalSettingKeys {
		val := fmt.Sprint(v.Get(k))
		if slices.Contains(evalPathKeys, k) && val != "" {
			abs, err := filepath.Abs(val)
			if err != nil {
				return nil, fmt.Errorf("--%s: %w", k, err)
			}
			val = abs
		}
		s[k] = val
	}
	return s, nil
}

// methodLabel names what generated the images, for the tables: "base"
// (plain text-to-image), the public parts, or LCP, and the switches that
// change the method.
func methodLabel(w weightSpec, guidance, regionRestrict bool) string {
	var label string
	switch {
	case w.adapter != "":
		label = "LCP"
	case w.ipAdapter != "" && w.gligen != "":
		label = "IP-Adapter + GLIGEN"
	case w.ipAdapter != "":
		label = "IP-Adapter"
	case w.gligen != "":
		label = "GLIGEN"
	default:
		return "base"
	}
	if guidance && w.adapter == "" {
		label += " + box guidance"
	} else if !guidance && w.adapter != "" {
		label += " without box guidance"
	}
	if !regionRestrict {
		label += " (no region restriction)"
	}
	return label
}
