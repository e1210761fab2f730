package torch

import (
	"math"
	"testing"
)

// assertClose fails unless got and want agree elementwise within tol
// (absolute plus relative).
func assertClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); d > tol*(1+math.Abs(want[i])) || math.IsNaN(got[i]) {
			t.Fatalf("%s[%d] = %.9g, want %.9g (|diff| %.3g > tol %.3g)", what, i, got[i], want[i], d, tol)
		}
	}
}

func assertShape(t *testing.T, what string, x *Tensor, want ...int64) {
	t.Helper()
	got := x.Shape()
	if len(got) != len(want) {
		t.Fatalf("%s: shape %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: shape %v, want %v", what, got, want)
		}
	}
}

func f64s(x *Tensor) []float64 { return x.Float64s() }

// randomF64 is a deterministic f64 tensor for numerical checks.
func randomF64(seed uint64, shape ...int64) *Tensor {
	return Options{DType: Float64}.Randn(NewGenerator(seed), shape...)
}

// mustPanicError runs f and returns the *Error it panicked with; it fails
// the test when f returns normally.
func mustPanicError(t *testing.T, f func()) *Error {
	t.Helper()
	err := Try(f)
	if err == nil {
		t.Fatal("expected a *torch.Error, the call succeeded")
	}
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("expected a *torch.Error, got %T %v", err, err)
	}
	return e
}
