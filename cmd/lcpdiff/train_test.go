package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
	"github.com/lcpdiff/lcpdiff/internal/train"
)

// toyManifest writes a toy world of 12 training records at 64 px and
// returns its training manifest.
func toyManifest(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "toy")
	if _, err := data.WriteToyWorld(dir, data.ToyWorldConfig{Seed: 2, Clips: 8, Images: 4, Size: 64, Frames: 3}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "train.jsonl")
}

// writeConfig writes a YAML config of the given lines.
func writeConfig(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "train.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTrainAndResume(t *testing.T) {
	defer torch.SetNumThreads(torch.NumThreads())
	manifest := toyManifest(t)
	out := filepath.Join(t.TempDir(), "run")
	cfg := writeConfig(t,
		"steps: 3", "batch_size: 2", "resolution: 64", "lr: 1.0e-4", "log_every: 1",
		"checkpoint_every: 0", "conditioner: grounding", `trainable: ["position_net.*", "*fuser*"]`,
		"out_dir: "+out, "data: "+manifest) // a flag's key beside the training keys
	model := golden.Path(t, "tiny-sd")

	// One libtorch thread: the tiny model gains nothing from more, and
	// OpenMP's barriers make steps erratic on a shared machine.
	stdout, err := run(t, "--threads", "1", "--config", cfg, "train", "-m", model, "-q")
	if err != nil {
		t.Fatalf("train: %v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "trained to step 3") {
		t.Errorf("output:\n%s", stdout)
	}
	for _, path := range []string{train.CheckpointDir(out, 3), filepath.Join(out, train.LogFile)} {
		if _, err := os.Stat(path); err != nil {
			t.Fatal(err)
		}
	}

	stdout, err = run(t, "--threads", "1", "--config", cfg, "train", "-m", model, "-q", "--resume", "latest", "--steps", "5")
	if err != nil {
		t.Fatalf("resume: %v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "resumed from "+train.CheckpointDir(out, 3)) || !strings.Contains(stdout, "trained to step 5 (2 steps") {
		t.Errorf("resume output:\n%s", stdout)
	}
	rows, err := train.ReadLog(filepath.Join(out, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || rows[4].Step != 5 {
		t.Fatalf("log rows %+v, want steps 1 to 5", rows)
	}
	if _, err := os.Stat(train.CheckpointDir(out, 5)); err != nil {
		t.Fatal(err)
	}
}

func TestTrainErrors(t *testing.T) {
	manifest := toyManifest(t)
	model := golden.Path(t, "tiny-sd")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--config", writeConfig(t, "lrr: 1e-4"), "train", "-m", model, "--data", manifest}, `unknown key "lrr"`},
		{"flag for a training key", []string{"--config", writeConfig(t, "out: x"), "train", "-m", model, "--data", manifest}, `unknown key "out"`},
		{"negative lr", []string{"--config", writeConfig(t, "lr: -1"), "train", "-m", model, "--data", manifest}, "lr must be positive"},
		{"negative lr flag", []string{"train", "-m", model, "--data", manifest, "--lr", "-1"}, "lr must be positive"},
		{"bad value", []string{"--config", writeConfig(t, "steps: many"), "train", "-m", model, "--data", manifest}, "'steps'"},
		{"short betas", []string{"--config", writeConfig(t, "betas: [0.9]"), "train", "-m", model, "--data", manifest}, "betas"},
		{"missing manifest", []string{"train", "-m", model, "--data", "/nonexistent/train.jsonl"}, "/nonexistent/train.jsonl"},
		{"no manifest", []string{"train", "-m", model}, "--data"},
		{"no model", []string{"train", "--data", manifest}, "--model"},
		{"two adapters", []string{"train", "-m", model, "--data", manifest, "--adapter", "a", "--gligen", "g"}, "not both"},
		// The shipped config reads; the missing manifest is what fails.
		{"shipped config", []string{"--config", "../../configs/toyworld-tiny.yaml", "train", "-m", model, "--data", "/nonexistent/m.jsonl"}, "/nonexistent/m.jsonl"},
	} {
		_, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line with %q", c.name, err, c.want)
		}
	}
}

// An error message must hold the file's name so that the user knows which
// of the files to fix.
func TestTrainConfigErrorNamesFile(t *testing.T) {
	cfg := writeConfig(t, "batch_sise: 2")
	_, err := run(t, "--config", cfg, "train", "-m", "m", "--data", "d")
	if err == nil || !strings.Contains(err.Error(), cfg) {
		t.Fatalf("got %v, want the config's path in it", err)
	}
	if want := fmt.Sprintf("config %s: unknown key", cfg); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q, want it to start with %q", err, want)
	}
}
