package torch

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestBetterBLASCore(t *testing.T) {
	for _, c := range []struct {
		loaded string
		units  vectorUnits
		want   string
	}{
		{"Prescott", vectorUnits{avx512: true, avx2: true}, "SkylakeX"},
		{"Prescott", vectorUnits{avx2: true}, "Haswell"},
		{"Prescott", vectorUnits{}, ""},                        // an old CPU: the fallback is right
		{"Zen", vectorUnits{avx512: true, avx2: true}, ""},     // OpenBLAS knew the CPU
		{"Haswell", vectorUnits{avx512: true, avx2: true}, ""}, // nor second-guessed when it chose older kernels itself
		{"", vectorUnits{avx512: true, avx2: true}, ""},        // not OpenBLAS
	} {
		if got := betterBLASCore(c.loaded, c.units); got != c.want {
			t.Errorf("betterBLASCore(%q, %+v) = %q, want %q", c.loaded, c.units, got, c.want)
		}
	}
}

// TestUseFastBLASKernels runs this test binary again as a child that calls
// UseFastBLASKernels and reports the kernels OpenBLAS then runs, and the
// OPENBLAS_CORETYPE it sees, which only a re-execution can have set when
// the test did not: the child re-executes itself exactly when OpenBLAS
// loaded the fallback kernels on a CPU that runs newer ones, and a user's
// OPENBLAS_CORETYPE stands.
func TestUseFastBLASKernels(t *testing.T) {
	if os.Getenv("LCPDIFF_BLAS_CHILD") != "" {
		if err := UseFastBLASKernels(); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("core=%s env=%s\n", BLAS().OpenBLASCore, os.Getenv("OPENBLAS_CORETYPE"))
		return
	}
	child := func(coretype string) (core, env string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestUseFastBLASKernels$", "-test.v")
		cmd.Env = []string{"LCPDIFF_BLAS_CHILD=1"}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "OPENBLAS_CORETYPE=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if coretype != "" {
			cmd.Env = append(cmd.Env, "OPENBLAS_CORETYPE="+coretype)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child (OPENBLAS_CORETYPE=%q): %v\n%s", coretype, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(line, "core="); ok {
				core, env, _ = strings.Cut(rest, " env=")
				return core, env
			}
		}
		t.Fatalf("child (OPENBLAS_CORETYPE=%q) reported no core:\n%s", coretype, out)
		return "", ""
	}

	host := hostVectorUnits()
	core, env := child("")
	switch {
	case env == "" && betterBLASCore(core, host) != "":
		t.Fatalf("OpenBLAS runs its %s kernels on a CPU that runs %s: UseFastBLASKernels did not re-execute", core, betterBLASCore(core, host))
	case env != "" && (env != betterBLASCore(blasFallbackCore, host) || core != env):
		t.Fatalf("re-executed with OPENBLAS_CORETYPE=%s, running %q kernels; want %q", env, core, betterBLASCore(blasFallbackCore, host))
	}
	t.Logf("OpenBLAS kernels: %q (re-executed: %v)", core, env != "")
	if core == "" {
		return // not OpenBLAS: nothing to choose
	}
	if core, env := child(blasFallbackCore); core != blasFallbackCore || env != blasFallbackCore {
		t.Fatalf("with OPENBLAS_CORETYPE=%s set by the user, OpenBLAS runs %q kernels (OPENBLAS_CORETYPE=%q)", blasFallbackCore, core, env)
	}
}
