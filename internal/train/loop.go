package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Hooks are Run's callbacks; each may be nil.
type Hooks struct {
	// Progress is called after every optimizer step with that step's loss
	// (the CLI's progress bar).
	Progress func(step, total int, loss float64)
	// Sample is called every SampleEvery steps, with autograd off and the
	// adapter unconditioned, to render sample images; an error ends the run.
	Sample func(step int) error
	// Logf receives one-line notes: what trains, resumes, checkpoints.
	Logf func(format string, args ...any)
}

// Run trains the parameters of adapter a (attached to m.UNet) that
// cfg.Trainable names, everything else frozen, on batches from data
// conditioned by cond, until cfg.Steps optimizer steps are done. It logs
// to cfg.OutDir and checkpoints there every cfg.CheckpointEvery steps and
// at the end.
//
// Cancelling ctx (see OnInterrupt) stops the run after the step under way
// with a checkpoint; the error then wraps context.Cause(ctx). When Run
// returns, every parameter's requires_grad is as it found it and no
// gradient is left behind.
func Run(ctx context.Context, cfg Config, m *pipeline.Model, a *lcp.Adapter, data Batches, cond Conditioner, hooks Hooks) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := m.Scheduler.Validate(); err != nil {
		return fmt.Errorf("train: scheduler: %w", err)
	}
	defer torch.Recover(&err)
	t, err := newTrainer(cfg, m, a, data, cond, hooks)
	if err != nil {
		return err
	}
	defer t.close()
	torch.WithGrad(func() { err = t.run(ctx) })
	return err
}

// trainer is one run's state between steps.
type trainer struct {
	cfg     Config
	model   *pipeline.Model
	adapter *lcp.Adapter
	data    Batches
	cond    Conditioner
	hooks   Hooks

	train       trainable
	restoreGrad func()
	opt         *torch.AdamW
	gen         *torch.Generator // noise, timesteps, dropout
	ddpm        *pipeline.DDPM
	velocity    bool // the model predicts v, not epsilon
	log         *lossLog

	step         int       // optimizer steps done
	checkpointed int       // step of the newest checkpoint on disk, -1 for none
	priorSeconds float64   // training time before this process
	started      time.Time // when this process started training
}

func newTrainer(cfg Config, m *pipeline.Model, a *lcp.Adapter, data Batches, cond Conditioner, hooks Hooks) (_ *trainer, err error) {
	t := &trainer{cfg: cfg, model: m, adapter: a, data: data, cond: cond, hooks: hooks, checkpointed: -1}
	switch m.Scheduler.PredictionType {
	case "", "epsilon":
	case "v_prediction":
		t.velocity = true
	default:
		return nil, fmt.Errorf("train: the model predicts %q; training knows epsilon and v_prediction", m.Scheduler.PredictionType)
	}
	named := trainableSpace(m, a)
	if t.train, err = selectTrainable(named, cfg.Trainable); err != nil {
		return nil, err
	}
	if t.trains("static_projection.") && t.trains("position_net.linears_image.") {
		// The layout module's image tokens must flow for their branch and
		// the static projection to learn.
		a.Layout.ImageTrained = true
	}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	defer torch.Recover(&err) // first, so that a panic below closes t too
	t.restoreGrad = setRequiresGrad(named, t.train)
	t.opt = torch.NewAdamW(t.train.params, torch.AdamWOptions{
		LR: cfg.LR, Beta1: cfg.Betas[0], Beta2: cfg.Betas[1], Eps: 1e-8, WeightDecay: cfg.WeightDecay,
	})
	t.gen = torch.NewGenerator(cfg.Seed)
	t.ddpm = pipeline.NewDDPM(m.Scheduler)

	resumed, err := t.resumeOrStart()
	if err != nil {
		return nil, err
	}
	// The configuration, not the checkpoint, sets the learning rate: a
	// resumed run may change it.
	t.opt.SetLR(cfg.LR)
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if t.log, err = openLog(cfg.OutDir, t.step, resumed); err != nil {
		return nil, err
	}
	t.logf("training %d parameters (%d tensors), %d samples a step", t.train.count(), len(t.train.params), cfg.SamplesPerStep())
	return t, nil
}

