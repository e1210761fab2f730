package train

import (
	"os"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TestMain runs libtorch on one thread: the tiny model gains nothing from
// a second, and on a shared two-core machine OpenMP's barriers make steps
// take anywhere from 0.1 s to seconds. The benchmarks run OpenBLAS's
// kernels as the binary would (UseFastBLASKernels).
func TestMain(m *testing.M) {
	if err := torch.UseFastBLASKernels(); err != nil {
		panic(err)
	}
	torch.SetNumThreads(1)
	os.Exit(m.Run())
}
