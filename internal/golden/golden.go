// Package golden finds the reference data that tests compare against:
// ../shared/golden beside the repository, or $LCPDIFF_GOLDEN. A missing
// directory fails the test (never a skip: CI must not pass without it).
package golden

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Dir is the golden data directory.
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("LCPDIFF_GOLDEN"); d != "" {
		return mustDir(t, d)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// Walk up to the module root (go.mod), then step beside it.
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return mustDir(t, filepath.Join(d, "..", "shared", "golden"))
		}
		if filepath.Dir(d) == d {
			t.Fatalf("golden: no go.mod above %s", wd)
		}
	}
}

func mustDir(t testing.TB, d string) string {
	t.Helper()
	if st, err := os.Stat(d); err != nil || !st.IsDir() {
		t.Fatalf("golden: reference data not found at %s (set LCPDIFF_GOLDEN): %v", d, err)
	}
	return d
}

// Path joins parts under Dir.
func Path(t testing.TB, parts ...string) string {
	t.Helper()
	return filepath.Join(append([]string{Dir(t)}, parts...)...)
}

// File opens a golden safetensors file; it is closed when the test ends.
func File(t testing.TB, parts ...string) *torch.SafetensorsFile {
	t.Helper()
	f, err := torch.OpenSafetensors(Path(t, parts...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// Tensor reads one tensor of a golden file.
func Tensor(t testing.TB, f *torch.SafetensorsFile, name string) *torch.Tensor {
	t.Helper()
	x, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// Compare reports the largest absolute and relative (to the largest |want|)
// difference between got and want, and fails when the absolute one exceeds
// atol. It logs both, so test output carries the parity numbers.
func Compare(t testing.TB, name string, got, want *torch.Tensor, atol float64) (maxAbs, maxRel float64) {
	t.Helper()
	gs, ws := got.Shape(), want.Shape()
	if len(gs) != len(ws) {
		t.Fatalf("%s: shape %v, want %v", name, gs, ws)
	}
	for i := range gs {
		if gs[i] != ws[i] {
			t.Fatalf("%s: shape %v, want %v", name, gs, ws)
		}
	}
	g, w := got.Float64s(), want.Float64s()
	scale := 0.0
	for i := range g {
		d := g[i] - w[i]
		if d < 0 {
			d = -d
		}
		if d > maxAbs || d != d {
			maxAbs = d
		}
		if a := abs(w[i]); a > scale {
			scale = a
		}
	}
	if scale > 0 {
		maxRel = maxAbs / scale
	}
	t.Logf("%-50s max abs %.3g  rel %.3g", name, maxAbs, maxRel)
	if !(maxAbs <= atol) {
		t.Errorf("%s: max abs error %.3g > atol %.3g", name, maxAbs, atol)
	}
	return maxAbs, maxRel
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
