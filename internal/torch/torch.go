// Package torch is lcpdiff's tensor layer: a thin, safe Go face on libtorch
// through the C ABI of the shim in ./shim. It is the only package that
// knows libtorch exists.
//
// Model code reads like PyTorch: operations are methods and functions that
// return a new *Tensor and panic with a *Error when libtorch refuses them
// (a shape, dtype, device or index error). The job boundary turns that
// panic back into an ordinary error with Recover.
//
// Lifetime is explicit: a Tensor created while a Scope is open on the same
// goroutine is freed when that Scope closes, unless the Scope keeps it.
// Tensors created outside any scope are freed by Free, or by a finaliser as
// a backstop. State libtorch keeps per OS thread (grad mode) is changed only
// under runtime.LockOSThread, see NoGrad.
package torch

/*
#cgo CFLAGS: -I${SRCDIR}/shim
#cgo LDFLAGS: -L${SRCDIR}/../../build/lib -llcptorch -Wl,-rpath,${SRCDIR}/../../build/lib -Wl,-rpath,$ORIGIN -Wl,-rpath,$ORIGIN/../lib
#include <stdlib.h>
#include "lcptorch.h"
*/
import "C"

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"unsafe"
)

func init() {
	// Debian's libtorch starts with one intra-op thread; PyTorch users expect
	// all cores. OMP_NUM_THREADS, when set, wins, as it does in PyTorch.
	n := runtime.NumCPU()
	if v, err := strconv.Atoi(os.Getenv("OMP_NUM_THREADS")); err == nil && v > 0 {
		n = v
	}
	SetNumThreads(n)
}

// takeString returns a shim-allocated string and frees it.
func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	defer C.free(unsafe.Pointer(s))
	return C.GoString(s)
}

// mustLib panics with a *Error for a failed library-level call.
func mustLib(op string, err C.lt_error) {
	if err != nil {
		fail(op, err)
	}
}

// Version is the version of the libtorch the shim was built against.
func Version() string {
	var s *C.char
	mustLib("version", C.lt_version(&s))
	return takeString(s)
}

// BuildConfig is libtorch's own description of its build (at::show_config).
func BuildConfig() string {
	var s *C.char
	mustLib("build_config", C.lt_build_config(&s))
	return takeString(s)
}

// LibraryPath is the file the shim library was loaded from.
func LibraryPath() string {
	var s *C.char
	mustLib("library_path", C.lt_library_path(&s))
	path := takeString(s)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return path
}

// BLASInfo says which BLAS libtorch's matrix products run on.
type BLASInfo struct {
	Libraries       string // the BLAS libraries mapped into the process
	OpenBLASThreads int    // OpenBLAS's own pool; -1 when OpenBLAS is not the BLAS in use
	OpenBLASCore    string // the kernel set OpenBLAS chose when it loaded ("Haswell", "SkylakeX"); "" when not OpenBLAS
}

// BLAS describes the BLAS in use.
func BLAS() BLASInfo {
	var libs, core *C.char
	var n C.int
	mustLib("blas_info", C.lt_blas_info(&libs, &n, &core))
	return BLASInfo{Libraries: takeString(libs), OpenBLASThreads: int(n), OpenBLASCore: takeString(core)}
}

// MallocKeepsFreed says whether freed CPU memory stays in the process for
// the next tensor (the shim's malloc policy, shim/malloc.cpp) rather than
// going back to the kernel; false when GLIBC_TUNABLES set malloc otherwise.
func MallocKeepsFreed() bool {
	var keeps C.int
	mustLib("malloc_keeps_freed", C.lt_malloc_keeps_freed(&keeps))
	return keeps != 0
}

// CUDADeviceCount is the number of CUDA devices libtorch can use (0 on a CPU build).
func CUDADeviceCount() int {
	var n C.int
	mustLib("cuda_device_count", C.lt_cuda_device_count(&n))
	return int(n)
}

// CUDAPeakMemory is the most memory, in bytes, that tensors on CUDA device
// held since the process began or ResetCUDAPeakMemory
// (torch.cuda.max_memory_allocated); an error on a libtorch without CUDA.
func CUDAPeakMemory(device int) (int64, error) {
	var n C.int64_t
	if err := C.lt_cuda_peak_memory(C.int(device), &n); err != nil {
		return 0, errors.New("torch: " + takeError(err))
	}
	return int64(n), nil
}

// ResetCUDAPeakMemory starts CUDAPeakMemory's count afresh from what device
// holds now.
func ResetCUDAPeakMemory(device int) error {
	if err := C.lt_cuda_reset_peak_memory(C.int(device)); err != nil {
		return errors.New("torch: " + takeError(err))
	}
	return nil
}

// SetNumThreads sets libtorch's intra-op thread count, and OpenBLAS's pool to
// the same size unless OPENBLAS_NUM_THREADS is set.
func SetNumThreads(n int) {
	mustLib("set_num_threads", C.lt_set_num_threads(C.int(n)))
}

// NumThreads is libtorch's intra-op thread count.
func NumThreads() int {
	var n C.int
	mustLib("get_num_threads", C.lt_get_num_threads(&n))
	return int(n)
}

// ManualSeed seeds libtorch's default generators (CPU and CUDA).
func ManualSeed(seed uint64) {
	mustLib("manual_seed", C.lt_manual_seed(C.uint64_t(seed)))
}

// LiveTensors counts the tensor handles the shim has handed out and not yet
// freed: a test reads it to prove a loop runs at constant memory.
func LiveTensors() int64 {
	return int64(C.lt_live_tensors())
}
