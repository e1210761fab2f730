package torch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The multi-process tests re-run this test binary as torchrun would run a
// training program: one process per rank, told its place by environment
// variables. distHelperEnv selects what the child does.
const (
	distHelperEnv = "LCPDIFF_DIST_HELPER" // "train", "join" or "peer-dies"
	distOutEnv    = "LCPDIFF_DIST_OUT"    // where the child writes its distResult
)

// distResult is what a child process reports to the test.
type distResult struct {
	Err     string   // the error the process group returned, if any
	Seconds float64  // how long joining took
	Params  []uint64 // final parameters as float64 bits, for a bitwise comparison
}

const (
	distSteps = 5 // optimizer steps of the data-parallel run
	distBatch = 8 // rows in the global batch, split evenly between ranks
	distSeed  = 100
)

// trainLinear fits y = x·w + b to a fixed global batch with AdamW, on this
// rank's shard when pg is not nil and on the whole batch otherwise, and
// returns the final parameters. Each rank starts from its own random
// parameters, so only the broadcast makes them agree.
func trainLinear(pg *ProcessGroup) ([]float64, error) {
	s := NewScope()
	defer s.Close()
	f64 := Options{DType: Float64}
	data := NewGenerator(7)
	defer data.Close()
	x, y := f64.Randn(data, distBatch, 3), f64.Randn(data, distBatch, 1)

	rank, world := 0, 1
	if pg != nil {
		rank, world = pg.Rank(), pg.WorldSize()
	}
	shard := int64(distBatch / world)
	x, y = x.Narrow(0, int64(rank)*shard, shard), y.Narrow(0, int64(rank)*shard, shard)

	init := NewGenerator(uint64(distSeed + rank))
	defer init.Close()
	w := f64.Randn(init, 3, 1).SetRequiresGrad(true)
	b := f64.Randn(init, 1).SetRequiresGrad(true)
	if pg != nil {
		if err := pg.Broadcast(0, w, b); err != nil {
			return nil, err
		}
	}
	opt := NewAdamW([]*Tensor{w, b}, DefaultAdamW(0.1))
	defer opt.Close()
	for range distSteps {
		opt.ZeroGrad()
		x.Matmul(w).Add(b).Sub(y).Square().Mean().Backward()
		if pg != nil {
			if err := pg.AllReduceMean(w.Grad(), b.Grad()); err != nil {
				return nil, err
			}
		}
		opt.Step()
	}
	return Cat([]*Tensor{w.Detach().Reshape(-1), b.Detach()}, 0).Float64s(), nil
}

