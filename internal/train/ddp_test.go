package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The data-parallel test re-runs this test binary as torchrun would run a
// training program: one process per rank, told its place by environment
// variables, here on loopback with Gloo. ddpHelperEnv tells a child to do
// a rank's work.
const (
	ddpHelperEnv   = "LCPDIFF_DDP_HELPER"   // the folder the ranks write under
	ddpManifestEnv = "LCPDIFF_DDP_MANIFEST" // the toy manifest every rank reads
	ddpInitialFile = "initial.safetensors"  // the test's adapter before training, under the helper's folder
	ddpSteps       = 3
	ddpSeed        = 4 // a seed whose dropouts cover the cases, see checkDDPDraws
	ddpImageDrop   = 0.5
)

// ddpTrainable are the parts the test trains: those the grounding tokens
// and the image tokens reach.
var ddpTrainable = []string{"image_proj.*", "ip_adapter.*", "position_net.*", "*fuser*"}

// ddpConfig is the test's run of steps, batch samples a micro-batch on
// every rank, writing into dir.
func ddpConfig(dir string, steps, batch int) Config {
	c := tinyConfig(dir, steps, ddpTrainable...)
	c.BatchSize, c.Resolution = batch, 32
	c.TextDropout, c.ImageDropout = 0.3, ddpImageDrop
	c.ClipGradNorm = 0.05 // below the norms the tiny model sees: clipping acts on the averaged gradients
	c.Seed = ddpSeed
	return c
}

// ddpConditioner is the grounding conditioner plus image tokens for the
// rows whose subjects are not dropped: a fixed subject's tokens through
// the resampler for a kept row, zero tokens for a dropped one, and no
// image tokens at all when every row of the micro-batch is dropped, as the
// LCP conditioner leaves the adapter unconditioned for a dropped sample.
// A rank whose samples are all dropped then has no gradient for the
// resampler and the IP-Adapter layers while another rank has one: the
// case the gradient flags exist for. (Zero tokens add exactly nothing:
// the IP-Adapter's keys and values have no bias.)
type ddpConditioner struct {
	ground  *GroundingConditioner
	adapter *lcp.Adapter
	hidden  *torch.Tensor // [1, S, E] image-encoder states of the subject
	dropout float64
	ip      bool // image tokens are set
}

func newDDPConditioner(m *pipeline.Model, a *lcp.Adapter, cfg Config) *ddpConditioner {
	g := torch.NewGenerator(99)
	defer g.Close()
	return &ddpConditioner{
		ground: NewGroundingConditioner(m, a, cfg), adapter: a, dropout: cfg.ImageDropout,
		hidden: torch.Persist(torch.Randn(g, 1, 5, a.IP.Resampler.Config.EmbeddingDim)),
	}
}

func (c *ddpConditioner) Condition(b *Batch, d Draws) (*torch.Tensor, error) {
	embeds, err := c.ground.Condition(b, d)
	if err != nil {
		return nil, err
	}
	s := torch.NewScope()
	defer s.Close()
	tokens := c.adapter.IP.ImageTokens(c.hidden)
	rows, kept := make([]*torch.Tensor, d.Len()), false
	for i, u := range d.ImageDropout() {
		if u >= c.dropout {
			rows[i], kept = tokens, true
		} else {
			rows[i] = torch.ZerosLike(tokens)
		}
	}
	if !kept {
		return embeds, nil
	}
	if err := c.adapter.IP.SetCondition(ipadapter.Condition{Subjects: []*torch.Tensor{torch.Cat(rows, 0)}}); err != nil {
		return nil, err
	}
	c.ip = true
	return embeds, nil
}

func (c *ddpConditioner) Clear() {
	c.ground.Clear()
	if c.ip {
		c.adapter.IP.ClearCondition()
		c.ip = false
	}
}

