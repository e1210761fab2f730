package torch

import (
	"os"
	"testing"
)

// OpenBLAS keeps its own thread pool; left at every core, its busy-waiting
// workers halved the throughput of one-thread data-parallel ranks, so
// SetNumThreads sizes it too (unless OPENBLAS_NUM_THREADS says otherwise).
func TestOpenBLASFollowsThreadCount(t *testing.T) {
	defer SetNumThreads(NumThreads())
	before := BLAS().OpenBLASThreads
	for _, n := range []int{1, 2, 1} {
		SetNumThreads(n)
		if got := NumThreads(); got != n {
			t.Fatalf("SetNumThreads(%d): libtorch has %d intra-op threads", n, got)
		}
		got := BLAS().OpenBLASThreads
		want := n
		switch {
		case before < 0:
			want = -1 // not OpenBLAS: no pool of its own to size
		case os.Getenv("OPENBLAS_NUM_THREADS") != "":
			want = before // the user's size stands
		}
		if got != want {
			t.Fatalf("SetNumThreads(%d): OpenBLAS has %d threads, want %d", n, got, want)
		}
	}
}
