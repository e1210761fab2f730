package train

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TestResumeIsBitExact runs 4 steps straight, then 2 steps stopped as
// Ctrl-C stops them and 2 more resumed from the checkpoint, and wants the
// same weights to the bit and the same log. Gradient accumulation,
// clipping and text dropout are all on, so that every piece of state a
// checkpoint carries matters; both runs checkpoint every step and keep
// the newest two (checkpoints_total_limit).
func TestResumeIsBitExact(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	cond := newTestConditioner(t, m, a, 0.3)
	initial := snapshot(a.Params())
	defer freeAll(initial)
	config := func(dir string) Config {
		c := tinyConfig(dir, 4, AdapterTrainable...)
		c.GradAccum = 2
		c.ClipGradNorm = 0.05                             // below the norms the tiny model sees: clipping acts
		c.LRScheduler, c.LRWarmupSteps = "cosine", 1      // the resumed run must pick up the curve
		c.CheckpointEvery, c.CheckpointsTotalLimit = 1, 2 // pruning must leave the resume its checkpoint
		return c
	}

	// The straight run asks for "latest" too: with no checkpoint yet it
	// starts afresh (as diffusers' --resume_from_checkpoint latest), so a
	// script can always pass it.
	straightDir := t.TempDir()
	straightCfg := config(straightDir)
	straightCfg.Resume = "latest"
	var said []string
	logf := func(format string, args ...any) { said = append(said, fmt.Sprintf(format, args...)) }
	if err := Run(context.Background(), nil, straightCfg, m, a, tinyData(0), cond, Hooks{Logf: logf}); err != nil {
		t.Fatal(err)
	}
	afresh := "no checkpoint in " + filepath.Join(straightDir, checkpointsDir) + ": starting afresh"
	if !slices.ContainsFunc(said, func(l string) bool { return strings.HasSuffix(l, afresh) }) {
		t.Errorf("a first run with resume latest said %q", said)
	}
	straight := snapshot(a.Params())
	defer freeAll(straight)

	restore(a.Params(), initial)
	dir := t.TempDir()
	ctx, interrupt := context.WithCancelCause(context.Background())
	defer interrupt(nil)
	err := Run(ctx, nil, config(dir), m, a, tinyData(0), cond, Hooks{
		Progress: func(step, total int, loss float64) {
			if step == 2 {
				interrupt(ErrInterrupted) // as OnInterrupt does at Ctrl-C
			}
		},
	})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run returned %v, want ErrInterrupted", err)
	}
	if latest, err := LatestCheckpoint(dir); err != nil || latest != CheckpointDir(dir, 2) {
		t.Fatalf("latest checkpoint after the interruption: %q, %v; want step 2", latest, err)
	}

	// A new process would rebuild the adapter from its parts: the resumed
	// run must bring every weight back itself.
	restore(a.Params(), initial)
	cfg := config(dir)
	cfg.Resume = "latest"
	var resumedSteps []int
	err = Run(context.Background(), nil, cfg, m, a, tinyData(0), cond, Hooks{
		Progress: func(step, total int, loss float64) { resumedSteps = append(resumedSteps, step) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resumedSteps) != 2 || resumedSteps[0] != 3 {
		t.Errorf("the resumed run made steps %v, want [3 4]", resumedSteps)
	}
	for k, p := range a.Params() {
		if !sameBits(p, straight[k]) {
			t.Errorf("%s differs from the straight run's", k)
		}
	}
	want, err := ReadLog(filepath.Join(straightDir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadLog(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("log has %d rows, the straight run's %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Step != w.Step || g.Loss != w.Loss || g.LR != w.LR || g.GradNorm != w.GradNorm {
			t.Errorf("log row %d: %+v, straight %+v", i, g, w)
		}
	}

	// Both runs keep their newest two checkpoints.
	for _, d := range []string{straightDir, dir} {
		if got, want := checkpointsIn(t, d), stepNames(3, 4); !slices.Equal(got, want) {
			t.Errorf("%s: checkpoints %v, want %v", d, got, want)
		}
	}

	cfg.Trainable = []string{"*fuser*"}
	if err := Run(context.Background(), nil, cfg, m, a, tinyData(0), cond, Hooks{}); err == nil || !strings.Contains(err.Error(), "trainable") {
		t.Errorf("resuming with other trainable parameters: %v", err)
	}
	if err := Run(context.Background(), nil, config(dir), m, a, tinyData(0), cond, Hooks{}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("a fresh run over an old one: %v", err)
	}
}

func TestLatestCheckpointOrdersBySteps(t *testing.T) {
	dir := t.TempDir()
	if _, err := LatestCheckpoint(dir); err == nil {
		t.Error("an empty folder has a latest checkpoint")
	}
	for _, step := range []int{9, 120, 40} {
		if err := os.MkdirAll(CheckpointDir(dir, step), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An unfinished checkpoint, left by a crash, is not one.
	if err := os.MkdirAll(filepath.Join(dir, checkpointsDir, ".step-00000500.tmp-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := LatestCheckpoint(dir); err != nil || got != CheckpointDir(dir, 120) {
		t.Errorf("latest = %q, %v; want step 120", got, err)
	}
}

// checkpointsIn names the finished checkpoints under outDir, oldest first.
func checkpointsIn(t *testing.T, outDir string) []string {
	t.Helper()
	names, err := checkpointNames(filepath.Join(outDir, checkpointsDir))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// stepNames are the folder names of the checkpoints of these steps.
func stepNames(steps ...int) []string {
	var names []string
	for _, s := range steps {
		names = append(names, filepath.Base(CheckpointDir("", s)))
	}
	return names
}

func TestPruneCheckpoints(t *testing.T) {
	dir := t.TempDir()
	for _, step := range []int{1, 2, 3, 4, 5, 6, 7} {
		if err := os.MkdirAll(CheckpointDir(dir, step), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := pruneCheckpoints(CheckpointDir(dir, 3), 0); err != nil || len(checkpointsIn(t, dir)) != 7 {
		t.Fatalf("limit 0 left %v (%v), want all 7", checkpointsIn(t, dir), err)
	}
	// A run resumed at step 2 has just written step 3 again: 4 to 7 are
	// the old run's, which it will write again, and stay.
	if err := pruneCheckpoints(CheckpointDir(dir, 3), 2); err != nil || !slices.Equal(checkpointsIn(t, dir), stepNames(2, 3, 4, 5, 6, 7)) {
		t.Fatalf("after step 3 with limit 2: %v (%v), want steps 2 to 7", checkpointsIn(t, dir), err)
	}
	if err := pruneCheckpoints(CheckpointDir(dir, 7), 1); err != nil || !slices.Equal(checkpointsIn(t, dir), stepNames(7)) {
		t.Fatalf("after step 7 with limit 1: %v (%v), want step 7", checkpointsIn(t, dir), err)
	}
	if err := pruneCheckpoints(CheckpointDir(dir, 8), 1); err == nil {
		t.Error("pruning around a checkpoint that is not there: no error")
	}
}
