package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// A checkpoint is a folder OutDir/checkpoints/step-NNNNNNNN holding
//
//	adapter.safetensors  every adapter parameter by its key (lcp.Load reads
//	                     it, so a checkpoint is also a model to generate with)
//	unet.safetensors     the UNet's weights by their diffusers keys, when
//	                     any of them trains (the toy world's recipe)
//	optimizer.bin        the AdamW state, libtorch's archive (torch.AdamW.State)
//	state.json           the step, the data position, the seed
//
// The optimizer state is a file of its own rather than safetensors
// metadata: it holds two moments per trainable weight, twice the size of
// the weights, far beyond what a JSON header should carry. All three are
// written into a hidden temporary folder that is renamed into place once
// complete, so a checkpoint folder is always whole.
const (
	checkpointsDir = "checkpoints"
	adapterFile    = "adapter.safetensors"
	unetFile       = "unet.safetensors"
	optimizerFile  = "optimizer.bin"
	stateFile      = "state.json"
	stepPrefix     = "step-"
)

// checkpointState is state.json.
type checkpointState struct {
	Step      int      `json:"step"`      // optimizer steps done
	Seconds   float64  `json:"seconds"`   // training wall time so far, for the log
	Trainable []string `json:"trainable"` // the optimizer's parameters, in its order
	Data      []byte   `json:"data"`      // Batches.State (base64 in JSON)
	// Seed keys every random draw with the step and the sample's index
	// (see Draws): with Step and Data it is the whole random state, the
	// same on every rank. Checkpoints from before that scheme lack it and
	// held a generator's state instead, which is ignored.
	Seed *uint64 `json:"seed,omitempty"`
	// LossScale is the float16 loss scaler's state.
	LossScale *lossScaler `json:"loss_scale,omitempty"`
}

// CheckpointDir is the folder of the checkpoint after step.
func CheckpointDir(outDir string, step int) string {
	return filepath.Join(outDir, checkpointsDir, fmt.Sprintf("%s%08d", stepPrefix, step))
}

// errNoCheckpoint is LatestCheckpoint's error when outDir holds none.
var errNoCheckpoint = errors.New("no checkpoint")

// LatestCheckpoint is the checkpoint with the most steps under outDir.
func LatestCheckpoint(outDir string) (string, error) {
	root := filepath.Join(outDir, checkpointsDir)
	names, err := checkpointNames(root)
	if err != nil {
		return "", err
	}
	if len(names) == 0 {
		return "", fmt.Errorf("train: %w in %s", errNoCheckpoint, root)
	}
	return filepath.Join(root, names[len(names)-1]), nil
}

