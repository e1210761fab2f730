package torch

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/cpu"
)

// OpenBLAS picks its kernels once, as it loads, from the CPU's model
// number. A release older than the CPU does not know the model and falls
// back to its Prescott (SSE3) kernels: Debian 12's OpenBLAS 0.3.21 does so
// on a fifth-generation Xeon (family 6, model 207), where the toy model's
// training step then ran at half the speed of the SkylakeX kernels that CPU
// runs (2.2 against 4.2 samples/s; sgemm is most of a step). The
// OPENBLAS_CORETYPE variable names the kernels instead, but OpenBLAS reads
// it only while loading, before main runs: hence a re-execution.

// blasFallbackCore is what OpenBLAS's dynamic dispatch loads for a CPU model
// it does not know.
const blasFallbackCore = "Prescott"

// vectorUnits is what of the CPU's instruction set decides the kernels.
type vectorUnits struct {
	avx512 bool // AVX-512 F, CD, BW, DQ and VL, with the OS saving their state
	avx2   bool // AVX2 and FMA
}

func hostVectorUnits() vectorUnits {
	x := cpu.X86
	return vectorUnits{
		avx512: x.HasAVX512F && x.HasAVX512CD && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL,
		avx2:   x.HasAVX2 && x.HasFMA,
	}
}

// betterBLASCore is the OPENBLAS_CORETYPE to ask for when OpenBLAS loaded
// the kernels named loaded, or "" to keep them: a core OpenBLAS detected
// itself is kept, as is the fallback on a CPU that runs nothing newer.
func betterBLASCore(loaded string, v vectorUnits) string {
	if loaded != blasFallbackCore {
		return ""
	}
	switch {
	case v.avx512:
		return "SkylakeX"
	case v.avx2:
		return "Haswell"
	}
	return ""
}

// BetterBLASCore is the OPENBLAS_CORETYPE this CPU could run faster than
// the kernels OpenBLAS runs now, or "" when they are the right ones (or the
// BLAS is not OpenBLAS).
func BetterBLASCore() string {
	return betterBLASCore(BLAS().OpenBLASCore, hostVectorUnits())
}

// UseFastBLASKernels re-executes the program with OPENBLAS_CORETYPE set when
// OpenBLAS fell back to kernels older than the CPU. It returns only when
// there was nothing to do, or with the error of a re-execution that failed
// (the program may go on, slower). A user's OPENBLAS_CORETYPE stands, which
// also ends the re-execution after one round. Call it first in main, before
// the program has done anything it would do twice.
func UseFastBLASKernels() error {
	if _, set := os.LookupEnv("OPENBLAS_CORETYPE"); set {
		return nil
	}
	core := BetterBLASCore()
	if core == "" {
		return nil
	}
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, append(os.Environ(), "OPENBLAS_CORETYPE="+core))
	}
	return fmt.Errorf("torch: OpenBLAS loaded its %s kernels, and re-running with its %s kernels failed: %w", blasFallbackCore, core, err)
}
