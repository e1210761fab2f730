package torch

import (
	"strings"
	"testing"
)

// checkpointNet is a small function of x with parameters w1, w2 and p,
// where p reaches both blocks only through c, a tensor the blocks capture
// rather than receive (as attention processors hold the conditioning).
// With ckpt each block is checkpointed; calls counts the blocks' runs.
func checkpointNet(x, w1, w2, p *Tensor, ckpt bool, calls *int) *Tensor {
	c := p.Tanh()
	block := func(w *Tensor) func(in []*Tensor) []*Tensor {
		return func(in []*Tensor) []*Tensor {
			*calls++
			h := Linear(in[0], w, nil).Tanh().Mul(c)
			return []*Tensor{h, h.Sum()} // a second result, unused by the loss
		}
	}
	run := func(f func([]*Tensor) []*Tensor, in *Tensor) *Tensor {
		if ckpt {
			return Checkpoint(f, in)[0]
		}
		return f([]*Tensor{in})[0]
	}
	h := run(block(w1), x)
	h = run(block(w2), h)
	return h.Mul(h).Sum()
}

func TestCheckpointGradientsMatchPlainBackward(t *testing.T) {
	s := NewScope()
	defer s.Close()
	grads := func(ckpt bool) ([][]float64, int) {
		calls := 0
		var out [][]float64
		WithGrad(func() {
			x := randomF64(1, 3, 4).SetRequiresGrad(true)
			w1 := randomF64(2, 4, 4).SetRequiresGrad(true)
			w2 := randomF64(3, 4, 4).SetRequiresGrad(true)
			p := randomF64(4, 4).SetRequiresGrad(true)
			checkpointNet(x, w1, w2, p, ckpt, &calls).Backward()
			for _, leaf := range []*Tensor{x, w1, w2, p} {
				g := leaf.Grad()
				if g == nil {
					t.Fatalf("checkpoint %v: a leaf has no gradient", ckpt)
				}
				out = append(out, f64s(g))
			}
		})
		return out, calls
	}
	plain, plainCalls := grads(false)
	ckpt, ckptCalls := grads(true)
	if plainCalls != 2 || ckptCalls != 4 {
		t.Fatalf("blocks ran %d times plain and %d checkpointed, want 2 and 4 (each once more in backward)", plainCalls, ckptCalls)
	}
	for i, name := range []string{"x", "w1", "w2", "p"} {
		// The same operations in the same order, except that p's gradient
		// is summed from the blocks in another order.
		assertClose(t, "grad "+name, ckpt[i], plain[i], 1e-14)
	}
}

func TestCheckpointWithoutGradIsThePlainFunction(t *testing.T) {
	s := NewScope()
	defer s.Close()
	calls := 0
	NoGrad(func() {
		x, w1, w2, p := randomF64(1, 3, 4), randomF64(2, 4, 4), randomF64(3, 4, 4), randomF64(4, 4)
		got := checkpointNet(x, w1, w2, p, true, &calls).Item()
		want := checkpointNet(x, w1, w2, p, false, &calls).Item()
		if got != want {
			t.Fatalf("checkpointed %v, plain %v", got, want)
		}
	})
	if calls != 4 {
		t.Fatalf("blocks ran %d times, want 4", calls)
	}
}

func TestCheckpointErrorsInRecomputationReachBackward(t *testing.T) {
	s := NewScope()
	defer s.Close()
	WithGrad(func() {
		w := randomF64(2, 4, 4).SetRequiresGrad(true)
		runs := 0
		y := Checkpoint(func(in []*Tensor) []*Tensor {
			runs++
			if runs == 2 {
				return []*Tensor{Linear(in[0], randomF64(5, 3, 3), nil)} // wrong shape this time
			}
			return []*Tensor{Linear(in[0], w, nil)}
		}, randomF64(1, 3, 4))[0]
		e := mustPanicError(t, func() { y.Sum().Backward() })
		if !strings.Contains(e.Msg, "checkpointed function") || !strings.Contains(e.Msg, "linear") {
			t.Fatalf("error %q does not say the checkpointed function's linear failed", e.Msg)
		}
		// The library still works after the error crossed it.
		if v := Linear(randomF64(1, 3, 4), w, nil).Sum(); v.Shape() == nil || v.Item() == 0 {
			t.Fatal("linear after the error")
		}
	})
}

func TestCheckpointFreesWhatItMade(t *testing.T) {
	Settle()
	before := LiveTensors()
	func() {
		s := NewScope()
		defer s.Close()
		calls := 0
		WithGrad(func() {
			x := randomF64(1, 3, 4).SetRequiresGrad(true)
			w1, w2, p := randomF64(2, 4, 4).SetRequiresGrad(true), randomF64(3, 4, 4), randomF64(4, 4)
			checkpointNet(x, w1, w2, p, true, &calls).Backward()
		})
	}()
	Settle()
	if after := LiveTensors(); after != before {
		t.Fatalf("live tensors %d before, %d after", before, after)
	}
}
