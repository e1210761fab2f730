// Training-time modes: autocast (mixed precision) and gradient
// checkpointing, whose backward node calls back into the caller to
// recompute what it did not keep.
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/version.h>

#include "common.h"

using lt::T;
using lt::wrap;

namespace {

// libtorch 2.4 replaced the per-device autocast functions by ones taking
// the device type; the old ones are gone in later releases.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
at::DeviceType autocast_device(int device_type) { return device_type == 1 ? at::kCUDA : at::kCPU; }
bool autocast_enabled(int d) { return at::autocast::is_autocast_enabled(autocast_device(d)); }
void set_autocast_enabled(int d, bool on) { at::autocast::set_autocast_enabled(autocast_device(d), on); }
at::ScalarType autocast_dtype(int d) { return at::autocast::get_autocast_dtype(autocast_device(d)); }
void set_autocast_dtype(int d, at::ScalarType t) { at::autocast::set_autocast_dtype(autocast_device(d), t); }
#else
bool autocast_enabled(int d) { return d == 1 ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
void set_autocast_enabled(int d, bool on) {
  if (d == 1)
    at::autocast::set_enabled(on);
  else
    at::autocast::set_cpu_enabled(on);
}
at::ScalarType autocast_dtype(int d) {
  return d == 1 ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(int d, at::ScalarType t) {
  if (d == 1)
    at::autocast::set_autocast_gpu_dtype(t);
  else
    at::autocast::set_autocast_cpu_dtype(t);
}
#endif

void check_device_type(int d) {
  if (d != 0 && d != 1) throw std::invalid_argument("autocast device type must be 0 (CPU) or 1 (CUDA), got " + std::to_string(d));
}

// The autocast state of both devices; a recomputation runs under the state
// its first run had, wherever backward happens to call it.
struct AutocastState {
  bool enabled[2];
  at::ScalarType dtype[2];

  static AutocastState current() {
    AutocastState s;
    for (int d = 0; d < 2; d++) {
      s.enabled[d] = autocast_enabled(d);
      s.dtype[d] = autocast_dtype(d);
    }
    return s;
  }
  void apply() const {
    for (int d = 0; d < 2; d++) {
      set_autocast_enabled(d, enabled[d]);
      set_autocast_dtype(d, dtype[d]);
    }
  }
};

// AutocastGuard is an autocast region of its own, as Python's
// torch.autocast opens: autocast keeps low-precision copies of trainable
// weights while any region is open on the thread and drops them when the
// last closes, so a recomputation must close what it opened, or the next
// step would read copies of weights the optimizer has since changed.
struct AutocastGuard {
  AutocastState saved = AutocastState::current();
  explicit AutocastGuard(const AutocastState &s) {
    s.apply();
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    saved.apply();
  }
};

lt_checkpoint_run run_fn = nullptr;
lt_checkpoint_release release_fn = nullptr;

void release(uintptr_t handle) {
  if (release_fn != nullptr) release_fn(handle);
}

// call runs the caller's function on xs and returns what it pushed.
std::vector<at::Tensor> call(uintptr_t handle, const std::vector<at::Tensor> &xs) {
  if (run_fn == nullptr) throw std::runtime_error("checkpoint callbacks are not set");
  std::vector<lt_tensor> hs;
  hs.reserve(xs.size());
  try {
    for (const auto &x : xs) hs.push_back(wrap(x));
  } catch (...) {
    for (auto h : hs) lt_free(h);
    throw;
  }
  std::vector<at::Tensor> ys;
  // The callee owns hs from here on, error or not.
  char *err = run_fn(handle, hs.data(), static_cast<int>(hs.size()), &ys);
  if (err != nullptr) {
    std::string msg(err);
    std::free(err);
    throw std::runtime_error(msg);
  }
  return ys;
}

// CheckpointBackward recomputes the checkpointed function with autograd on
// and back-propagates the incoming gradients through the recomputation.
// Its inputs are detached leaves there, so their gradients come back from
// the inner backward and go on through this node's edges; parameters
// accumulate theirs directly. The inner backward keeps the graphs it walks
// beyond the recomputation (tensors the function captured rather than
// received), since every checkpointed block reaches them again.
struct CheckpointBackward : public torch::autograd::Node {
  uintptr_t handle;
  std::vector<at::Tensor> inputs;  // detached, sharing version counters
  std::vector<uint32_t> versions;
  std::vector<bool> needs_grad;
  std::vector<size_t> differentiable;  // which results of the function are this node's inputs
  AutocastState autocast;
  bool released = false;

  CheckpointBackward(uintptr_t h, const std::vector<at::Tensor> &xs) : handle(h) {
    for (const auto &x : xs) {
      inputs.push_back(x.detach());
      versions.push_back(x._version());
      needs_grad.push_back(x.requires_grad());
    }
    autocast = AutocastState::current();
  }
  ~CheckpointBackward() override { release(handle); }

  std::string name() const override { return "CheckpointBackward"; }

  void release_variables() override {
    inputs.clear();
    released = true;
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list &&grads) override {
    if (released)
      throw std::runtime_error("backward through a checkpointed block a second time (retain the graph the first time)");
    std::vector<at::Tensor> xs;
    for (size_t i = 0; i < inputs.size(); i++) {
      if (inputs[i]._version() != versions[i])
        throw std::runtime_error("input " + std::to_string(i) + " of a checkpointed block was modified in place before backward");
      at::Tensor x = inputs[i].detach();
      if (needs_grad[i]) x.requires_grad_(true);
      xs.push_back(x);
    }
    std::vector<at::Tensor> ys;
    {
      at::AutoGradMode grad_on(true);
      AutocastGuard same(autocast);
      ys = call(handle, xs);
    }
    std::vector<at::Tensor> outs, gs;
    for (size_t k = 0; k < differentiable.size(); k++) {
      size_t i = differentiable[k];
      if (i >= ys.size())
        throw std::runtime_error("a checkpointed block returned fewer results when recomputed");
      if (grads[k].defined() && ys[i].requires_grad()) {
        outs.push_back(ys[i]);
        gs.push_back(grads[k]);
      }
    }
    if (!outs.empty()) torch::autograd::backward(outs, gs, /*keep_graph=*/true, /*create_graph=*/false);
    torch::autograd::variable_list result(xs.size());
    for (size_t i = 0; i < xs.size(); i++)
      if (needs_grad[i]) result[i] = xs[i].grad();
    return result;
  }
};

}  // namespace

bool lt::autocast_on() { return autocast_enabled(0) || autocast_enabled(1); }

extern "C" {

lt_error lt_autocast_enter(int device_type, int dtype, int *prev_enabled, int *prev_dtype) {
  LT_TRY check_device_type(device_type);
  at::ScalarType t = lt::scalar_type(dtype);
  if (t != at::kHalf && t != at::kBFloat16)
    throw std::invalid_argument("autocast runs in float16 or bfloat16, not " + std::string(c10::toString(t)));
  *prev_enabled = autocast_enabled(device_type);
  *prev_dtype = lt::dtype_code(autocast_dtype(device_type));
  set_autocast_enabled(device_type, true);
  set_autocast_dtype(device_type, t);
  at::autocast::increment_nesting();
  LT_CATCH
}

lt_error lt_autocast_exit(int device_type, int prev_enabled, int prev_dtype) {
  LT_TRY check_device_type(device_type);
  // The cast weights are cached only while some autocast region is open.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast_enabled(device_type, prev_enabled != 0);
  set_autocast_dtype(device_type, lt::scalar_type(prev_dtype));
  LT_CATCH
}

lt_error lt_checkpoint_callbacks(lt_checkpoint_run run, lt_checkpoint_release release) {
  LT_TRY run_fn = run;
  release_fn = release;
  LT_CATCH
}

lt_error lt_outputs_push(void *outputs, lt_tensor t) {
  LT_TRY if (outputs == nullptr) throw std::invalid_argument("outputs is NULL");
  static_cast<std::vector<at::Tensor> *>(outputs)->push_back(T(t));
  LT_CATCH
}

lt_error lt_checkpoint(uintptr_t handle, const lt_tensor *inputs, int n, lt_tensor *outs, int cap,
                       int *nout) {
  // handle is released exactly once: here, unless a backward node took it.
  struct Owner {
    uintptr_t h;
    bool owned = true;
    ~Owner() {
      if (owned) release(h);
    }
  } owner{handle};
  LT_TRY std::vector<at::Tensor> xs = lt::tensors(inputs, n);
  bool record = c10::GradMode::is_enabled();
  std::vector<at::Tensor> ys;
  {
    at::NoGradGuard no_grad;
    ys = call(handle, xs);
  }
  if (static_cast<int>(ys.size()) > cap)
    throw std::runtime_error("a checkpointed block returned " + std::to_string(ys.size()) + " results, more than " + std::to_string(cap));
  if (record) {
    auto node = std::shared_ptr<CheckpointBackward>(new CheckpointBackward(handle, xs),
                                                    torch::autograd::deleteNode);
    owner.owned = false;
    node->set_next_edges(torch::autograd::collect_next_edges(xs));
    for (size_t i = 0; i < ys.size(); i++) {
      // Detached, so that a result that is an input itself (or a view of
      // one) gets its own history.
      ys[i] = ys[i].detach();
      if (!at::isFloatingType(ys[i].scalar_type())) continue;
      node->differentiable.push_back(i);
      torch::autograd::set_history(ys[i], node);
    }
  }
  for (size_t i = 0; i < ys.size(); i++) outs[i] = nullptr;
  try {
    for (size_t i = 0; i < ys.size(); i++) outs[i] = wrap(ys[i]);
  } catch (...) {
    for (size_t i = 0; i < ys.size(); i++)
      if (outs[i] != nullptr) lt_free(outs[i]);
    throw;
  }
  *nout = static_cast<int>(ys.size());
  LT_CATCH
}

}  // extern "C"
