package train

import (
	"context"
	"errors"
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
// With a process group pg, Run is one rank of a data-parallel job (see
// ddp.go): it shards data, starts from rank 0's weights, averages the
// gradients over the ranks every step, and only rank 0 writes the log,
// the plot and checkpoints and calls hooks. Every rank must call Run with
// the same configuration. pg nil is a single process.
//
// Cancelling ctx (see OnInterrupt) stops the run after the step under way
// with a checkpoint; the error then wraps context.Cause(ctx). When Run
// returns, every parameter's requires_grad is as it found it and no
// gradient is left behind.
func Run(ctx context.Context, pg *torch.ProcessGroup, cfg Config, m *pipeline.Model, a *lcp.Adapter, data Batches, cond Conditioner, hooks Hooks) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := m.Scheduler.Validate(); err != nil {
		return fmt.Errorf("train: scheduler: %w", err)
	}
	defer torch.Recover(&err)
	t, err := newTrainer(pg, cfg, m, a, data, cond, hooks)
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
	hooks   Hooks               // none on ranks other than 0
	pg      *torch.ProcessGroup // nil for a single process

	train       trainable
	restoreGrad func()
	opt         *torch.AdamW
	ddpm        *pipeline.DDPM
	velocity    bool        // the model predicts v, not epsilon
	log         *lossLog    // nil on ranks other than 0
	scaler      *lossScaler // float16 runs only

	step         int       // optimizer steps done
	checkpointed int       // step of the newest checkpoint on disk, -1 for none
	priorSeconds float64   // training time before this process
	started      time.Time // when this process started training
}

func newTrainer(pg *torch.ProcessGroup, cfg Config, m *pipeline.Model, a *lcp.Adapter, data Batches, cond Conditioner, hooks Hooks) (_ *trainer, err error) {
	t := &trainer{cfg: cfg, model: m, adapter: a, data: data, cond: cond, hooks: hooks, pg: pg, checkpointed: -1}
	if !t.lead() {
		t.hooks = Hooks{} // rank 0 reports for the job
	}
	if t.velocity, err = predictsVelocity(m); err != nil {
		return nil, err
	}
	if err := checkPrecision(cfg.MixedPrecision, m.Options.Device); err != nil {
		return nil, err
	}
	if cfg.MixedPrecision == "fp16" {
		t.scaler = newLossScaler()
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
	m.UNet.SetGradientCheckpointing(cfg.GradientCheckpointing)
	t.opt = torch.NewAdamW(t.train.params, torch.AdamWOptions{
		LR: cfg.LR, Beta1: cfg.Betas[0], Beta2: cfg.Betas[1], Eps: 1e-8, WeightDecay: cfg.WeightDecay,
	})
	t.ddpm = pipeline.NewDDPM(m.Scheduler)

	if err := data.Shard(t.rank(), t.world()); err != nil {
		return nil, err
	}
	// Every rank reads before any writes, and all go on only if all
	// succeeded: a rank that failed alone would leave the others waiting
	// in the first collective until the timeout.
	resumed, err := t.resumeOrStart()
	if err = t.agree(err); err != nil {
		return nil, err
	}
	// The configuration and the step, not the checkpoint, set the learning
	// rate: a resumed run may change it.
	t.opt.SetLR(cfg.lrAt(t.step))
	if t.lead() {
		if err = os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			err = fmt.Errorf("train: %w", err)
		} else {
			t.log, err = openLog(cfg.OutDir, t.step, resumed)
		}
	}
	if err = t.agree(err); err != nil {
		return nil, err
	}
	if err := t.broadcastWeights(); err != nil {
		return nil, err
	}
	if t.pg == nil {
		t.logf("training %d parameters (%d tensors), %d samples a step", t.train.count(), len(t.train.params), cfg.SamplesPerStep())
	} else {
		t.logf("training %d parameters (%d tensors), %d samples a step (%d ranks of %d)",
			t.train.count(), len(t.train.params), t.world()*cfg.SamplesPerStep(), t.world(), cfg.SamplesPerStep())
	}
	return t, nil
}

