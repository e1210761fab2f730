package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// tinyEncoders loads the tiny IP-Adapter's image encoder.
func tinyEncoders(t *testing.T, m *pipeline.Model) pipeline.Encoders {
	t.Helper()
	dir := golden.Path(t, "tiny-ip-adapter", "image_encoder")
	vision, err := clip.LoadVisionEncoder(dir, m.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vision.Free)
	proc, err := clip.LoadImageProcessorConfig(golden.Path(t, "tiny-ip-adapter", "feature_extractor", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.Encoders{Vision: vision, Processor: proc}
}

// lcpConfig trains the whole adapter and the UNet's output layer, one toy
// sample per micro-batch, with the LCP conditioner.
func lcpConfig(dir string, steps int) Config {
	c := tinyConfig(dir, steps, append([]string{UNetPrefix + "conv_out.*"}, AdapterTrainable...)...)
	c.BatchSize, c.GradAccum, c.ImageDropout = 1, 2, 0.2
	return c
}

// The LCP conditioner reaches every part of the adapter (static attention
// and projection, the resampler and dynamic attention, the layout
// module's image branch) and, when asked, the UNet; a resumed run of it,
// UNet weights included, is bit for bit the straight run.
func TestLCPConditionerTrainsEveryPartAndResumes(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	enc := tinyEncoders(t, m)
	manifest := toyManifest(t)
	space := trainableSpace(m, a)
	initial := snapshot(space)
	defer freeAll(initial)
	newData := func(cfg Config) *ManifestBatches {
		b, err := NewManifestBatches(manifest, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	newCond := func(cfg Config) *LCPConditioner {
		c, err := NewLCPConditioner(m, a, enc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	straightDir := t.TempDir()
	cfg := lcpConfig(straightDir, 4)
	if err := Run(context.Background(), nil, cfg, m, a, newData(cfg), newCond(cfg), Hooks{}); err != nil {
		t.Fatal(err)
	}
	if a.State.Subjects != nil || a.Grounding.Condition().Objs != nil {
		t.Error("the adapter is still conditioned after the run")
	}
	for _, prefix := range []string{"static.", "static_projection.", "image_proj.", "ip_adapter.", "position_net.linears_image.", UNetPrefix + "conv_out."} {
		moved := false
		for k, p := range space {
			if strings.HasPrefix(k, prefix) && !sameBits(p, initial[k]) {
				moved = true
			}
		}
		if !moved {
			t.Errorf("no parameter under %s trained", prefix)
		}
	}
	if _, err := os.Stat(filepath.Join(CheckpointDir(straightDir, 4), unetFile)); err != nil {
		t.Errorf("the checkpoint lacks the trained UNet: %v", err)
	}
	straight := snapshot(space)
	defer freeAll(straight)

	restore(space, initial)
	dir := t.TempDir()
	ctx, interrupt := context.WithCancelCause(context.Background())
	defer interrupt(nil)
	cfg = lcpConfig(dir, 4)
	err := Run(ctx, nil, cfg, m, a, newData(cfg), newCond(cfg), Hooks{
		Progress: func(step, total int, loss float64) {
			if step == 2 {
				interrupt(ErrInterrupted)
			}
		},
	})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run returned %v, want ErrInterrupted", err)
	}
	restore(space, initial) // as a new process would start
	cfg.Resume = "latest"
	if err := Run(context.Background(), nil, cfg, m, a, newData(cfg), newCond(cfg), Hooks{}); err != nil {
		t.Fatal(err)
	}
	for k, p := range space {
		if !sameBits(p, straight[k]) {
			t.Errorf("%s differs from the straight run's", k)
		}
	}
}

func TestLCPConditionerTakesOneSampleAMicroBatch(t *testing.T) {
	cfg := Defaults()
	cfg.BatchSize = 2
	_, err := NewLCPConditioner(nil, nil, pipeline.Encoders{}, cfg)
	if err == nil || !strings.Contains(err.Error(), "batch_size 1") {
		t.Errorf("batch_size 2: got %v", err)
	}
}