// checkCollectives runs the collectives' other paths on rank-dependent
// values: a lone contiguous tensor (reduced in place), a transposed one
// (through a flat copy) and mixed dtypes (a bucket per run of one dtype).
func checkCollectives(pg *ProcessGroup) error {
	s := NewScope()
	defer s.Close()
	r := float64(pg.Rank())
	mean := float64(pg.WorldSize()-1) / 2 // of 0..world-1
	lone := Full(r, 2, 3)
	if err := pg.AllReduceMean(lone); err != nil {
		return err
	}
	base := Options{DType: Float64}.Arange(0, 6, 1).Reshape(2, 3)
	transposed := base.MulScalar(r+1).Transpose(0, 1)
	small, big := Full(10*r, 4), Options{DType: Float64}.Full(r, 5)
	if err := pg.AllReduceMean(small, transposed, big); err != nil {
		return err
	}
	check := func(what string, got *Tensor, want float64, scale *Tensor) error {
		w := OnesLike(got)
		if scale != nil {
			w = scale
		}
		g, ws := got.Contiguous().Float64s(), w.Contiguous().Float64s()
		for i := range g {
			if math.Abs(g[i]-want*ws[i]) > 1e-6 {
				return fmt.Errorf("%s[%d] = %v, want %v", what, i, g[i], want*ws[i])
			}
		}
		return nil
	}
	for _, err := range []error{
		check("lone", lone, mean, nil),
		check("transposed", transposed, mean+1, base.Transpose(0, 1)),
		check("small", small, 10*mean, nil),
		check("big", big, mean, nil),
		pg.Barrier(),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestDistHelperProcess is the child side of the multi-process tests; it
// does nothing in a plain test run.
func TestDistHelperProcess(t *testing.T) {
	mode := os.Getenv(distHelperEnv)
	if mode == "" {
		return // a plain run: only the Dist tests' children have work here
	}
	var res distResult
	report := func() {
		b, _ := json.Marshal(res)
		if err := os.WriteFile(os.Getenv(distOutEnv), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	pg, err := InitFromEnv()
	res.Seconds = time.Since(start).Seconds()
	if err == nil && pg == nil {
		err = fmt.Errorf("InitFromEnv returned no group with WORLD_SIZE=%s", os.Getenv("WORLD_SIZE"))
	}
	if err == nil {
		switch mode {
		case "train":
			var params []float64
			if params, err = trainLinear(pg); err == nil {
				err = checkCollectives(pg)
			}
			for _, p := range params {
				res.Params = append(res.Params, math.Float64bits(p))
			}
		case "peer-dies":
			if pg.Rank() != 0 {
				report()
				os.Exit(0) // without a word to rank 0
			}
			err = pg.AllReduceMean(Ones(4))
			if err == nil {
				err = fmt.Errorf("all-reduce with a dead peer succeeded")
			}
		}
		pg.Close()
	}
	if err != nil {
		res.Err = err.Error()
	}
	report()
}

// requireGloo fails a test when the shim was built without c10d/Gloo (make
// test installs libgloo-dev, so CI never should be), checking that the
// error says how to fix it.
func requireGloo(t *testing.T) {
	t.Helper()
	pg, err := NewProcessGroup("gloo", "127.0.0.1", freePort(t), 0, 1, 5*time.Second)
	if err != nil && strings.Contains(err.Error(), "built without c10d/Gloo") {
		if !strings.Contains(err.Error(), "libgloo-dev") {
			t.Fatalf("the error does not say what to install: %v", err)
		}
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
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

// runRanks starts the given ranks of a world-process job on loopback in
// mode and returns what each reported. Every child is killed when limit
// passes or the test fails, and the test fails if a child did not report.
func runRanks(t *testing.T, mode string, ranks []int, world int, timeout, limit time.Duration) []distResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel() // kills any child still running
	port := freePort(t)
	dir := t.TempDir()
	type child struct {
		cmd  *exec.Cmd
		out  bytes.Buffer
		file string
	}
	children := make([]*child, len(ranks))
	for i, rank := range ranks {
		c := &child{file: filepath.Join(dir, fmt.Sprintf("rank%d.json", rank))}
		// -test.timeout is the child's own deadline, in case the kill below
		// never comes.
		c.cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDistHelperProcess$",
			"-test.timeout="+limit.String())
		c.cmd.Env = append(os.Environ(),
			distHelperEnv+"="+mode,
			distOutEnv+"="+c.file,
			"RANK="+strconv.Itoa(rank),
			"LOCAL_RANK="+strconv.Itoa(rank),
			"WORLD_SIZE="+strconv.Itoa(world),
			"MASTER_ADDR=127.0.0.1",
			"MASTER_PORT="+strconv.Itoa(port),
			"LCPDIFF_DIST_BACKEND=gloo",
			"LCPDIFF_DIST_TIMEOUT="+timeout.String(),
			"OMP_NUM_THREADS=1",
		)
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children[i] = c
	}
	results := make([]distResult, len(ranks))
	failed := false
	for i, c := range children {
		err := c.cmd.Wait()
		b, readErr := os.ReadFile(c.file)
		if err != nil || readErr != nil || json.Unmarshal(b, &results[i]) != nil {
			t.Errorf("rank %d (%s): %v; no report (%v); output:\n%s", ranks[i], mode, err, readErr, c.out.String())
			failed = true
			cancel() // the others would only wait for it
		}
	}
	if failed {
		t.FailNow()
	}
	return results
}

func TestDistDataParallelMatchesSingleProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes")
	}
	requireGloo(t)
	want, err := trainLinear(nil)
	if err != nil {
		t.Fatal(err)
	}
	res := runRanks(t, "train", []int{0, 1}, 2, 20*time.Second, 90*time.Second)
	got := make([][]float64, len(res))
	for r, x := range res {
		if x.Err != "" {
			t.Fatalf("rank %d: %s", r, x.Err)
		}
		for _, bits := range x.Params {
			got[r] = append(got[r], math.Float64frombits(bits))
		}
	}
	for i := range res[0].Params {
		if res[0].Params[i] != res[1].Params[i] {
			t.Fatalf("parameter %d differs between ranks: %v and %v", i, got[0][i], got[1][i])
		}
	}
	// The mean of two equal shards' mean gradients is the full batch's mean
	// gradient up to rounding.
	assertClose(t, "data-parallel parameters vs one process", got[0], want, 1e-6)
	s := NewScope()
	defer s.Close()
	g := NewGenerator(distSeed)
	defer g.Close()
	if start := (Options{DType: Float64}).Randn(g, 3, 1).Float64s(); math.Abs(got[0][0]-start[0]) < 1e-3 {
		t.Fatalf("training did not move the parameters from %v", start)
	}
}

func TestDistMissingPeerTimesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a timeout")
	}
	requireGloo(t)
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name string
		rank int
	}{
		{"master never comes", 1},
		{"worker never comes", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runRanks(t, "join", []int{tc.rank}, 2, timeout, 60*time.Second)[0]
			if res.Err == "" {
				t.Fatal("joining a job alone succeeded")
			}
			t.Logf("after %.1fs: %s", res.Seconds, res.Err)
			if !strings.Contains(res.Err, "127.0.0.1:") {
				t.Errorf("error does not name the master's address: %s", res.Err)
			}
			if res.Seconds > timeout.Seconds()+5 {
				t.Errorf("gave up after %.1fs, timeout %v", res.Seconds, timeout)
			}
		})
	}
}

