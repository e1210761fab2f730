// Autograd, random generators and libtorch's AdamW.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>

#include <mutex>
#include <sstream>

#include "common.h"

using lt::T;
using lt::wrap;

struct lt_optimizer_s {
  std::unique_ptr<torch::optim::AdamW> adamw;
};

namespace {

torch::optim::AdamW &adamw(lt_optimizer o) {
  if (o == nullptr || !o->adamw) throw std::invalid_argument("optimizer handle is NULL");
  return *o->adamw;
}

at::Generator &generator(lt_generator g) {
  if (g == nullptr) throw std::invalid_argument("generator handle is NULL");
  return g->g;
}

}  // namespace

extern "C" {

lt_error lt_set_requires_grad(lt_tensor t, int requires_grad) {
  LT_TRY T(t).requires_grad_(requires_grad != 0);
  LT_CATCH
}

lt_error lt_detach(lt_tensor t, lt_tensor *out) {
  LT_TRY *out = wrap(T(t).detach());
  LT_CATCH
}

lt_error lt_backward(lt_tensor t, lt_tensor grad, int retain_graph) {
  LT_TRY at::Tensor g = grad ? T(grad) : at::Tensor();
  T(t).backward(g, retain_graph != 0, /*create_graph=*/false);
  LT_CATCH
}

lt_error lt_grad(lt_tensor t, lt_tensor *out) {
  LT_TRY const at::Tensor &g = T(t).grad();
  *out = g.defined() ? wrap(g) : nullptr;
  LT_CATCH
}

lt_error lt_zero_grad(lt_tensor t) {
  LT_TRY T(t).mutable_grad() = at::Tensor();
  LT_CATCH
}

lt_error lt_autograd_grad(const lt_tensor *outputs, int nout, const lt_tensor *grad_outputs,
                          const lt_tensor *inputs, int nin, int retain_graph, int create_graph,
                          lt_tensor *outs) {
  LT_TRY std::vector<at::Tensor> go;
  if (grad_outputs != nullptr) go = lt::tensors(grad_outputs, nout);
  auto grads = torch::autograd::grad(lt::tensors(outputs, nout), lt::tensors(inputs, nin), go,
                                     retain_graph != 0, create_graph != 0, /*allow_unused=*/true);
  for (int i = 0; i < nin; i++) outs[i] = grads[i].defined() ? wrap(grads[i]) : nullptr;
  LT_CATCH
}

lt_error lt_generator_new(uint64_t seed, lt_generator *out) {
  LT_TRY *out = new lt_generator_s{at::make_generator<at::CPUGeneratorImpl>(seed)};
  LT_CATCH
}

void lt_generator_free(lt_generator g) { delete g; }

lt_error lt_generator_get_state(lt_generator g, lt_tensor *out) {
  LT_TRY at::Generator &gen = generator(g);
  std::lock_guard<std::mutex> lock(gen.mutex());
  *out = wrap(gen.get_state());
  LT_CATCH
}

lt_error lt_generator_set_state(lt_generator g, lt_tensor state) {
  LT_TRY at::Generator &gen = generator(g);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(T(state));
  LT_CATCH
}

lt_error lt_adamw_new(const lt_tensor *params, int n, double lr, double beta1, double beta2, double eps,
                      double weight_decay, int amsgrad, lt_optimizer *out) {
  LT_TRY torch::optim::AdamWOptions o(lr);
  o.betas(std::make_tuple(beta1, beta2)).eps(eps).weight_decay(weight_decay).amsgrad(amsgrad != 0);
  auto opt = std::make_unique<torch::optim::AdamW>(lt::tensors(params, n), o);
  *out = new lt_optimizer_s{std::move(opt)};
  LT_CATCH
}

void lt_optimizer_free(lt_optimizer o) { delete o; }

lt_error lt_optimizer_step(lt_optimizer o) {
  LT_TRY adamw(o).step();
  LT_CATCH
}

lt_error lt_optimizer_zero_grad(lt_optimizer o) {
  LT_TRY
  // set_to_none, as PyTorch 2.x does by default: no zero tensors to allocate or add.
  for (auto &group : adamw(o).param_groups())
    for (auto &p : group.params()) p.mutable_grad() = at::Tensor();
  LT_CATCH
}

lt_error lt_optimizer_set_lr(lt_optimizer o, double lr) {
  LT_TRY for (auto &group : adamw(o).param_groups())
      static_cast<torch::optim::AdamWOptions &>(group.options()).lr(lr);
  LT_CATCH
}

lt_error lt_optimizer_save(lt_optimizer o, void **data, int64_t *size) {
  LT_TRY torch::serialize::OutputArchive archive;
  adamw(o).save(archive);
  std::ostringstream os;
  archive.save_to(os);
  std::string bytes = os.str();
  void *buf = std::malloc(bytes.size() > 0 ? bytes.size() : 1);
  if (buf == nullptr) throw std::bad_alloc();
  std::memcpy(buf, bytes.data(), bytes.size());
  *data = buf;
  *size = static_cast<int64_t>(bytes.size());
  LT_CATCH
}

lt_error lt_optimizer_load(lt_optimizer o, const void *data, int64_t size) {
  LT_TRY torch::serialize::InputArchive archive;
  archive.load_from(static_cast<const char *>(data), static_cast<size_t>(size));
  adamw(o).load(archive);
  LT_CATCH
}

}  // extern "C"
