package train

import (
	"os"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TestMain runs libtorch on one thread: the tiny model gains nothing from
// a second, and on a shared two-core machine OpenMP's barriers make steps
// take anywhere from 0.1 s to seconds.
func TestMain(m *testing.M) {
	torch.SetNumThreads(1)
	os.Exit(m.Run())
}