// checkDDPDraws makes sure the seed exercises what the test is about: a
// step where one rank keeps its sample's image condition and the other
// drops it (so one rank lacks gradients the other has), a step where both
// drop it (so no rank has them), and a caption dropped somewhere.
func checkDDPDraws(t *testing.T) {
	t.Helper()
	split, none, text := false, false, false
	for step := 1; step <= ddpSteps; step++ {
		d := NewDraws(ddpSeed, step, []int{2*step - 2, 2*step - 1})
		img := d.ImageDropout()
		split = split || (img[0] < ddpImageDrop) != (img[1] < ddpImageDrop)
		none = none || img[0] < ddpImageDrop && img[1] < ddpImageDrop
		text = text || slices.ContainsFunc(d.TextDropout(), func(u float64) bool { return u < 0.3 })
	}
	if !split || !none || !text {
		t.Fatalf("seed %d: a step with one rank's image condition dropped: %v; with both: %v; a caption dropped: %v; choose another seed",
			ddpSeed, split, none, text)
	}
}

// ddpReport is what a rank tells the test.
type ddpReport struct {
	Err     string
	Reports int    // calls of its Progress and Logf hooks
	Stopped string // why the interrupted run stopped
}

// TestDDPHelperProcess is a rank of TestDataParallelMatchesOneProcess; it
// does nothing in a plain test run.
func TestDDPHelperProcess(t *testing.T) {
	base := os.Getenv(ddpHelperEnv)
	if base == "" {
		return
	}
	var rep ddpReport
	var err error
	defer func() {
		if err != nil {
			rep.Err = err.Error()
		}
		b, _ := json.Marshal(rep)
		if werr := os.WriteFile(filepath.Join(base, "report-"+os.Getenv("RANK")+".json"), b, 0o644); werr != nil {
			t.Fatal(werr)
		}
	}()
	err = ddpRank(t, base, &rep)
}

// ddpRank trains 3 steps straight, then 3 steps interrupted after 2 on
// rank 0 and resumed from rank 0's checkpoint, and saves the trainable
// weights after each into base/weights-RANK-{straight,resumed}.safetensors.
func ddpRank(t *testing.T, base string, rep *ddpReport) error {
	pg, err := torch.InitFromEnv()
	if err != nil {
		return err
	}
	if pg == nil {
		return fmt.Errorf("no process group with WORLD_SIZE=%s", os.Getenv("WORLD_SIZE"))
	}
	defer pg.Close()
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	manifest, err := data.LoadManifest(os.Getenv(ddpManifestEnv))
	if err != nil {
		return err
	}
	// The test's own adapter: the parts no public file provides are drawn
	// from a generator that every adapter a process builds advances.
	if err := loadParams(filepath.Join(base, ddpInitialFile), a.Params(), "the adapter"); err != nil {
		return err
	}
	space := trainableSpace(m, a)
	rank := pg.Rank()
	if rank != 0 {
		// Start from other weights than rank 0, frozen ones too: the
		// broadcast must make them equal.
		torch.NoGrad(func() {
			for _, p := range a.Params() {
				p.CopyFrom(p.MulScalar(1.5).AddScalar(0.01))
			}
		})
	}
	initial := snapshot(space)
	defer freeAll(initial)
	dir := func(r int, name string) string { return filepath.Join(base, "rank"+strconv.Itoa(r), name) }
	fit := func(ctx context.Context, cfg Config, hooks Hooks, weights string) error {
		b, err := NewManifestBatches(manifest, cfg)
		if err != nil {
			return err
		}
		defer b.Close()
		cond := newDDPConditioner(m, a, cfg)
		defer cond.hidden.Free()
		if err := Run(ctx, pg, cfg, m, a, b, cond, hooks); err != nil {
			return err
		}
		if weights == "" {
			return nil
		}
		sel, err := selectTrainable(space, ddpTrainable)
		if err != nil {
			return err
		}
		out := map[string]*torch.Tensor{}
		for i, k := range sel.keys {
			out[k] = sel.params[i]
		}
		return torch.SaveSafetensors(filepath.Join(base, fmt.Sprintf("weights-%d-%s.safetensors", rank, weights)), out, nil)
	}
	count := Hooks{
		Progress: func(int, int, float64) { rep.Reports++ },
		Logf:     func(string, ...any) { rep.Reports++ },
	}

	// Each rank names its own folder: a real job gives all the same one,
	// but here what rank 1 writes must show.
	if err := fit(context.Background(), ddpConfig(dir(rank, "straight"), ddpSteps, 1), count, "straight"); err != nil {
		return err
	}

	// Rank 0 alone is interrupted, after step 2: both ranks stop there,
	// and rank 0 writes the checkpoint.
	restore(space, initial)
	ctx, interrupt := context.WithCancelCause(context.Background())
	defer interrupt(nil)
	stopAt := count
	stopAt.Progress = func(step, total int, loss float64) {
		if step == ddpSteps-1 {
			interrupt(ErrInterrupted)
		}
	}
	err = fit(ctx, ddpConfig(dir(rank, "resumed"), ddpSteps, 1), stopAt, "")
	if !errors.Is(err, ErrInterrupted) {
		return fmt.Errorf("interrupted run: %v, want ErrInterrupted", err)
	}
	rep.Stopped = err.Error()

	restore(space, initial)
	cfg := ddpConfig(dir(rank, "resumed"), ddpSteps, 1)
	cfg.Resume = CheckpointDir(dir(0, "resumed"), ddpSteps-1) // every rank reads rank 0's checkpoint
	return fit(context.Background(), cfg, count, "resumed")
}