// resumeOrStart loads the checkpoint cfg.Resume names, or, starting
// afresh, makes sure the run would not write over an older one.
func (t *trainer) resumeOrStart() (resumed bool, err error) {
	dir := t.cfg.Resume
	if dir == "" {
		return false, checkFresh(t.cfg.OutDir)
	}
	if dir == "latest" {
		if dir, err = LatestCheckpoint(t.cfg.OutDir); err != nil {
			return false, err
		}
	}
	st, err := t.loadCheckpoint(dir)
	if err != nil {
		return false, err
	}
	t.priorSeconds = st.Seconds
	t.logf("resumed from %s at step %d", dir, t.step)
	return true, nil
}

// checkFresh refuses to start a new run over an old one's log and
// checkpoints.
func checkFresh(outDir string) error {
	for _, name := range []string{LogFile, checkpointsDir} {
		if _, err := os.Stat(filepath.Join(outDir, name)); err == nil {
			return fmt.Errorf("train: %s already holds a run (%s): resume it or choose another out_dir", outDir, name)
		}
	}
	return nil
}

func (t *trainer) close() {
	if t.log != nil {
		t.log.close()
	}
	if t.opt != nil {
		t.opt.Close()
	}
	if t.gen != nil {
		t.gen.Close()
	}
	if t.restoreGrad != nil {
		t.restoreGrad()
	}
}

func (t *trainer) logf(format string, args ...any) {
	if t.hooks.Logf != nil {
		t.hooks.Logf(format, args...)
	}
}

// seconds is the training wall time so far, across resumes.
func (t *trainer) seconds() float64 { return t.priorSeconds + time.Since(t.started).Seconds() }

// run steps until cfg.Steps, logging, sampling and checkpointing on the
// way.
func (t *trainer) run(ctx context.Context) error {
	cfg := t.cfg
	t.started = time.Now()
	w := window{start: t.started}
	for t.step < cfg.Steps {
		if ctx.Err() != nil {
			return t.stop(ctx)
		}
		loss, gradNorm, err := t.optimizerStep()
		if err != nil {
			return err
		}
		t.step++
		w.add(loss, gradNorm)
		if t.hooks.Progress != nil {
			t.hooks.Progress(t.step, cfg.Steps, loss)
		}
		last := t.step == cfg.Steps
		if t.step%cfg.LogEvery == 0 || last {
			if err := t.log.append(w.row(t)); err != nil {
				return err
			}
			w = window{start: time.Now()}
		}
		if cfg.SampleEvery > 0 && t.step%cfg.SampleEvery == 0 && t.hooks.Sample != nil {
			torch.NoGrad(func() { err = t.hooks.Sample(t.step) })
			if err != nil {
				return fmt.Errorf("train: samples at step %d: %w", t.step, err)
			}
		}
		if cfg.CheckpointEvery > 0 && t.step%cfg.CheckpointEvery == 0 || last {
			if err := t.checkpoint(); err != nil {
				return err
			}
		}
	}
	return nil
}

// window gathers the steps since the last log row.
type window struct {
	steps          int
	loss, gradNorm float64
	start          time.Time
}

func (w *window) add(loss, gradNorm float64) {
	w.steps++
	w.loss += loss
	w.gradNorm += gradNorm
}

// row is the log row of the window, which ends at t's step.
func (w *window) row(t *trainer) LogRow {
	n, elapsed := float64(w.steps), time.Since(w.start).Seconds()
	return LogRow{
		Step: t.step, Loss: w.loss / n, LR: t.cfg.LR, GradNorm: w.gradNorm / n, Seconds: t.seconds(),
		StepsPerSec: n / elapsed, SamplesPerSec: n * float64(t.cfg.SamplesPerStep()) / elapsed,
	}
}

// stop checkpoints the last finished step, unless that is on disk
// already, and reports why the run stopped.
func (t *trainer) stop(ctx context.Context) error {
	if t.checkpointed != t.step {
		if err := t.checkpoint(); err != nil {
			return fmt.Errorf("%w (stopping after step %d: %w)", err, t.step, context.Cause(ctx))
		}
	}
	return fmt.Errorf("train: stopped after step %d, checkpoint %s: %w", t.step, CheckpointDir(t.cfg.OutDir, t.step), context.Cause(ctx))
}

