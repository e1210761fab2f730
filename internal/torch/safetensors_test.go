package torch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	s := NewScope()
	defer s.Close()
	path := filepath.Join(t.TempDir(), "w.safetensors")
	in := map[string]*Tensor{
		"a.weight": Randn(NewGenerator(1), 3, 5),
		"a.half":   Randn(NewGenerator(2), 4).To(Float16),
		"b.bf16":   Randn(NewGenerator(3), 2, 2).To(BFloat16),
		"ids":      New([]int64{1, -2, 3}),
		"mask":     New([]bool{true, false}),
		"strided":  Arange(0, 6, 1).Reshape(2, 3).Transpose(0, 1), // not contiguous
	}
	if err := SaveSafetensors(path, in, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.Metadata["format"] != "pt" || len(f.Header.Names()) != len(in) {
		t.Fatalf("header %+v", f.Header)
	}
	for name, want := range in {
		got, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if got.DType() != want.DType() {
			t.Fatalf("%s: dtype %v, want %v", name, got.DType(), want.DType())
		}
		assertShape(t, name, got, want.Shape()...)
		assertClose(t, name, f64s(got), f64s(want), 0)
	}
	// Tensors outlive the file handle: they hold the mapping.
	w, _ := f.Tensor("a.weight")
	f.Close()
	assertClose(t, "after close", f64s(w), f64s(in["a.weight"]), 0)
	// A write to a mapped tensor copies the page: the file is unchanged.
	w.Fill(0)
	f2, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	again, _ := f2.Tensor("a.weight")
	assertClose(t, "file unchanged", f64s(again), f64s(in["a.weight"]), 0)
	if _, err := f2.Tensor("missing"); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("missing tensor: %v", err)
	}
}

func TestSafetensorsBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenSafetensors(filepath.Join(dir, "none.safetensors")); err == nil ||
		!strings.Contains(err.Error(), "none.safetensors") {
		t.Fatalf("missing file: %v", err)
	}
	good := filepath.Join(dir, "good.safetensors")
	if err := SaveSafetensors(good, map[string]*Tensor{"x": Ones(64)}, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	for name, data := range map[string][]byte{
		"empty":     {},
		"truncated": b[:len(b)-10],
		"garbage":   []byte("this is not a safetensors file at all"),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenSafetensors(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Fatalf("stray files after writes: %v", entries)
	}
}

// TestSafetensorsReadsReferenceFiles opens every safetensors file of the
// reference data (written by another writer) and reads every tensor.
func TestSafetensorsReadsReferenceFiles(t *testing.T) {
	paths, err := filepath.Glob("../../../shared/golden/*.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	for _, pattern := range []string{"*/*.safetensors", "*/*/*.safetensors"} {
		more, _ := filepath.Glob("../../../shared/golden/" + pattern)
		paths = append(paths, more...)
	}
	if len(paths) < 10 {
		t.Fatalf("found only %d reference safetensors files under ../shared/golden", len(paths))
	}
	tensors := 0
	for _, p := range paths {
		func() {
			s := NewScope()
			defer s.Close()
			f, err := OpenSafetensors(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, name := range f.Header.Names() {
				x, err := f.Tensor(name)
				if err != nil {
					t.Fatal(err)
				}
				if x.DType().IsFloat() {
					x.Sum().Item() // touches every byte
				}
				tensors++
			}
		}()
	}
	t.Logf("%d files, %d tensors", len(paths), tensors)
}