// TestDataParallelMatchesOneProcess trains the tiny model on the toy world
// for 3 steps on 2 ranks of batch 1 (Gloo on loopback) and in this process
// with the same global batch of 2, from the same seed. The ranks end
// bitwise equal to each other and to the process that accumulates the
// batch as two micro-batches of 1 (the same kernels on the same rows; the
// all-reduce's mean of two is exact), and equal to the process that takes
// the batch of 2 in one micro-batch up to rounding. A resume on 2 ranks
// from rank 0's checkpoint is bitwise the straight run; only rank 0 writes
// and reports.
func TestDataParallelMatchesOneProcess(t *testing.T) {
	requireGloo(t)
	checkDDPDraws(t)
	s := torch.NewScope()
	defer s.Close()
	manifest := toyManifest(t)
	base := t.TempDir()

	start := time.Now()
	m, a := loadTiny(t)
	space := trainableSpace(m, a)
	initial := snapshot(space)
	defer freeAll(initial)
	if err := torch.SaveSafetensors(filepath.Join(base, ddpInitialFile), a.Params(), nil); err != nil {
		t.Fatal(err)
	}
	fit := func(name string, batch, accum int) map[string]*torch.Tensor {
		cfg := ddpConfig(filepath.Join(base, name), ddpSteps, batch)
		cfg.GradAccum = accum
		b, err := NewManifestBatches(manifest, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		cond := newDDPConditioner(m, a, cfg)
		defer cond.hidden.Free()
		restore(space, initial)
		if err := Run(context.Background(), nil, cfg, m, a, b, cond, Hooks{}); err != nil {
			t.Fatal(err)
		}
		sel, err := selectTrainable(space, ddpTrainable)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*torch.Tensor{}
		for i, k := range sel.keys {
			out[k] = sel.params[i]
		}
		return snapshot(out)
	}
	batch2, accum2 := fit("batch2", 2, 1), fit("accum2", 1, 2)
	defer freeAll(batch2)
	defer freeAll(accum2)
	t.Logf("one process, batch 2 and 2 micro-batches of 1: %.1fs", time.Since(start).Seconds())

	start = time.Now()
	runDDPRanks(t, base, manifest.Path, 2, 2*time.Minute)
	t.Logf("two ranks, batch 1 each, straight and resumed: %.1fs", time.Since(start).Seconds())

	ranks := [2]map[string]*torch.Tensor{}
	for r := range ranks {
		ranks[r] = loadWeights(t, filepath.Join(base, fmt.Sprintf("weights-%d-straight.safetensors", r)))
		resumed := loadWeights(t, filepath.Join(base, fmt.Sprintf("weights-%d-resumed.safetensors", r)))
		for k, p := range ranks[r] {
			if !sameBits(p, resumed[k]) {
				t.Errorf("rank %d: %s after the resume differs from the straight run's", r, k)
			}
		}
	}
	if len(ranks[0]) != len(accum2) {
		t.Fatalf("the ranks saved %d tensors, the single process trains %d", len(ranks[0]), len(accum2))
	}
	var maxDiff, diff2, update2 float64
	for k, want := range accum2 {
		p0, p1 := ranks[0][k], ranks[1][k]
		if p0 == nil || !sameBits(p0, p1) {
			t.Fatalf("%s: rank 0 and rank 1 differ", k)
		}
		if !sameBits(p0, want) {
			t.Errorf("%s differs from the single process's with 2 micro-batches of 1", k)
		}
		torch.Scoped(func() *torch.Tensor {
			d, u := p0.Sub(batch2[k]), batch2[k].Sub(initial[k])
			maxDiff = math.Max(maxDiff, d.Abs().Amax().Item())
			diff2 += d.Square().Sum().Item()
			update2 += u.Square().Sum().Item()
			return nil
		})
	}
	// Against the batch of 2 in one micro-batch the difference is
	// rounding, but not only the all-reduce's: libtorch's CPU kernels
	// compute a row of a batch of 2 otherwise than a batch of 1 (another
	// blocking or algorithm for another shape), about 1e-5 of the UNet's
	// output here (measured with the weights fixed), and 1.2e-6 of step
	// 1's loss. Three AdamW steps on the
	// tiny random model amplify that: its first steps are about lr·sign(g),
	// so an element whose gradient is near 0 can step the other way, and
	// the next gradients follow. Measured: max abs difference 3.3e-3 (the
	// bound is 2·lr·steps = 6e-3, so no per-weight tolerance can tell
	// rounding from a bug) and 9% of the update's norm on an AMD EPYC,
	// 48% on an Intel Xeon (whose kernels round otherwise: the golden
	// detector is not bitwise there either). The norm can tell a sample's
	// noise or data changed (another seed: 147% on the EPYC, 139% on the Xeon)
	// or no image dropout (139%); finer mistakes are the bitwise
	// comparison's above, with the same rows as micro-batches of 1.
	rel := math.Sqrt(diff2 / update2)
	t.Logf("data-parallel vs one process of batch 2: max abs difference %.3g, %.3g of the update's norm", maxDiff, rel)
	if rel > 1 {
		t.Errorf("the ranks' update differs from the single process's by %.3g of its norm (max abs %g); rounding makes 0.09-0.48", rel, maxDiff)
	}

	// The log is the job's: rank 0 logged the loss averaged over the
	// ranks, which at step 1, before any update, is the batch of 2's up
	// to the kernels' rounding (measured 1.2e-6 relative, and 1.2e-4 for
	// the gradient norm).
	logs := map[string][]LogRow{}
	var err error
	for _, name := range []string{"batch2", "accum2", filepath.Join("rank0", "straight")} {
		if logs[name], err = ReadLog(filepath.Join(base, name, LogFile)); err != nil {
			t.Fatal(err)
		}
		if len(logs[name]) != ddpSteps {
			t.Fatalf("%s logged %d rows, want %d", name, len(logs[name]), ddpSteps)
		}
	}
	got, first := logs[filepath.Join("rank0", "straight")], logs["batch2"][0]
	if math.Abs(got[0].Loss-first.Loss) > 1e-5*first.Loss || math.Abs(got[0].GradNorm-first.GradNorm) > 1e-3*first.GradNorm {
		t.Errorf("step 1: loss %g, grad norm %g; the batch of 2's %g and %g", got[0].Loss, got[0].GradNorm, first.Loss, first.GradNorm)
	}
	for i, want := range logs["accum2"] {
		if got[i].Loss != want.Loss || got[i].GradNorm != want.GradNorm {
			t.Errorf("log row %d: loss %g grad norm %g; the 2 micro-batches' %g and %g", i, got[i].Loss, got[i].GradNorm, want.Loss, want.GradNorm)
		}
	}
	for _, name := range []string{LogFile, PlotFile, CheckpointDir("", ddpSteps)} {
		if _, err := os.Stat(filepath.Join(base, "rank0", "straight", name)); err != nil {
			t.Errorf("rank 0 did not write %s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "rank1")); err == nil {
		t.Error("rank 1 wrote into its output folder")
	}
}

// runDDPRanks runs world ranks of TestDDPHelperProcess on loopback and
// fails the test unless every one reports success; rank 1 must also have
// been quiet. Every child is killed when limit passes or the test fails.
func runDDPRanks(t *testing.T, base, manifest string, world int, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	port := freePort(t)
	cmds := make([]*exec.Cmd, world)
	outs := make([]bytes.Buffer, world)
	for r := range world {
		c := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDDPHelperProcess$", "-test.timeout="+limit.String())
		c.Env = append(os.Environ(),
			ddpHelperEnv+"="+base,
			ddpManifestEnv+"="+manifest,
			"RANK="+strconv.Itoa(r),
			"LOCAL_RANK="+strconv.Itoa(r),
			"WORLD_SIZE="+strconv.Itoa(world),
			"MASTER_ADDR=127.0.0.1",
			"MASTER_PORT="+strconv.Itoa(port),
			"LCPDIFF_DIST_BACKEND=gloo",
			"LCPDIFF_DIST_TIMEOUT=60s",
			"OMP_NUM_THREADS=1",
		)
		c.Stdout, c.Stderr = &outs[r], &outs[r]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[r] = c
	}
	failed := false
	for r, c := range cmds {
		err := c.Wait()
		var rep ddpReport
		b, readErr := os.ReadFile(filepath.Join(base, fmt.Sprintf("report-%d.json", r)))
		if readErr == nil {
			readErr = json.Unmarshal(b, &rep)
		}
		switch {
		case err != nil || readErr != nil:
			t.Errorf("rank %d: %v; no report (%v); output:\n%s", r, err, readErr, outs[r].String())
		case rep.Err != "":
			t.Errorf("rank %d: %s", r, rep.Err)
		case r == 0 && rep.Reports == 0:
			t.Errorf("rank 0 reported no progress")
		case r != 0 && rep.Reports != 0:
			t.Errorf("rank %d called its hooks %d times; only rank 0 reports", r, rep.Reports)
		case !strings.Contains(rep.Stopped, fmt.Sprintf("stopped after step %d", ddpSteps-1)):
			t.Errorf("rank %d's interrupted run: %q, want a stop after step %d", r, rep.Stopped, ddpSteps-1)
		case r != 0 && !strings.Contains(rep.Stopped, "interrupted on another rank"):
			t.Errorf("rank %d, not interrupted itself, stopped with %q", r, rep.Stopped)
		default:
			t.Logf("rank %d, interrupted run: %s", r, rep.Stopped)
			continue
		}
		failed = true
		cancel() // the others would only wait for it
	}
	if failed {
		t.FailNow()
	}
}

// loadWeights reads a safetensors file into memory.
func loadWeights(t *testing.T, path string) map[string]*torch.Tensor {
	t.Helper()
	f, err := torch.OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]*torch.Tensor{}
	for _, ti := range f.Header.Tensors {
		if out[ti.Name], err = f.Tensor(ti.Name); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// requireGloo fails the test when the shim was built without c10d/Gloo:
// make test installs it, so CI never should be.
func requireGloo(t *testing.T) {
	t.Helper()
	pg, err := torch.NewProcessGroup("gloo", "127.0.0.1", freePort(t), 0, 1, 5*time.Second)
	if err != nil {
		t.Fatalf("a Gloo group of one: %v", err)
	}
	pg.Close()
}

// freePort is a TCP port nothing listens on, as far as anyone can tell.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
