// Tensors: lifetime, metadata, creation, host copies and shape operations.
#include "common.h"

using lt::ints;
using lt::T;
using lt::wrap;

namespace {

at::TensorOptions options(int dtype, int device_type, int device_index) {
  return at::TensorOptions().dtype(lt::scalar_type(dtype)).device(lt::device(device_type, device_index));
}

void check_nbytes(const at::Tensor &t, int64_t nbytes) {
  if (static_cast<int64_t>(t.nbytes()) != nbytes)
    throw std::invalid_argument("buffer holds " + std::to_string(nbytes) + " bytes, tensor " +
                                std::to_string(t.nbytes()));
}

}  // namespace

extern "C" {

void lt_free(lt_tensor t) {
  if (t == nullptr) return;
  delete t;
  lt::live.fetch_sub(1, std::memory_order_relaxed);
}

lt_error lt_info(lt_tensor h, int *dtype, int *device_type, int *device_index, int *requires_grad,
                 int64_t *dims, int cap, int *ndim) {
  LT_TRY const at::Tensor &t = T(h);
  *dtype = lt::dtype_code(t.scalar_type());
  *device_type = t.device().is_cuda() ? LT_CUDA : LT_CPU;
  *device_index = t.device().has_index() ? t.device().index() : 0;
  *requires_grad = t.requires_grad();
  *ndim = static_cast<int>(t.dim());
  for (int i = 0; i < *ndim && i < cap; i++) dims[i] = t.size(i);
  LT_CATCH
}

lt_error lt_from_data(const void *data, int64_t nbytes, const int64_t *shape, int ndim, int dtype,
                      lt_tensor *out) {
  LT_TRY at::Tensor t = at::empty(ints(shape, ndim), at::TensorOptions().dtype(lt::scalar_type(dtype)));
  check_nbytes(t, nbytes);
  if (nbytes > 0) std::memcpy(t.data_ptr(), data, nbytes);
  *out = wrap(std::move(t));
  LT_CATCH
}

lt_error lt_copy_to_host(lt_tensor h, void *dst, int64_t nbytes) {
  LT_TRY at::Tensor c = T(h).detach().to(at::kCPU).contiguous();
  check_nbytes(c, nbytes);
  if (nbytes > 0) std::memcpy(dst, c.data_ptr(), nbytes);
  LT_CATCH
}

lt_error lt_full(const int64_t *shape, int ndim, double value, int dtype, int device_type,
                 int device_index, lt_tensor *out) {
  LT_TRY *out = wrap(at::full(ints(shape, ndim), value, options(dtype, device_type, device_index)));
  LT_CATCH
}

lt_error lt_arange(double start, double end, double step, int dtype, int device_type,
                   int device_index, lt_tensor *out) {
  LT_TRY *out = wrap(at::arange(start, end, step, options(dtype, device_type, device_index)));
  LT_CATCH
}

lt_error lt_linspace(double start, double end, int64_t steps, int dtype, int device_type,
                     int device_index, lt_tensor *out) {
  LT_TRY *out = wrap(at::linspace(start, end, steps, options(dtype, device_type, device_index)));
  LT_CATCH
}

lt_error lt_random(int normal, const int64_t *shape, int ndim, int dtype, int device_type,
                   int device_index, lt_generator gen, lt_tensor *out) {
  LT_TRY at::ScalarType st = lt::scalar_type(dtype);
  at::Device dev = lt::device(device_type, device_index);
  c10::optional<at::Generator> g;
  at::TensorOptions o = at::TensorOptions().dtype(st).device(dev);
  if (gen != nullptr) {
    g = gen->g;
    // The generator is a CPU one: draw there in fp32 and convert, so a seed
    // means the same numbers whatever the device and dtype.
    o = at::TensorOptions().dtype(at::kFloat);
    if (st == at::kDouble) o = o.dtype(at::kDouble);
  }
  at::Tensor t = normal ? at::randn(ints(shape, ndim), g, o) : at::rand(ints(shape, ndim), g, o);
  *out = wrap(t.to(dev, st));
  LT_CATCH
}

lt_error lt_to(lt_tensor h, int dtype, int device_type, int device_index, lt_tensor *out) {
  LT_TRY const at::Tensor &t = T(h);
  at::ScalarType st = dtype < 0 ? t.scalar_type() : lt::scalar_type(dtype);
  at::Device dev = device_type < 0 ? t.device() : lt::device(device_type, device_index);
  *out = wrap(t.to(dev, st));
  LT_CATCH
}

lt_error lt_clone(lt_tensor h, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).clone());
  LT_CATCH
}