// predictsVelocity tells a v-prediction model from an epsilon one.
func predictsVelocity(m *pipeline.Model) (bool, error) {
	switch m.Scheduler.PredictionType {
	case "", "epsilon":
		return false, nil
	case "v_prediction":
		return true, nil
	}
	return false, fmt.Errorf("train: the model predicts %q; training knows epsilon and v_prediction", m.Scheduler.PredictionType)
}

// resumeOrStart loads the checkpoint cfg.Resume names, or, starting
// afresh, makes sure the run would not write over an older one.
func (t *trainer) resumeOrStart() (resumed bool, err error) {
	dir := t.cfg.Resume
	if dir == "latest" {
		// With no checkpoint yet "latest" starts afresh, as diffusers'
		// --resume_from_checkpoint latest does, so that a script can pass
		// it on its first run and on every run after an interruption.
		latest, err := LatestCheckpoint(t.cfg.OutDir)
		switch {
		case errors.Is(err, errNoCheckpoint):
			t.logf("%v: starting afresh", err)
		case err != nil:
			return false, err
		}
		dir = latest
	}
	if dir == "" {
		if !t.lead() {
			return false, nil // rank 0 checks the folder it alone writes
		}
		return false, checkFresh(t.cfg.OutDir)
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
	if t.restoreGrad != nil {
		t.restoreGrad()
	}
	t.model.UNet.SetGradientCheckpointing(false) // generation's guidance needs it off
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
		stop, err := t.stopping(ctx)
		if err != nil {
			return err
		}
		if stop {
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
		// What is due depends on the step alone, so every rank knows when
		// rank 0 writes and waits to hear whether that went well.
		last := t.step == cfg.Steps
		logDue := t.step%cfg.LogEvery == 0 || last
		sampleDue := cfg.SampleEvery > 0 && t.step%cfg.SampleEvery == 0
		checkpointDue := cfg.CheckpointEvery > 0 && t.step%cfg.CheckpointEvery == 0 || last
		if !logDue && !sampleDue && !checkpointDue {
			continue
		}
		var reportErr error
		if t.lead() {
			reportErr = t.report(&w, logDue, sampleDue, checkpointDue)
		}
		if err := t.agree(reportErr); err != nil {
			return err
		}
	}
	return nil
}

// report writes the log row, renders samples and checkpoints, as due; on
// rank 0 only.
func (t *trainer) report(w *window, logDue, sampleDue, checkpointDue bool) (err error) {
	if logDue {
		if err := t.log.append(w.row(t)); err != nil {
			return err
		}
		*w = window{start: time.Now()}
	}
	if sampleDue && t.hooks.Sample != nil {
		torch.NoGrad(func() { err = t.hooks.Sample(t.step) })
		if err != nil {
			return fmt.Errorf("train: samples at step %d: %w", t.step, err)
		}
	}
	if checkpointDue {
		return t.checkpoint()
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
	samples := float64(t.world() * t.cfg.SamplesPerStep()) // the job's, not this rank's
	return LogRow{
		Step: t.step, Loss: w.loss / n, LR: t.cfg.lrAt(t.step - 1), GradNorm: w.gradNorm / n, Seconds: t.seconds(),
		StepsPerSec: n / elapsed, SamplesPerSec: n * samples / elapsed,
	}
}

// stopping reports whether the run should stop before the next step: ctx
// is cancelled, or, in a data-parallel job, any rank's is (a launcher may
// signal one rank, or signal all at slightly different steps), so that all
// stop after the same step.
func (t *trainer) stopping(ctx context.Context) (bool, error) {
	stop := ctx.Err() != nil
	if t.pg == nil {
		return stop, nil
	}
	s := torch.NewScope()
	defer s.Close()
	v := t.collectiveOptions().Full(boolFloat(stop), 1)
	if err := t.pg.AllReduceMean(v); err != nil {
		return false, fmt.Errorf("train: after step %d: %w", t.step, err)
	}
	return v.Item() > 0, nil
}

// errPeerInterrupted is why a rank that was not interrupted itself stops.
var errPeerInterrupted = fmt.Errorf("%w on another rank", ErrInterrupted)

// stop checkpoints the last finished step, unless that is on disk
// already, and reports why the run stopped.
func (t *trainer) stop(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil {
		cause = errPeerInterrupted
	}
	var err error
	if t.checkpointed != t.step {
		err = t.checkpoint()
	}
	if err = t.agree(err); err != nil {
		return fmt.Errorf("%w (stopping after step %d: %w)", err, t.step, cause)
	}
	return fmt.Errorf("train: stopped after step %d, checkpoint %s: %w", t.step, CheckpointDir(t.cfg.OutDir, t.step), cause)
}

// checkpoint writes a checkpoint and the loss plot; on rank 0 only, the
// other ranks holding the same weights.
func (t *trainer) checkpoint() error {
	if !t.lead() {
		t.checkpointed = t.step
		return nil
	}
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
// averages them over the ranks of a data-parallel job, clips their global
// norm and updates the trainable parameters. It returns the mean loss
// (over the ranks too) and the gradient norm before clipping.
func (t *trainer) optimizerStep() (loss, gradNorm float64, err error) {
	t.opt.SetLR(t.cfg.lrAt(t.step))
	t.opt.ZeroGrad()
	var failed error
	for range t.cfg.GradAccum {
		l, err := t.microStep()
		if err != nil {
			failed = err
			break
		}
		loss += l
	}
	loss /= float64(t.cfg.GradAccum)
	if t.pg != nil {
		// A rank that failed still takes part, so that the others hear of
		// it now rather than at the timeout.
		s, err := t.syncStep(loss, failed != nil)
		switch {
		case err != nil:
			return 0, 0, err
		case failed != nil:
			return 0, 0, failed
		case s.failed:
			return 0, 0, fmt.Errorf("train: step %d: another rank failed; its output says why", t.step+1)
		}
		loss = s.loss
	} else if failed != nil {
		return 0, 0, failed
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		// Stepping on it would spread the NaN into every trainable weight.
		return 0, 0, fmt.Errorf("train: step %d: the loss is %g", t.step+1, loss)
	}
	if t.scaler != nil {
		finite := t.scaler.unscale(t.train.params)
		t.scaler.update(finite)
		if !finite {
			return loss, 0, nil // the overflow is the scale's, not the model's: skip the step
		}
	}
	gradNorm = clipGradNorm(t.train.params, t.cfg.ClipGradNorm)
	t.opt.Step()
	return loss, gradNorm, nil
}

// microStep runs the objective on one batch and back-propagates it,
// scaled so that GradAccum micro-batches sum to their mean's gradient. A
// loss that is not finite is returned without its backward pass, for
// optimizerStep to refuse.
func (t *trainer) microStep() (v float64, err error) {
	err = t.withBatch(t.step+1, fmt.Sprintf("step %d", t.step+1), func(b *Batch, embeds *torch.Tensor, d Draws) {
		loss := t.loss(b, embeds, d)
		v = loss.Item()
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		loss = loss.DivScalar(float64(t.cfg.GradAccum))
		if t.scaler != nil {
			loss = loss.MulScalar(t.scaler.Scale)
		}
		loss.Backward()
	})
	return v, err
}

// withBatch takes the next batch from t.data, checks it, conditions the
// UNet on it with the draws of step (from 1) and runs f, then takes the
// condition down (after f's backward pass, as the Conditioner contract
// wants) and frees the batch and every tensor made meanwhile. what names
// the step in errors.
func (t *trainer) withBatch(step int, what string, f func(b *Batch, embeds *torch.Tensor, d Draws)) error {
	s := torch.NewScope()
	defer s.Close()
	b, err := t.data.Next()
	if err != nil {
		return fmt.Errorf("train: %s: data: %w", what, err)
	}
	defer b.Free()
	if err := t.check(b); err != nil {
		return fmt.Errorf("train: %s: %w", what, err)
	}
	d := NewDraws(t.cfg.Seed, step, b.Index)
	var embeds *torch.Tensor
	t.autocast(func() { embeds, err = t.cond.Condition(b, d) })
	if err != nil {
		return fmt.Errorf("train: %s: conditioning: %w", what, err)
	}
	defer t.cond.Clear()
	f(b, embeds, d)
	return nil
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
	if len(b.Index) != t.cfg.BatchSize {
		return fmt.Errorf("batch has %d sample indices for %d images", len(b.Index), t.cfg.BatchSize)
	}
	if t.cfg.SubjectLossWeight > 0 {
		if b.Masks == nil {
			return errors.New("subject_loss_weight needs subject masks, and this data source has none (train on a manifest)")
		}
		if s := b.Masks.Shape(); !slices.Equal(s, []int64{int64(t.cfg.BatchSize), 1, r, r}) {
			return fmt.Errorf("batch masks are %v, want [%d 1 %d %d]", s, t.cfg.BatchSize, r, r)
		}
	}
	return nil
}

// loss is Eq. 1 on the batch's images [B, 3, H, W]: the mean squared error
// between the noise added at random timesteps and the UNet's prediction of
// it (or the velocity, for a v-prediction model), each row's noise and
// timestep its own draws of d; with SubjectLossWeight, weighted towards
// the subjects (latentWeights).
func (t *trainer) loss(b *Batch, embeds *torch.Tensor, d Draws) *torch.Tensor {
	sq := t.sqError(b, embeds, d)
	if t.cfg.SubjectLossWeight > 0 {
		sq = sq.Mul(latentWeights(b.Masks.ToDevice(t.model.Options.Device), sq.Size(2), t.cfg.SubjectLossWeight))
	}
	return sq.Mean()
}

// sqError is the squared error [B, C, h, w] in float32 of the UNet's
// prediction on the batch's latents, noised with d's draws: Eq. 1 before
// its mean.
func (t *trainer) sqError(b *Batch, embeds *torch.Tensor, d Draws) *torch.Tensor {
	m := t.model
	var x0 *torch.Tensor
	torch.NoGrad(func() {
		// The posterior mean rather than a sample: the VAE is frozen and
		// its std at SD's scale is negligible, and the mean spends no
		// random numbers.
		mean, _ := m.VAE.Encode(b.Images.ToOptions(m.Options))
		x0 = m.VAE.Config.ScaleLatents(mean)
	})
	noise := d.noise(m.Options, x0.Shape()[1:]...)
	timesteps := d.timesteps(m.Scheduler.NumTrainTimesteps)
	noisy := t.ddpm.AddNoise(x0, noise, timesteps)
	target := noise
	if t.velocity {
		target = t.ddpm.Velocity(x0, noise, timesteps)
	}
	var pred *torch.Tensor
	t.autocast(func() { pred = m.UNet.Forward(noisy, timesteps.ToDevice(m.Options.Device), embeds) })
	return pred.To(torch.Float32).Sub(target.To(torch.Float32)).Square()
}

// latentWeights are the loss weights [B, 1, h, h] of masks [B, 1, H, H]
// on an h x h latent grid: 1 + subjectWeight on a cell any mask pixel of
// its H/h x H/h patch covers, 1 elsewhere, scaled to mean 1 over the
// batch. A cell the subject only touches counts whole: at the toy world's
// 4 px cells, a small subject's outline is a good part of its shape.
func latentWeights(masks *torch.Tensor, h int64, subjectWeight float64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return subjectWeights(coveredCells(masks, h), subjectWeight) })
}

// subjectWeights are 1 + subjectWeight where inside is 1 and 1 where it
// is 0, scaled to mean 1, so that a weighted loss stays on the scale of a
// plain MSE.
func subjectWeights(inside *torch.Tensor, subjectWeight float64) *torch.Tensor {
	w := inside.MulScalar(subjectWeight).AddScalar(1)
	return w.Div(w.Mean())
}

// coveredCells [B, 1, h, h] is 1 on the cells of an h x h latent grid that
// any pixel of masks [B, 1, H, H] touches, 0 elsewhere.
func coveredCells(masks *torch.Tensor, h int64) *torch.Tensor {
	s := masks.Shape()
	f := s[2] / h
	return masks.Reshape(s[0], 1, h, f, h, f).Amax(3, 5)
}
