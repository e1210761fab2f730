package torch

import (
	"os"
	"syscall"
	"testing"
)

// A step's large temporaries must come from memory the process already
// holds (shim/malloc.cpp). With glibc's defaults a block over 32 MiB is
// always mmap'd and unmapped again when freed, so every step faults it in
// page by page; smaller ones do so when a thread's heap is trimmed.
func TestFreedMemoryIsReused(t *testing.T) {
	if !MallocKeepsFreed() {
		t.Fatalf("the shim did not set malloc's policy (GLIBC_TUNABLES=%q)", os.Getenv("GLIBC_TUNABLES"))
	}
	minorFaults := func() int64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return ru.Minflt
	}
	const elems = 10 << 20 // 40 MiB of float32 a tensor
	g := NewGenerator(0)
	step := func() {
		s := NewScope()
		defer s.Close()
		x := Randn(g, elems)
		x.Mul(x).Add(x)
	}
	// The first steps fault their memory in, and the heap may grow for a few
	// more (libtorch's 64-byte-aligned blocks fit only in free ones a little
	// larger than themselves) before it settles.
	for range 10 {
		step()
	}
	before := minorFaults()
	const steps = 10
	for range steps {
		step()
	}
	faults := (minorFaults() - before) / steps
	touched := int64(3 * elems * 4 / os.Getpagesize())
	if faults > touched/10 {
		t.Fatalf("%d page faults a step that writes %d pages: freed memory went back to the kernel", faults, touched)
	}
	t.Logf("%d page faults a step that writes %d pages", faults, touched)
}