lt_error lt_copy_(lt_tensor dst, lt_tensor src) {
  LT_TRY T(dst).copy_(T(src));
  LT_CATCH
}

lt_error lt_fill_(lt_tensor h, double value) {
  LT_TRY T(h).fill_(value);
  LT_CATCH
}

lt_error lt_item(lt_tensor h, double *out) {
  LT_TRY *out = T(h).item<double>();
  LT_CATCH
}

lt_error lt_reshape(lt_tensor h, const int64_t *shape, int ndim, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).reshape(ints(shape, ndim)));
  LT_CATCH
}

lt_error lt_view(lt_tensor h, const int64_t *shape, int ndim, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).view(ints(shape, ndim)));
  LT_CATCH
}

lt_error lt_permute(lt_tensor h, const int64_t *dims, int ndim, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).permute(ints(dims, ndim)));
  LT_CATCH
}

lt_error lt_transpose(lt_tensor h, int64_t d0, int64_t d1, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).transpose(d0, d1));
  LT_CATCH
}

lt_error lt_contiguous(lt_tensor h, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).contiguous());
  LT_CATCH
}

lt_error lt_cat(const lt_tensor *ts, int n, int64_t dim, lt_tensor *out) {
  LT_TRY *out = wrap(at::cat(lt::tensors(ts, n), dim));
  LT_CATCH
}

lt_error lt_stack(const lt_tensor *ts, int n, int64_t dim, lt_tensor *out) {
  LT_TRY *out = wrap(at::stack(lt::tensors(ts, n), dim));
  LT_CATCH
}

lt_error lt_chunk(lt_tensor h, int64_t chunks, int64_t dim, lt_tensor *outs, int *nout) {
  LT_TRY std::vector<at::Tensor> parts = T(h).chunk(chunks, dim);
  if (static_cast<int64_t>(parts.size()) > chunks) throw std::logic_error("chunk returned too many parts");
  *nout = static_cast<int>(parts.size());
  for (size_t i = 0; i < parts.size(); i++) outs[i] = wrap(parts[i]);
  LT_CATCH
}

lt_error lt_split(lt_tensor h, const int64_t *sizes, int n, int64_t dim, lt_tensor *outs) {
  LT_TRY std::vector<at::Tensor> parts = T(h).split_with_sizes(ints(sizes, n), dim);
  for (size_t i = 0; i < parts.size(); i++) outs[i] = wrap(parts[i]);
  LT_CATCH
}

lt_error lt_slice(lt_tensor h, int64_t dim, int64_t start, int64_t end, int64_t step, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).slice(dim, start, end, step));
  LT_CATCH
}

lt_error lt_select(lt_tensor h, int64_t dim, int64_t index, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).select(dim, index));
  LT_CATCH
}

lt_error lt_index_select(lt_tensor h, int64_t dim, lt_tensor index, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).index_select(dim, T(index)));
  LT_CATCH
}

lt_error lt_gather(lt_tensor h, int64_t dim, lt_tensor index, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).gather(dim, T(index)));
  LT_CATCH
}

lt_error lt_squeeze(lt_tensor h, int64_t dim, int all, lt_tensor *out) {
  LT_TRY *out = wrap(all ? T(h).squeeze() : T(h).squeeze(dim));
  LT_CATCH
}

lt_error lt_unsqueeze(lt_tensor h, int64_t dim, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).unsqueeze(dim));
  LT_CATCH
}

lt_error lt_expand(lt_tensor h, const int64_t *shape, int ndim, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).expand(ints(shape, ndim)));
  LT_CATCH
}

lt_error lt_repeat(lt_tensor h, const int64_t *reps, int ndim, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).repeat(ints(reps, ndim)));
  LT_CATCH
}

lt_error lt_flatten(lt_tensor h, int64_t start, int64_t end, lt_tensor *out) {
  LT_TRY *out = wrap(T(h).flatten(start, end));
  LT_CATCH
}

}  // extern "C"
