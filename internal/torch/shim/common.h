// Shared helpers of the shim's translation units: handle types, conversions
// between this ABI's codes and ATen's, and the try/catch that keeps every C++
// exception on this side of the boundary.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "lcptorch.h"

struct lt_tensor_s {
  at::Tensor t;
};

struct lt_generator_s {
  at::Generator g;
};

namespace lt {

extern std::atomic<int64_t> live;

// The intra-op thread count the caller asked for (0: not set). OpenMP keeps
// it per OS thread, and Go calls in from whichever thread runs the
// goroutine, so every call applies it to its own thread once.
extern std::atomic<int> wanted_threads;
void apply_threads(int n);

// applied_threads is what this OS thread was given; initial-exec TLS (the
// shim is linked at start-up, never dlopen'ed) makes reading it one load,
// where the default model calls __tls_get_addr on every op.
extern thread_local int applied_threads __attribute__((tls_model("initial-exec")));

inline void ensure_threads() {
  int n = wanted_threads.load(std::memory_order_relaxed);
  if (n != applied_threads && n > 0) {
    apply_threads(n);
    applied_threads = n;
  }
}

// Whether autocast is on for the CPU or CUDA on this thread (training.cpp).
bool autocast_on();

inline lt_tensor wrap(at::Tensor t) {
  if (!t.defined()) throw std::runtime_error("operation returned an undefined tensor");
  auto *h = new lt_tensor_s{std::move(t)};
  live.fetch_add(1, std::memory_order_relaxed);
  return h;
}

inline const at::Tensor &T(lt_tensor h) {
  if (h == nullptr) throw std::invalid_argument("tensor handle is NULL (freed tensor?)");
  return h->t;
}

// An optional argument: NULL means "not given".
inline c10::optional<at::Tensor> opt(lt_tensor h) {
  if (h == nullptr) return c10::nullopt;
  return h->t;
}

inline at::IntArrayRef ints(const int64_t *p, int n) { return at::IntArrayRef(p, n); }

at::ScalarType scalar_type(int dtype);
int dtype_code(at::ScalarType st);
at::Device device(int type, int index);
char *dup(const char *s);
char *error_line(const char *s);
std::vector<at::Tensor> tensors(const lt_tensor *hs, int n);

}  // namespace lt

// The body of every ABI function sits between LT_TRY and LT_CATCH.
#define LT_TRY \
  try {        \
    lt::ensure_threads();
#define LT_CATCH                                                   \
  }                                                                \
  catch (const c10::Error &e) {                                    \
    return lt::error_line(e.what_without_backtrace());                    \
  }                                                                \
  catch (const std::exception &e) {                                \
    return lt::error_line(e.what());                                      \
  }                                                                \
  catch (...) {                                                    \
    return lt::error_line("unknown C++ exception");                       \
  }                                                                \
  return nullptr;
