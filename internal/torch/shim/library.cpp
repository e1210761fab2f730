// Library-wide state: versions, threads, seeds, grad mode, live tensors,
// and the conversions common.h declares.
#include <dlfcn.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <torch/version.h>
#ifdef LT_WITH_CUDA_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <fstream>

#include "common.h"

namespace lt {

std::atomic<int64_t> live{0};
std::atomic<int> wanted_threads{0};
thread_local int applied_threads __attribute__((tls_model("initial-exec"))) = 0;

void apply_threads(int n) { at::set_num_threads(n); }

at::ScalarType scalar_type(int dtype) {
  switch (dtype) {
    case LT_F32: return at::kFloat;
    case LT_F16: return at::kHalf;
    case LT_BF16: return at::kBFloat16;
    case LT_F64: return at::kDouble;
    case LT_I64: return at::kLong;
    case LT_I32: return at::kInt;
    case LT_BOOL: return at::kBool;
    case LT_U8: return at::kByte;
    case LT_I8: return at::kChar;
    case LT_I16: return at::kShort;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(dtype));
}

int dtype_code(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return LT_F32;
    case at::kHalf: return LT_F16;
    case at::kBFloat16: return LT_BF16;
    case at::kDouble: return LT_F64;
    case at::kLong: return LT_I64;
    case at::kInt: return LT_I32;
    case at::kBool: return LT_BOOL;
    case at::kByte: return LT_U8;
    case at::kChar: return LT_I8;
    case at::kShort: return LT_I16;
    default: break;
  }
  throw std::invalid_argument(std::string("dtype not supported by lcpdiff: ") + c10::toString(st));
}

at::Device device(int type, int index) {
  switch (type) {
    case LT_CPU: return at::Device(at::kCPU);
    case LT_CUDA: return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw std::invalid_argument("unknown device type code " + std::to_string(type));
}

char *dup(const char *s) {
  size_t n = std::strlen(s);
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out != nullptr) std::memcpy(out, s, n + 1);
  return out;
}

char *error_line(const char *s) {
  // Some libtorch messages span lines; an error is one line on the Go side.
  size_t n = std::strlen(s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out == nullptr) return nullptr;
  for (size_t i = 0; i < n; i++) out[i] = (s[i] == '\n') ? ' ' : s[i];
  out[n] = 0;
  return out;
}

std::vector<at::Tensor> tensors(const lt_tensor *hs, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(T(hs[i]));
  return v;
}

}  // namespace lt

extern "C" {

void lt_error_free(char *err) { std::free(err); }
void lt_buffer_free(void *buf) { std::free(buf); }

int64_t lt_live_tensors(void) { return lt::live.load(std::memory_order_relaxed); }

lt_error lt_version(char **out) {
  LT_TRY *out = lt::dup(TORCH_VERSION);
  LT_CATCH
}

lt_error lt_build_config(char **out) {
  LT_TRY *out = lt::dup(at::show_config().c_str());
  LT_CATCH
}

lt_error lt_library_path(char **out) {
  LT_TRY Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&lt_library_path), &info) == 0 || info.dli_fname == nullptr)
    throw std::runtime_error("dladdr could not name the shim library");
  *out = lt::dup(info.dli_fname);
  LT_CATCH
}

lt_error lt_blas_info(char **library, int *openblas_threads, char **openblas_core) {
  LT_TRY
  // The BLAS actually mapped into the process: Debian picks it through
  // alternatives, so the build configuration alone cannot tell.
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    if (path.find("blas") != std::string::npos || path.find("libmkl") != std::string::npos) {
      if (found.find(path) == std::string::npos) found += (found.empty() ? "" : ", ") + path;
    }
  }
  *library = lt::dup(found.empty() ? "none mapped" : found.c_str());
  *openblas_threads = -1;
  using get_threads = int (*)();
  if (auto fn = reinterpret_cast<get_threads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads")))
    *openblas_threads = fn();
  using get_core = char *(*)();
  auto core = reinterpret_cast<get_core>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  *openblas_core = lt::dup(core != nullptr ? core() : "");
  LT_CATCH
}

lt_error lt_cuda_device_count(int *count) {
  LT_TRY *count = static_cast<int>(torch::cuda::device_count());
  LT_CATCH
}

// The CUDA caching allocator's peak of bytes held by tensors, as
// torch.cuda.max_memory_allocated reads it (statistic 0 is the aggregate
// over its pools). Only a CUDA libtorch has the allocator; elsewhere these
// say so.
#ifdef LT_WITH_CUDA_STATS
static c10::DeviceIndex cuda_stats_device(int device) {
  if (device < 0 || device >= static_cast<int>(torch::cuda::device_count()))
    throw std::invalid_argument("no CUDA device " + std::to_string(device) + " (" +
                                std::to_string(torch::cuda::device_count()) + " present)");
  return static_cast<c10::DeviceIndex>(device);
}
#endif

lt_error lt_cuda_peak_memory(int device, int64_t *bytes) {
  LT_TRY
#ifdef LT_WITH_CUDA_STATS
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_stats_device(device));
  *bytes = stats.allocated_bytes[0].peak;
#else
  (void)device;
  (void)bytes;
  throw std::runtime_error("CUDA memory statistics: the shim was built without them (a libtorch without CUDA, or its allocator's statistics did not compile)");
#endif
  LT_CATCH
}

lt_error lt_cuda_reset_peak_memory(int device) {
  LT_TRY
#ifdef LT_WITH_CUDA_STATS
  c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_stats_device(device));
#else
  (void)device;
  throw std::runtime_error("CUDA memory statistics: the shim was built without them (a libtorch without CUDA, or its allocator's statistics did not compile)");
#endif
  LT_CATCH
}

// at::set_num_threads leaves OpenBLAS's own pool alone, sized to every core,
// whose workers busy-wait between calls: a one-thread process kept a second
// core spinning, and two one-thread data-parallel ranks on two cores trained
// at about half speed (2 x 3.1 samples/s against 2 x 5.6 on the toy LCP
// step). So the BLAS pool follows the intra-op count, unless the user sized
// it with OPENBLAS_NUM_THREADS, which OpenBLAS documents as its knob. The
// pool is process-wide, so it is sized here once, not per OS thread as
// libtorch's count is (ensure_threads).
lt_error lt_set_num_threads(int n) {
  LT_TRY if (n < 1) throw std::invalid_argument("thread count must be at least 1");
  lt::wanted_threads.store(n, std::memory_order_relaxed);
  lt::ensure_threads();
  using set_threads = void (*)(int);
  if (auto openblas = reinterpret_cast<set_threads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
      openblas != nullptr && std::getenv("OPENBLAS_NUM_THREADS") == nullptr)
    openblas(n);
  LT_CATCH
}

lt_error lt_get_num_threads(int *n) {
  LT_TRY *n = at::get_num_threads();
  LT_CATCH
}

lt_error lt_manual_seed(uint64_t seed) {
  LT_TRY torch::manual_seed(seed);
  LT_CATCH
}

lt_error lt_set_grad_enabled(int enabled, int *previous) {
  LT_TRY *previous = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(enabled != 0);
  LT_CATCH
}

lt_error lt_is_grad_enabled(int *enabled) {
  LT_TRY *enabled = c10::GradMode::is_enabled();
  LT_CATCH
}

}  // extern "C"