// checkpointNames are the finished checkpoints' folder names under root,
// in step order (the zero-padded step makes name order step order); an
// unfinished one, a temporary folder, is not among them.
func checkpointNames(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("train: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), stepPrefix) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// pruneCheckpoints removes the oldest checkpoints before dir, the one just
// written, so that at most limit are left of dir and those before it.
// Checkpoints after dir, left by a run that this one resumed from an
// earlier step, are left alone: this run writes them again on its way.
func pruneCheckpoints(dir string, limit int) error {
	if limit == 0 {
		return nil
	}
	root := filepath.Dir(dir)
	names, err := checkpointNames(root)
	if err != nil {
		return err
	}
	i := slices.Index(names, filepath.Base(dir))
	if i < 0 {
		return fmt.Errorf("train: checkpoints_total_limit: %s is not a checkpoint folder", dir)
	}
	before := names[:i]
	for len(before) > limit-1 {
		if err := os.RemoveAll(filepath.Join(root, before[0])); err != nil {
			return fmt.Errorf("train: checkpoints_total_limit: %w", err)
		}
		before = before[1:]
	}
	return nil
}

// saveCheckpoint writes the checkpoint of the current step.
func (t *trainer) saveCheckpoint() (dir string, err error) {
	dir = CheckpointDir(t.cfg.OutDir, t.step)
	root := filepath.Dir(dir)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp) // what is left of it after the rename, or after a failure
	if err := t.writeCheckpoint(tmp); err != nil {
		return "", fmt.Errorf("train: checkpoint %s: %w", dir, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	// A run resumed from an earlier checkpoint writes the later ones again:
	// the new folder replaces the old.
	old := tmp + ".old"
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.Rename(old, dir) // put the old one back under its name
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	os.RemoveAll(old)
	if err := atomicfile.SyncDir(root); err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	t.checkpointed = t.step
	return dir, pruneCheckpoints(dir, t.cfg.CheckpointsTotalLimit)
}

func (t *trainer) writeCheckpoint(dir string) error {
	if err := t.saveAdapter(filepath.Join(dir, adapterFile)); err != nil {
		return err
	}
	if t.trains(UNetPrefix) {
		if err := torch.SaveSafetensors(filepath.Join(dir, unetFile), t.model.UNet.Params(), map[string]string{"format": "pt"}); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, optimizerFile), t.opt.State()); err != nil {
		return err
	}
	data, err := t.data.State()
	if err != nil {
		return fmt.Errorf("data position: %w", err)
	}
	seed := t.cfg.Seed
	st := checkpointState{Step: t.step, Seconds: t.seconds(), Trainable: t.train.keys, Data: data, Seed: &seed, LossScale: t.scaler}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, stateFile), b); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// saveAdapter writes the adapter with metadata that says what training
// made of it; the adapter in memory keeps its own.
func (t *trainer) saveAdapter(path string) error {
	a := t.adapter
	meta := a.Meta
	defer func() { a.Meta = meta }()
	a.Meta.Step, a.Meta.Source = t.step, "trained"
	// Generation uses the layout module's image branch only once it has
	// learnt to read the static projection: both must have trained.
	a.Meta.ImageTrained = meta.ImageTrained || t.trains("static_projection.") && t.trains("position_net.linears_image.")
	return a.Save(path)
}

// trains reports whether a trainable parameter's key starts with prefix.
func (t *trainer) trains(prefix string) bool {
	return slices.ContainsFunc(t.train.keys, func(k string) bool { return strings.HasPrefix(k, prefix) })
}

// loadCheckpoint puts the run back where the checkpoint in dir left it:
// every adapter parameter, the optimizer, the data source and the step.
// The random draws follow from the seed, the step and the data position.
func (t *trainer) loadCheckpoint(dir string) (checkpointState, error) {
	var st checkpointState
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, fmt.Errorf("train: resume: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("train: resume %s: %w", dir, err)
	}
	if !slices.Equal(st.Trainable, t.train.keys) {
		return st, fmt.Errorf("train: resume %s: it trained %d parameters, this run trains %d other ones: keep trainable as it was", dir, len(st.Trainable), len(t.train.keys))
	}
	switch {
	case st.Seed == nil:
		t.logf("%s is from before per-sample random draws: the noise and dropout from here on follow seed %d", dir, t.cfg.Seed)
	case *st.Seed != t.cfg.Seed:
		return st, fmt.Errorf("train: resume %s: it was trained with seed %d, this run has seed %d: keep the seed as it was", dir, *st.Seed, t.cfg.Seed)
	}
	if err := loadParams(filepath.Join(dir, adapterFile), t.adapter.Params(), "the adapter"); err != nil {
		return st, fmt.Errorf("train: resume %s: %w", dir, err)
	}
	if t.trains(UNetPrefix) {
		if err := loadParams(filepath.Join(dir, unetFile), t.model.UNet.Params(), "the UNet"); err != nil {
			return st, fmt.Errorf("train: resume %s: %w", dir, err)
		}
	}
	opt, err := os.ReadFile(filepath.Join(dir, optimizerFile))
	if err != nil {
		return st, fmt.Errorf("train: resume: %w", err)
	}
	if err := t.opt.LoadState(opt); err != nil {
		return st, fmt.Errorf("train: resume %s: optimizer: %w", dir, err)
	}
	if err := t.data.Restore(st.Data); err != nil {
		return st, fmt.Errorf("train: resume %s: data position: %w", dir, err)
	}
	if t.scaler != nil && st.LossScale != nil {
		*t.scaler = *st.LossScale
	}
	t.step, t.checkpointed = st.Step, st.Step
	return st, nil
}

// loadParams copies every parameter of named (the adapter's or the
// UNet's) from the checkpoint file into the live tensors, which the
// optimizer holds; frozen ones too, as those an initialiser drew at random
// must match as well.
func loadParams(path string, named map[string]*torch.Tensor, what string) error {
	f, err := torch.OpenSafetensors(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if n := len(f.Header.Tensors); n != len(named) {
		return fmt.Errorf("%s holds %d tensors, %s has %d parameters", path, n, what, len(named))
	}
	for key, p := range named {
		src, err := f.Tensor(key)
		if err != nil {
			return err
		}
		if got, want := src.Shape(), p.Shape(); !slices.Equal(got, want) {
			src.Free()
			return fmt.Errorf("%s is %v in the checkpoint, %v in %s", key, got, want, what)
		}
		err = torch.Try(func() { torch.NoGrad(func() { p.CopyFrom(src) }) })
		src.Free()
		if err != nil {
			return err
		}
	}
	return nil
}