func TestDistPeerDeathIsAnError(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes")
	}
	requireGloo(t)
	res := runRanks(t, "peer-dies", []int{0, 1}, 2, 10*time.Second, 60*time.Second)
	if !strings.Contains(res[0].Err, "dist.all_reduce") {
		t.Fatalf("rank 0: %q, want an all-reduce error", res[0].Err)
	}
	t.Log(res[0].Err)
}

func TestDistInitFromEnvSingleProcess(t *testing.T) {
	for _, name := range []string{"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"} {
		t.Setenv(name, "") // restored after the test
		os.Unsetenv(name)
	}
	if pg, err := InitFromEnv(); pg != nil || err != nil {
		t.Fatalf("WORLD_SIZE unset: %v, %v; want no group and no error", pg, err)
	}
	t.Setenv("WORLD_SIZE", "1")
	if pg, err := InitFromEnv(); pg != nil || err != nil {
		t.Fatalf("WORLD_SIZE=1: %v, %v; want no group and no error", pg, err)
	}
	// Misconfigured jobs fail before any network wait.
	for _, tc := range []struct{ env, want string }{
		{"WORLD_SIZE=two", "WORLD_SIZE"},
		{"WORLD_SIZE=2", "RANK is unset"},
		{"RANK=1", "MASTER_ADDR is unset"},
		{"MASTER_ADDR=127.0.0.1", "MASTER_PORT is unset"},
		{"MASTER_PORT=0", "not a TCP port"},
	} {
		k, v, _ := strings.Cut(tc.env, "=")
		t.Setenv(k, v)
		pg, err := InitFromEnv()
		if pg != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("after %s: %v, %v; want an error about %q", tc.env, pg, err, tc.want)
		}
	}
}

func TestDistNilGroupIsAnError(t *testing.T) {
	var pg *ProcessGroup
	if err := pg.AllReduceMean(Ones(1)); err == nil {
		t.Fatal("all-reduce on a nil group succeeded")
	}
	pg.Close()
}

// A group of one needs no peers, so it runs in this process: the whole
// lifecycle, and the errors that come before any network wait.
func TestDistSingleRankGroup(t *testing.T) {
	requireGloo(t)
	pg, err := NewProcessGroup("gloo", "127.0.0.1", freePort(t), 0, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if pg.Rank() != 0 || pg.WorldSize() != 1 || pg.LocalRank() != 0 {
		t.Fatalf("rank %d local %d of %d", pg.Rank(), pg.LocalRank(), pg.WorldSize())
	}
	s := NewScope()
	defer s.Close()
	p := New([]float64{1, 2, 3}).SetRequiresGrad(true)
	if err := pg.Broadcast(0, p); err != nil {
		t.Fatal(err)
	}
	if err := pg.AllReduceMean(p, Full(4, 2)); err != nil {
		t.Fatal(err)
	}
	assertClose(t, "mean over one rank", f64s(p.Detach()), []float64{1, 2, 3}, 0)
	if err := pg.Barrier(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Broadcast(1, p); err == nil || !strings.Contains(err.Error(), "root 1") {
		t.Fatalf("broadcast from rank 1 of 1: %v", err)
	}
	pg.Close()
	pg.Close()
	if err := pg.Barrier(); err == nil {
		t.Fatal("barrier on a closed group succeeded")
	}

	for backend, want := range map[string]string{"mpi": "unknown backend", "nccl": "NCCL"} {
		if _, err := NewProcessGroup(backend, "127.0.0.1", freePort(t), 0, 1, 5*time.Second); err == nil ||
			!strings.Contains(err.Error(), want) {
			t.Errorf("backend %s: %v, want an error about %s", backend, err, want)
		}
	}
	if _, err := NewProcessGroup("gloo", "127.0.0.1", freePort(t), 2, 2, time.Second); err == nil {
		t.Error("rank 2 of 2 was accepted")
	}
}
