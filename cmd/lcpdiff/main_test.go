package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "libtorch "+torch.Version()) || !strings.Contains(out, "lcpdiff ") {
		t.Fatalf("version output:\n%s", out)
	}
}

func TestDoctor(t *testing.T) {
	out, err := run(t, "doctor")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"libtorch   " + torch.Version(), "liblcptorch.so", "cuda", "blas", "threads"} {
		if !strings.Contains(out, want) {
			t.Fatalf("doctor output lacks %q:\n%s", want, out)
		}
	}
	// This process did not re-execute itself (only main does), so where
	// OpenBLAS fell back to old kernels doctor says how to get the CPU's.
	if better := torch.BetterBLASCore(); strings.Contains(out, "OPENBLAS_CORETYPE=") != (better != "") {
		t.Errorf("OpenBLAS could run %q kernels, and doctor says:\n%s", better, out)
	}
	verbose, err := run(t, "doctor", "-v")
	if err != nil || !strings.Contains(verbose, "PyTorch built with") {
		t.Fatalf("doctor -v: %v\n%s", err, verbose)
	}
}

func TestThreadsFromFlagAndConfig(t *testing.T) {
	defer torch.SetNumThreads(torch.NumThreads())
	out, err := run(t, "--threads", "1", "doctor")
	if err != nil || !strings.Contains(out, "libtorch 1 intra-op") {
		t.Fatalf("--threads 1: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("threads: 2\nverbose: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "--config", cfg, "doctor")
	if err != nil || !strings.Contains(out, "libtorch 2 intra-op") || !strings.Contains(out, "PyTorch built with") {
		t.Fatalf("config file: %v\n%s", err, out)
	}
	// The command line wins over the file.
	out, err = run(t, "--config", cfg, "--threads", "1", "doctor")
	if err != nil || !strings.Contains(out, "libtorch 1 intra-op") {
		t.Fatalf("flag over config: %v\n%s", err, out)
	}
}

func TestBadInvocations(t *testing.T) {
	for _, args := range [][]string{
		{"--threads", "-1", "doctor"},
		{"--config", "/nonexistent/lcpdiff.yaml", "doctor"},
		{"frobnicate"},
		{"version", "extra"},
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("lcpdiff %v succeeded", args)
		}
	}
	_, err := run(t, "--config", "/nonexistent/lcpdiff.yaml", "doctor")
	if !strings.Contains(err.Error(), "/nonexistent/lcpdiff.yaml") {
		t.Errorf("config error does not name the file: %v", err)
	}
}