// checkpoint writes a checkpoint and the loss plot.
func (t *trainer) checkpoint() error {
	dir, err := t.saveCheckpoint()
	if err != nil {
		return err
	}
	if err := writePlot(filepath.Join(t.cfg.OutDir, PlotFile), t.log.rows); err != nil {
		return fmt.Errorf("train: plot: %w", err)
	}
	t.logf("step %d: checkpoint %s", t.step, dir)
	return nil
}

// optimizerStep accumulates the gradients of GradAccum micro-batches,
// clips their global norm and updates the trainable parameters. It
// returns the mean loss and the gradient norm before clipping.
func (t *trainer) optimizerStep() (loss, gradNorm float64, err error) {
	t.opt.ZeroGrad()
	for range t.cfg.GradAccum {
		l, err := t.microStep()
		if err != nil {
			return 0, 0, err
		}
		loss += l
	}
	gradNorm = clipGradNorm(t.train.params, t.cfg.ClipGradNorm)
	t.opt.Step()
	return loss / float64(t.cfg.GradAccum), gradNorm, nil
}

// microStep runs the objective on one batch and back-propagates it,
// scaled so that GradAccum micro-batches sum to their mean's gradient.
func (t *trainer) microStep() (float64, error) {
	s := torch.NewScope()
	defer s.Close()
	b, err := t.data.Next()
	if err != nil {
		return 0, fmt.Errorf("train: step %d: data: %w", t.step+1, err)
	}
	defer b.Free()
	if err := t.check(b); err != nil {
		return 0, fmt.Errorf("train: step %d: %w", t.step+1, err)
	}
	embeds, err := t.cond.Condition(b, t.gen)
	if err != nil {
		return 0, fmt.Errorf("train: step %d: conditioning: %w", t.step+1, err)
	}
	defer t.cond.Clear()
	loss := t.loss(b.Images, embeds)
	v := loss.Item()
	if math.IsNaN(v) || math.IsInf(v, 0) {
		// Stepping on it would spread the NaN into every trainable weight.
		return 0, fmt.Errorf("train: step %d: the loss is %g", t.step+1, v)
	}
	loss.DivScalar(float64(t.cfg.GradAccum)).Backward()
	return v, nil
}

// check validates a batch against the configuration.
func (t *trainer) check(b *Batch) error {
	r := int64(t.cfg.Resolution)
	if s := b.Images.Shape(); !slices.Equal(s, []int64{int64(t.cfg.BatchSize), 3, r, r}) {
		return fmt.Errorf("batch images are %v, want [%d 3 %d %d]", s, t.cfg.BatchSize, r, r)
	}
	if len(b.Captions) != t.cfg.BatchSize {
		return fmt.Errorf("batch has %d captions for %d images", len(b.Captions), t.cfg.BatchSize)
	}
	return nil
}

// loss is Eq. 1 on images [B, 3, H, W]: the mean squared error between the
// noise added at random timesteps and the UNet's prediction of it (or the
// velocity, for a v-prediction model).
func (t *trainer) loss(images, embeds *torch.Tensor) *torch.Tensor {
	m := t.model
	var x0 *torch.Tensor
	torch.NoGrad(func() {
		// The posterior mean rather than a sample: the VAE is frozen and
		// its std at SD's scale is negligible, and the mean spends no
		// random numbers.
		mean, _ := m.VAE.Encode(images.ToOptions(m.Options))
		x0 = m.VAE.Config.ScaleLatents(mean)
	})
	noise := m.Options.Randn(t.gen, x0.Shape()...)
	timesteps := sampleTimesteps(t.gen, x0.Size(0), m.Scheduler.NumTrainTimesteps)
	noisy := t.ddpm.AddNoise(x0, noise, timesteps)
	target := noise
	if t.velocity {
		target = t.ddpm.Velocity(x0, noise, timesteps)
	}
	pred := m.UNet.Forward(noisy, timesteps.ToDevice(m.Options.Device), embeds)
	return pred.To(torch.Float32).Sub(target.To(torch.Float32)).Square().Mean()
}

// sampleTimesteps draws n timesteps uniformly from 0..T-1 (i64, CPU), as
// torch.randint(0, T, (n,)) does in diffusers' training scripts.
func sampleTimesteps(gen *torch.Generator, n int64, T int) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		// U[0, 1) * T can round up to T in f32; the clamp keeps it in range.
		return torch.Rand(gen, n).MulScalar(float64(T)).Floor().ClampMax(float64(T - 1)).To(torch.Int64)
	})
}
