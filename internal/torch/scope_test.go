package torch

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestScopeFreesAllButKept(t *testing.T) {
	Settle()
	base := LiveTensors()
	var kept, inner *Tensor
	func() {
		s := NewScope()
		defer s.Close()
		a := Ones(4)
		b := a.MulScalar(2)
		kept = s.Keep(b.Add(a))
		func() {
			s2 := NewScope()
			defer s2.Close()
			inner = s2.Keep(a.Exp()) // moves to the outer scope
		}()
		if inner.Freed() {
			t.Fatal("kept tensor freed by the inner scope")
		}
		if LiveTensors() != base+4 { // a, b, kept, inner
			t.Fatalf("live %d, want %d", LiveTensors()-base, 4)
		}
	}()
	if !inner.Freed() {
		t.Fatal("tensor kept only by the inner scope outlived the outer one")
	}
	if kept.Freed() || LiveTensors() != base+1 {
		t.Fatalf("after close: kept freed=%v, live %d", kept.Freed(), LiveTensors()-base)
	}
	assertClose(t, "kept value", f64s(kept), []float64{3, 3, 3, 3}, 0)
	kept.Free()
	if LiveTensors() != base {
		t.Fatalf("live %d after freeing the kept tensor", LiveTensors()-base)
	}

	// Scoped keeps only its result; closing an outer scope closes inner ones left open.
	r := Scoped(func() *Tensor { return Ones(2).AddScalar(1) })
	if LiveTensors() != base+1 {
		t.Fatalf("Scoped left %d live", LiveTensors()-base)
	}
	r.Free()
	outer := NewScope()
	NewScope() // left open by mistake
	Zeros(1)
	outer.Close()
	if LiveTensors() != base || currentScope() != nil {
		t.Fatalf("outer close left %d live, scope %v", LiveTensors()-base, currentScope())
	}
}

func TestScopesAreGoroutineLocal(t *testing.T) {
	Settle()
	base := LiveTensors()
	s := NewScope()
	var other *Tensor
	done := make(chan struct{})
	go func() {
		other = Ones(1) // no scope on this goroutine: owned by its finaliser
		close(done)
	}()
	<-done
	Ones(1)
	s.Close()
	if other.Freed() || LiveTensors() != base+1 {
		t.Fatalf("another goroutine's tensor was freed by this scope (live %d)", LiveTensors()-base)
	}
	other.Free()
}

func TestFinaliserBackstop(t *testing.T) {
	Settle()
	base := LiveTensors()
	for range 1000 {
		Ones(8)
	}
	for i := 0; i < 100 && LiveTensors() > base; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := LiveTensors() - base; n > 0 {
		t.Fatalf("%d unreachable tensors never finalised", n)
	}
}

// rss is the process's resident set size in bytes.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	pages, err := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// TestLongLoopConstantMemory runs 10,000 iterations of a small op chain,
// as a denoising or training loop does, and checks that nothing piles up.
func TestLongLoopConstantMemory(t *testing.T) {
	x := Randn(NewGenerator(0), 64, 64)
	defer x.Free()
	step := func() {
		s := NewScope()
		defer s.Close()
		y := x.Matmul(x).SiLU().Softmax(-1)
		z := Linear(y, x, nil).Add(y).Mean(0)
		_ = z.Sum().Item()
	}
	for range 200 { // warm up allocator caches
		step()
	}
	Settle()
	baseLive, baseRSS := LiveTensors(), rss(t)
	for range 10000 {
		step()
	}
	runtime.GC()
	live, after := LiveTensors(), rss(t)
	t.Logf("10,000 iterations: live tensors %d -> %d, RSS %.1f MiB -> %.1f MiB",
		baseLive, live, float64(baseRSS)/(1<<20), float64(after)/(1<<20))
	if live != baseLive {
		t.Fatalf("live tensors %d -> %d", baseLive, live)
	}
	// One iteration allocates ~100 KiB of tensors; a leak of even one per
	// iteration would add ~160 MiB. 16 MiB leaves room for allocator noise.
	if after-baseRSS > 16<<20 {
		t.Fatalf("RSS grew by %.1f MiB", float64(after-baseRSS)/(1<<20))
	}

	// The same loop freeing as it goes, inside one long-lived scope.
	s := NewScope()
	defer s.Close()
	acc, row := Zeros(64), x.Select(0, 0)
	for range 10000 {
		sum := acc.Add(row)
		next := sum.MulScalar(0.5)
		sum.Free()
		acc.Free()
		acc = next
	}
	if n := len(s.tensors); n > 200 {
		t.Fatalf("scope bookkeeping grew to %d slots", n)
	}
	if LiveTensors() != baseLive+2 {
		t.Fatalf("explicit-free loop left %d extra live tensors", LiveTensors()-baseLive)
	}
}

