// The process's malloc policy, set as the shim loads.
//
// libtorch's CPU tensors come from malloc, and a step frees and allocates
// the same large blocks over and over. With glibc's defaults large blocks
// went back to the kernel when freed (those over 32 MiB are always mmap'd
// and unmapped; the per-thread arenas that cgo calls land in trim their
// heaps), so every step faulted its working set in again, page by page,
// each page cleared by the kernel first: SD 1.5's UNet forward on the CPU
// took 4.8x as long, the toy model's training step at 128 px 3x (README,
// "Memory allocation"). Keeping freed memory in the process removes that:
// one arena, no mmap'd blocks, no trimming (-1 turns it off, as mallopt(3)
// documents). The memory a process holds is then its peak, which is what a
// step at constant memory holds anyway.
//
// It runs as a constructor because an arena limit binds only threads that
// have not allocated yet: here no thread but the loader's has. A user who
// sets any glibc.malloc tunable (GLIBC_TUNABLES) keeps theirs instead.
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "lcptorch.h"

namespace {

int kept = 0;

__attribute__((constructor)) void keep_freed_memory() {
#ifdef __GLIBC__
  const char *tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return;
  // Each call fails only on a value out of range; these are in range on
  // every glibc since 2.10 (M_ARENA_MAX).
  kept = mallopt(M_ARENA_MAX, 1) && mallopt(M_MMAP_MAX, 0) && mallopt(M_TRIM_THRESHOLD, -1);
#endif
}

}  // namespace

extern "C" {

lt_error lt_malloc_keeps_freed(int *keeps) {
  *keeps = kept;
  return nullptr;
}

}  // extern "C"
