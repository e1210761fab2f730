package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

var doctorFlags = []flagSpec{
	{"verbose", "v", false, "also print libtorch's full build configuration"},
}

func newDoctorCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Show the libtorch in use: version, build, CUDA devices, threads and BLAS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return doctor(cmd.OutOrStdout(), v.GetBool("verbose"))
		},
	}
	addFlags(cmd, false, doctorFlags)
	return cmd
}

func doctor(out io.Writer, verbose bool) (err error) {
	defer torch.Recover(&err)
	row := func(k, format string, a ...any) { fmt.Fprintf(out, "%-10s %s\n", k, fmt.Sprintf(format, a...)) }

	row("lcpdiff", "%s (%s, %s/%s)", lcpdiffVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	row("libtorch", "%s", torch.Version())
	row("shim", "%s", torch.LibraryPath())
	config := torch.BuildConfig()
	row("build", "%s", summariseBuild(config))
	if n := torch.CUDADeviceCount(); n > 0 {
		names := make([]string, n)
		for i := range names {
			names[i] = torch.CUDA(i).String()
		}
		row("cuda", "%d device(s): %s", n, strings.Join(names, ", "))
	} else {
		row("cuda", "not available (CPU only)")
	}
	blas := torch.BLAS()
	if blas.OpenBLASCore != "" {
		row("blas", "%s (OpenBLAS kernels: %s)", blas.Libraries, blas.OpenBLASCore)
	} else {
		row("blas", "%s", blas.Libraries)
	}
	omp := os.Getenv("OPENBLAS_NUM_THREADS")
	if omp == "" {
		omp = "unset"
	}
	threads := fmt.Sprintf("libtorch %d intra-op on %d cores", torch.NumThreads(), runtime.NumCPU())
	if blas.OpenBLASThreads >= 0 {
		threads += fmt.Sprintf("; OpenBLAS %d (OPENBLAS_NUM_THREADS=%s)", blas.OpenBLASThreads, omp)
	}
	row("threads", "%s", threads)
	if torch.MallocKeepsFreed() {
		row("malloc", "keeps freed memory for the next tensors (one arena, no trimming)")
	} else {
		row("malloc", "the C library's own policy (GLIBC_TUNABLES sets malloc, or not glibc): large freed blocks go back to the kernel and fault in again")
	}
	if strings.Contains(blas.Libraries, "/blas/libblas") {
		fmt.Fprintln(out, "warning: the reference BLAS is in use and matrix products will be slow; install libopenblas0-pthread")
	}
	if better := torch.BetterBLASCore(); better != "" {
		fmt.Fprintf(out, "warning: OpenBLAS runs its %s kernels where this CPU runs its faster %s ones: set OPENBLAS_CORETYPE=%s, or leave it unset for lcpdiff to choose\n", blas.OpenBLASCore, better, better)
	}
	if verbose {
		fmt.Fprintf(out, "\n%s\n", strings.TrimSpace(config))
	}
	return nil
}

// summariseBuild picks the lines users ask about out of at::show_config().
func summariseBuild(config string) string {
	var parts []string
	for _, line := range strings.Split(config, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "- "))
		switch {
		case strings.HasPrefix(line, "CPU capability usage:"):
			parts = append(parts, "CPU "+strings.TrimSpace(strings.TrimPrefix(line, "CPU capability usage:")))
		case strings.HasPrefix(line, "Intel(R) MKL-DNN"), strings.HasPrefix(line, "Intel(R) oneDNN"):
			parts = append(parts, "oneDNN")
		case strings.HasPrefix(line, "OpenMP"):
			parts = append(parts, "OpenMP")
		case strings.HasPrefix(line, "CUDA Runtime"):
			parts = append(parts, line)
		case strings.HasPrefix(line, "CuDNN"):
			parts = append(parts, line)
		}
	}
	for _, kv := range strings.Split(config, ",") {
		kv = strings.TrimSpace(kv)
		if i := strings.Index(kv, "BLAS_INFO="); i >= 0 {
			kv = kv[i:]
		}
		if strings.HasPrefix(kv, "USE_CUDA=") || strings.HasPrefix(kv, "BLAS_INFO=") {
			parts = append(parts, kv)
		}
	}
	return strings.Join(parts, ", ")
}
