package train

import (
	"math"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// withGrads makes leaves whose gradients are the given values, and one
// leaf without a gradient.
func withGrads(t *testing.T, values ...[]float32) []*torch.Tensor {
	t.Helper()
	var params []*torch.Tensor
	torch.WithGrad(func() {
		var loss *torch.Tensor
		for _, v := range values {
			p := torch.Zeros(int64(len(v))).SetRequiresGrad(true)
			term := p.Mul(torch.New(v)).Sum() // d term / d p = v
			if loss == nil {
				loss = term
			} else {
				loss = loss.Add(term)
			}
			params = append(params, p)
		}
		loss.Backward()
	})
	return append(params, torch.Zeros(2).SetRequiresGrad(true))
}

func TestClipGradNormScalesToTheCap(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	params := withGrads(t, []float32{3, 4}, []float32{12})
	norm := clipGradNorm(params, 6.5)
	if math.Abs(norm-13) > 1e-5 {
		t.Fatalf("norm %g, want 13", norm)
	}
	coef := float32(6.5 / (13 + 1e-6))
	for i, want := range [][]float32{{3 * coef, 4 * coef}, {12 * coef}} {
		got := params[i].Grad().Float32s()
		for j := range want {
			if math.Abs(float64(got[j]-want[j])) > 1e-6 {
				t.Errorf("grad %d = %v, want %v", i, got, want)
			}
		}
	}
	if params[2].Grad() != nil {
		t.Error("a parameter without a gradient got one")
	}
	if again := clipGradNorm(params, 0); math.Abs(again-6.5) > 1e-5 {
		t.Errorf("norm after clipping %g, want 6.5", again)
	}
}

func TestClipGradNormLeavesSmallGradients(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	params := withGrads(t, []float32{0.3, 0.4})
	if norm := clipGradNorm(params, 1); math.Abs(norm-0.5) > 1e-6 {
		t.Errorf("norm %g, want 0.5", norm)
	}
	if got := params[0].Grad().Float32s(); got[0] != 0.3 || got[1] != 0.4 {
		t.Errorf("grad %v changed under the cap", got)
	}
	if norm := clipGradNorm(params[1:], 1); norm != 0 {
		t.Errorf("norm without gradients %g", norm)
	}
}
