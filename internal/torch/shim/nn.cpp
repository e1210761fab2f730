// Neural-network functionals: the layers a diffusion model is made of.
#include <torch/nn/functional/upsampling.h>
#include <torch/version.h>

#include <cmath>

#include "common.h"

using lt::ints;
using lt::opt;
using lt::T;
using lt::wrap;

namespace F = torch::nn::functional;

namespace {

// softmax(q k^T * scale + mask), written out: the box guidance needs the
// probabilities, and libtorch 1.13 has no fused kernel anyway.
at::Tensor attention_probs(const at::Tensor &q, const at::Tensor &k, const at::Tensor &mask,
                           double scale) {
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1));
  // In place on a fresh temporary: matmul's backward needs q and k, not its output.
  scores.mul_(scale);
  if (mask.defined()) {
    if (mask.scalar_type() == at::kBool)
      scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
    else
      scores = scores + mask;
  }
  return at::softmax(scores, -1);
}

double attention_scale(const at::Tensor &q, double scale) {
  if (scale > 0) return scale;
  return 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
}

}  // namespace

extern "C" {

lt_error lt_linear(lt_tensor x, lt_tensor w, lt_tensor b, lt_tensor *out) {
  LT_TRY *out = wrap(at::linear(T(x), T(w), opt(b)));
  LT_CATCH
}

lt_error lt_conv2d(lt_tensor x, lt_tensor w, lt_tensor b, const int64_t *stride, const int64_t *padding,
                   const int64_t *dilation, int64_t groups, lt_tensor *out) {
  LT_TRY *out = wrap(at::conv2d(T(x), T(w), opt(b), ints(stride, 2), ints(padding, 2), ints(dilation, 2), groups));
  LT_CATCH
}

// norm_input is x in the type of the norm's weight, when autocast left
// them apart: CUDA's autocast runs group and layer norm in float32, but
// libtorch 1.13's CPU autocast leaves them to kernels that want one type.
// Casting to the (float32) weight's type does what CUDA does everywhere.
// Outside autocast a mismatch is the caller's error, which the kernel names.
static at::Tensor norm_input(const at::Tensor &x, lt_tensor w) {
  if (w != nullptr && T(w).scalar_type() != x.scalar_type() && lt::autocast_on())
    return x.to(T(w).scalar_type());
  return x;
}

lt_error lt_group_norm(lt_tensor x, int64_t groups, lt_tensor w, lt_tensor b, double eps, lt_tensor *out) {
  LT_TRY *out = wrap(at::group_norm(norm_input(T(x), w), groups, opt(w), opt(b), eps, /*cudnn_enabled=*/true));
  LT_CATCH
}

lt_error lt_layer_norm(lt_tensor x, const int64_t *shape, int ndim, lt_tensor w, lt_tensor b, double eps,
                       lt_tensor *out) {
  LT_TRY *out = wrap(at::layer_norm(norm_input(T(x), w), ints(shape, ndim), opt(w), opt(b), eps, /*cudnn_enable=*/true));
  LT_CATCH
}

lt_error lt_softmax(lt_tensor t, int64_t dim, int log, lt_tensor *out) {
  LT_TRY *out = wrap(log ? at::log_softmax(T(t), dim) : at::softmax(T(t), dim));
  LT_CATCH
}

lt_error lt_dropout(lt_tensor t, double p, int train, lt_tensor *out) {
  LT_TRY *out = wrap(at::dropout(T(t), p, train != 0));
  LT_CATCH
}

lt_error lt_interpolate(lt_tensor t, int mode, const int64_t *size, const double *scale, int align_corners,
                        int antialias, lt_tensor *out) {
  LT_TRY F::InterpolateFuncOptions o;
  if (size != nullptr) o.size(std::vector<int64_t>{size[0], size[1]});
  if (scale != nullptr) o.scale_factor(std::vector<double>{scale[0], scale[1]});
  switch (mode) {
    case LT_NEAREST: o.mode(torch::kNearest); break;
    case LT_NEAREST_EXACT: o.mode(torch::kNearestExact); break;
    case LT_BILINEAR: o.mode(torch::kBilinear).align_corners(align_corners != 0); break;
    case LT_BICUBIC: o.mode(torch::kBicubic).align_corners(align_corners != 0); break;
    default: throw std::invalid_argument("unknown interpolation mode " + std::to_string(mode));
  }
  o.antialias(antialias != 0);
  *out = wrap(F::interpolate(T(t), o));
  LT_CATCH
}

lt_error lt_avg_pool2d(lt_tensor t, const int64_t *kernel, const int64_t *stride, const int64_t *padding,
                       lt_tensor *out) {
  LT_TRY *out = wrap(at::avg_pool2d(T(t), ints(kernel, 2), ints(stride, 2), ints(padding, 2)));
  LT_CATCH
}

lt_error lt_attention(lt_tensor q, lt_tensor k, lt_tensor v, lt_tensor mask, double scale, lt_tensor *out) {
  LT_TRY const at::Tensor &Q = T(q);
  at::Tensor M = mask ? T(mask) : at::Tensor();
  double s = attention_scale(Q, scale);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  // Fused kernels (flash / memory-efficient / math) pick themselves by device and shape.
  *out = wrap(at::scaled_dot_product_attention(Q, T(k), T(v), opt(mask), 0.0, false, s));
#else
  *out = wrap(at::matmul(attention_probs(Q, T(k), M, s), T(v)));
#endif
  LT_CATCH
}

lt_error lt_attention_probs(lt_tensor q, lt_tensor k, lt_tensor v, lt_tensor mask, double scale, lt_tensor *out,
                            lt_tensor *probs) {
  LT_TRY const at::Tensor &Q = T(q);
  at::Tensor M = mask ? T(mask) : at::Tensor();
  at::Tensor p = attention_probs(Q, T(k), M, attention_scale(Q, scale));
  at::Tensor o = at::matmul(p, T(v));
  *out = wrap(std::move(o));
  *probs = wrap(std::move(p));
  LT_CATCH
}

}  // extern "C"
