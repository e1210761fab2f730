package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

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
		"steps: 3", "batch_size: 2", "grad_accum: 1", "resolution: 64", "lr: 1.0e-4", "log_every: 1",
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

// --eval-loss trains nothing and writes nothing: it prints the objective
// on fixed draws, the same on every run, and its subject part (the toy
// manifest has masks).
func TestTrainEvalLoss(t *testing.T) {
	defer torch.SetNumThreads(torch.NumThreads())
	manifest := toyManifest(t)
	out := filepath.Join(t.TempDir(), "run")
	config := func(textDropout string) string {
		return writeConfig(t,
			"batch_size: 2", "resolution: 64", "conditioner: grounding", `trainable: ["position_net.*", "*fuser*"]`,
			"text_dropout: "+textDropout, "out_dir: "+out, "data: "+manifest)
	}
	model := golden.Path(t, "tiny-sd")
	var outputs []string
	// The dropout of the configuration does not apply: every condition
	// is present.
	for _, cfg := range []string{config("0.5"), config("0.5"), config("0")} {
		stdout, err := run(t, "--threads", "1", "--config", cfg, "train", "-m", model, "-q", "--eval-loss", "2")
		if err != nil {
			t.Fatalf("train --eval-loss: %v\n%s", err, stdout)
		}
		outputs = append(outputs, stdout)
	}
	t.Log(outputs[0])
	if !strings.Contains(outputs[0], "held-out loss ") || !strings.Contains(outputs[0], "over 2 batches of 2") ||
		!strings.Contains(outputs[0], "on the subjects' latent cells ") {
		t.Errorf("output:\n%s", outputs[0])
	}
	for i, o := range outputs[1:] {
		if o != outputs[0] {
			t.Errorf("measurement %d:\n%s\nthe first:\n%s", i+2, o, outputs[0])
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--eval-loss wrote %s (%v)", out, err)
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
		{"negative eval-loss", []string{"train", "-m", model, "--data", manifest, "--eval-loss", "-2"}, "--eval-loss -2"},
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

// TestTrainHelpNamesEveryKey holds the help's list of training keys to
// the ones the config loader accepts: a hand-written list once lacked
// phrase_dropout.
func TestTrainHelpNamesEveryKey(t *testing.T) {
	out, err := run(t, "train", "--help")
	if err != nil {
		t.Fatal(err)
	}
	help := strings.Join(strings.Fields(out), " ")
	if want := "the training keys (" + strings.Join(train.ConfigKeys(), ", ") + ")"; !strings.Contains(help, want) {
		t.Fatalf("train --help lacks %q:\n%s", want, out)
	}
	for line := range strings.Lines(newTrainCommand(viper.New()).Long) {
		if len(strings.TrimRight(line, "\n")) > 80 {
			t.Errorf("help line over 80 columns: %q", line)
		}
	}
}

func TestFill(t *testing.T) {
	for _, c := range []struct {
		text  string
		width int
		want  string
	}{
		{"a bb ccc", 4, "a bb\nccc"},
		{"a bb ccc", 8, "a bb ccc"},
		{" a  bb\nccc ", 5, "a bb\nccc"},
		{"toolong a", 3, "toolong\na"},
		{"", 10, ""},
	} {
		if got := fill(c.text, c.width); got != c.want {
			t.Errorf("fill(%q, %d) = %q, want %q", c.text, c.width, got, c.want)
		}
	}
}

// trainRankEnv makes this test binary one rank of TestTrainDataParallel's
// job, as torchrun would start lcpdiff: it holds the rank's trainRank.
const trainRankEnv = "LCPDIFF_TRAIN_RANK"

type trainRank struct {
	Args []string // lcpdiff's arguments
	Out  string   // where the rank writes what lcpdiff printed
}

// TestTrainRankHelper is a rank of TestTrainDataParallel; it does nothing
// in a plain test run.
func TestTrainRankHelper(t *testing.T) {
	spec := os.Getenv(trainRankEnv)
	if spec == "" {
		return
	}
	var job trainRank
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, job.Args...)
	if err != nil {
		out += "error: " + err.Error()
	}
	if err := os.WriteFile(job.Out, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Two processes given torchrun's variables train as one job over Gloo:
// rank 0 says so, reports and writes; rank 1 prints nothing.
func TestTrainDataParallel(t *testing.T) {
	manifest := toyManifest(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "run")
	cfg := writeConfig(t,
		"steps: 2", "batch_size: 1", "grad_accum: 1", "resolution: 64", "lr: 1.0e-4", "log_every: 1",
		"checkpoint_every: 0", "conditioner: grounding", `trainable: ["position_net.*", "*fuser*"]`,
		"out_dir: "+out, "data: "+manifest)
	args := []string{"--threads", "1", "--config", cfg, "train", "-m", golden.Path(t, "tiny-sd"), "-q"}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const world = 2
	cmds, logs := make([]*exec.Cmd, world), make([]bytes.Buffer, world)
	for r := range world {
		spec, _ := json.Marshal(trainRank{Args: args, Out: filepath.Join(dir, fmt.Sprintf("out-%d.txt", r))})
		c := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTrainRankHelper$", "-test.timeout=2m")
		c.Env = append(os.Environ(), trainRankEnv+"="+string(spec),
			"RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(world),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port),
			"LCPDIFF_DIST_BACKEND=", // lcpdiff picks Gloo for the CPU
			"LCPDIFF_DIST_TIMEOUT=60s", "OMP_NUM_THREADS=1")
		c.Stdout, c.Stderr = &logs[r], &logs[r]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[r] = c
	}
	printed := make([]string, world)
	for r, c := range cmds {
		err := c.Wait()
		b, readErr := os.ReadFile(filepath.Join(dir, fmt.Sprintf("out-%d.txt", r)))
		if err != nil || readErr != nil {
			cancel()
			t.Fatalf("rank %d: %v (%v); output:\n%s", r, err, readErr, logs[r].String())
		}
		printed[r] = string(b)
	}
	for _, want := range []string{"data-parallel training: rank 0 of 2 (gloo", "2 samples a step (2 ranks of 1)", "trained to step 2"} {
		if !strings.Contains(printed[0], want) {
			t.Errorf("rank 0 did not print %q:\n%s", want, printed[0])
		}
	}
	if printed[1] != "" {
		t.Errorf("rank 1 printed:\n%s", printed[1])
	}
	rows, err := train.ReadLog(filepath.Join(out, train.LogFile))
	if err != nil || len(rows) != 2 {
		t.Fatalf("log: %d rows, %v", len(rows), err)
	}
	if _, err := os.Stat(train.CheckpointDir(out, 2)); err != nil {
		t.Error(err)
	}
}

// TestTrainConfigsInRepo reads every training config under configs/: a key
// misspelt in one (an unknown key is an error) would otherwise surface only
// hours into scripts/train-toyworld.sh. Each gets as far as the data
// manifest, which does not exist.
func TestTrainConfigsInRepo(t *testing.T) {
	paths, err := filepath.Glob("../../configs/toyworld-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	read := 0
	for _, path := range paths {
		if filepath.Base(path) == "toyworld-model.yaml" { // model init's, not train's
			continue
		}
		read++
		missing := filepath.Join(t.TempDir(), "train.jsonl")
		_, err := run(t, "--config", path, "train", "-m", t.TempDir(), "--data", missing, "--out", t.TempDir())
		if err == nil || strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), missing) {
			t.Errorf("%s: got %v, want only the missing manifest's error", path, err)
		}
	}
	if read < 6 {
		t.Errorf("read %d training configs, want the toy world's stages (tiny, base, lcp, polish...)", read)
	}
}