// TestNoGradHoldsAcrossCalls checks the per-thread grad mode: a goroutine
// in NoGrad keeps it across many cgo calls while other goroutines, which
// the scheduler spreads over threads, keep recording gradients.
func TestNoGradHoldsAcrossCalls(t *testing.T) {
	w := Ones(4).SetRequiresGrad(true)
	defer w.Free()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	failures := make(chan string, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := Scoped(func() *Tensor { return w.MulScalar(2) })
				if !r.RequiresGrad() {
					failures <- "a goroutine outside NoGrad lost grad mode"
					r.Free()
					return
				}
				r.Free()
				runtime.Gosched()
			}
		}()
	}
	NoGrad(func() {
		s := NewScope()
		defer s.Close()
		for i := range 10000 {
			if w.MulScalar(2).RequiresGrad() {
				failures <- "NoGrad recorded a gradient at call " + strconv.Itoa(i)
				return
			}
			if i%100 == 0 {
				runtime.Gosched()
				time.Sleep(time.Microsecond)
			}
		}
	})
	close(stop)
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Fatal(f)
	}
	if !GradEnabled() {
		t.Fatal("NoGrad did not restore grad mode")
	}
}

func TestPersistOutlivesScopes(t *testing.T) {
	Settle()
	base := LiveTensors()
	var p *Tensor
	func() {
		s := NewScope()
		defer s.Close()
		func() {
			inner := NewScope()
			defer inner.Close()
			p = Persist(Ones(2))
			Zeros(2)
		}()
	}()
	if p.Freed() || LiveTensors() != base+1 {
		t.Fatalf("persisted tensor freed=%v, live %d", p.Freed(), LiveTensors()-base)
	}
	p.Free()
}

func TestWithGradInsideNoGrad(t *testing.T) {
	w := Ones(2).SetRequiresGrad(true)
	defer w.Free()
	NoGrad(func() {
		if w.MulScalar(2).RequiresGrad() {
			t.Fatal("NoGrad recorded")
		}
		WithGrad(func() {
			if !w.MulScalar(2).RequiresGrad() {
				t.Fatal("WithGrad did not record")
			}
		})
		if GradEnabled() {
			t.Fatal("WithGrad did not restore NoGrad")
		}
	})
}

// TestThreadCountOnEveryOSThread: OpenMP keeps the thread count per OS
// thread; a count set on one must hold for calls from any other.
func TestThreadCountOnEveryOSThread(t *testing.T) {
	defer SetNumThreads(NumThreads())
	SetNumThreads(3) // neither OpenMP's default (the cores) nor Debian's (1)
	var wg sync.WaitGroup
	got := make([]int, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // a fresh OS thread for each: the goroutine exits locked
			got[i] = NumThreads()
		}()
	}
	wg.Wait()
	for i, n := range got {
		if n != 3 {
			t.Fatalf("OS thread %d sees %d intra-op threads, want 3", i, n)
		}
	}
}

func TestPeakRSS(t *testing.T) {
	mib, err := PeakRSS()
	if err != nil || mib < float64(rss(t))/(1<<20)-1 {
		t.Fatalf("peak RSS %.1f MiB (%v) below the current %.1f MiB", mib, err, float64(rss(t))/(1<<20))
	}
}

// The CUDA allocator's peak follows a tensor's allocation and a reset;
// without a CUDA device it is a one-line error, never a crash.
func TestCUDAPeakMemory(t *testing.T) {
	if CUDADeviceCount() == 0 {
		_, err := CUDAPeakMemory(0)
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "CUDA") {
			t.Fatalf("no CUDA: peak memory gave %v, want a one-line error", err)
		}
		if err := ResetCUDAPeakMemory(0); err == nil {
			t.Fatal("no CUDA: a reset succeeded")
		}
		t.Logf("no CUDA device: %v", err)
		return
	}
	if _, err := CUDAPeakMemory(CUDADeviceCount()); err == nil {
		t.Fatal("a device past the last was read")
	}
	const mib64 = 64 << 20
	if err := ResetCUDAPeakMemory(0); err != nil {
		t.Fatal(err)
	}
	before, err := CUDAPeakMemory(0)
	if err != nil {
		t.Fatal(err)
	}
	x := Options{Device: CUDA(0)}.Zeros(mib64 / 4) // float32
	peak, _ := CUDAPeakMemory(0)
	x.Free()
	if peak < before+mib64 {
		t.Fatalf("peak %d bytes after a 64 MiB tensor, %d before", peak, before)
	}
	if err := ResetCUDAPeakMemory(0); err != nil {
		t.Fatal(err)
	}
	if after, _ := CUDAPeakMemory(0); after >= peak {
		t.Fatalf("peak %d bytes after the tensor was freed and the count reset, %d with it", after, peak)
	}
}
