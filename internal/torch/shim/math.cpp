// Elementwise math, reductions and matrix products.
#include "common.h"

using lt::ints;
using lt::T;
using lt::wrap;

namespace {

at::Tensor unary(int op, const at::Tensor &t) {
  switch (op) {
    case LT_NEG: return at::neg(t);
    case LT_ABS: return at::abs(t);
    case LT_SQRT: return at::sqrt(t);
    case LT_RSQRT: return at::rsqrt(t);
    case LT_EXP: return at::exp(t);
    case LT_LOG: return at::log(t);
    case LT_SIN: return at::sin(t);
    case LT_COS: return at::cos(t);
    case LT_SIGMOID: return at::sigmoid(t);
    case LT_TANH: return at::tanh(t);
    case LT_SILU: return at::silu(t);
    case LT_GELU: return at::gelu(t, "none");
    case LT_GELU_TANH: return at::gelu(t, "tanh");
    case LT_RELU: return at::relu(t);
    case LT_SQUARE: return at::square(t);
    case LT_FLOOR: return at::floor(t);
    case LT_CEIL: return at::ceil(t);
    case LT_ROUND: return at::round(t);
    case LT_LOGICAL_NOT: return at::logical_not(t);
    case LT_RECIPROCAL: return at::reciprocal(t);
    case LT_ERF: return at::erf(t);
    // CLIP's activation, as transformers writes it.
    case LT_QUICK_GELU: return t * at::sigmoid(t * 1.702);
  }
  throw std::invalid_argument("unknown unary op " + std::to_string(op));
}

at::Tensor binary(int op, const at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case LT_ADD: return at::add(a, b);
    case LT_SUB: return at::sub(a, b);
    case LT_MUL: return at::mul(a, b);
    case LT_DIV: return at::div(a, b);
    case LT_POW: return at::pow(a, b);
    case LT_MAXIMUM: return at::maximum(a, b);
    case LT_MINIMUM: return at::minimum(a, b);
    case LT_EQ: return at::eq(a, b);
    case LT_NE: return at::ne(a, b);
    case LT_LT: return at::lt(a, b);
    case LT_LE: return at::le(a, b);
    case LT_GT: return at::gt(a, b);
    case LT_GE: return at::ge(a, b);
    case LT_LOGICAL_AND: return at::logical_and(a, b);
    case LT_LOGICAL_OR: return at::logical_or(a, b);
    case LT_ATAN2: return at::atan2(a, b);
    case LT_REMAINDER: return at::remainder(a, b);
  }
  throw std::invalid_argument("unknown binary op " + std::to_string(op));
}

at::Tensor binary_scalar(int op, const at::Tensor &a, double s) {
  switch (op) {
    case LT_ADD: return at::add(a, s);
    case LT_SUB: return at::sub(a, s);
    case LT_MUL: return at::mul(a, s);
    case LT_DIV: return at::div(a, s);
    case LT_POW: return at::pow(a, s);
    case LT_MAXIMUM: return at::clamp_min(a, s);
    case LT_MINIMUM: return at::clamp_max(a, s);
    case LT_EQ: return at::eq(a, s);
    case LT_NE: return at::ne(a, s);
    case LT_LT: return at::lt(a, s);
    case LT_LE: return at::le(a, s);
    case LT_GT: return at::gt(a, s);
    case LT_GE: return at::ge(a, s);
    case LT_RSUB: return at::rsub(a, s);
    case LT_RDIV: return at::div(at::scalar_tensor(s, a.options().requires_grad(false)), a);
    case LT_RPOW: return at::pow(s, a);
    case LT_REMAINDER: return at::remainder(a, s);
  }
  throw std::invalid_argument("unknown scalar op " + std::to_string(op));
}

std::vector<int64_t> reduce_dims(const at::Tensor &t, const int64_t *dims, int n) {
  if (n > 0) return std::vector<int64_t>(dims, dims + n);
  std::vector<int64_t> all(t.dim());
  for (int64_t i = 0; i < t.dim(); i++) all[i] = i;
  return all;
}

int64_t single_dim(const char *op, int n, const int64_t *dims) {
  if (n != 1) throw std::invalid_argument(std::string(op) + " takes exactly one dimension");
  return dims[0];
}

at::Tensor reduce(int op, const at::Tensor &t, const int64_t *dims, int n, bool keepdim) {
  std::vector<int64_t> d = reduce_dims(t, dims, n);
  switch (op) {
    case LT_SUM: return at::sum(t, d, keepdim);
    case LT_MEAN: return at::mean(t, d, keepdim);
    case LT_AMAX: return at::amax(t, d, keepdim);
    case LT_AMIN: return at::amin(t, d, keepdim);
    case LT_VAR: return at::var(t, d, /*unbiased=*/true, keepdim);
    case LT_VAR_BIASED: return at::var(t, d, /*unbiased=*/false, keepdim);
    case LT_STD: return at::std(t, d, /*unbiased=*/true, keepdim);
    case LT_NORM2: return at::linalg_vector_norm(t, 2, d, keepdim);
    case LT_PROD:
      if (n == 0 && !keepdim) return at::prod(t);
      return at::prod(t, single_dim("prod", n, dims), keepdim);
    case LT_ARGMAX:
      if (n == 0) return at::argmax(t, c10::nullopt, keepdim);
      return at::argmax(t, single_dim("argmax", n, dims), keepdim);
    case LT_ARGMIN:
      if (n == 0) return at::argmin(t, c10::nullopt, keepdim);
      return at::argmin(t, single_dim("argmin", n, dims), keepdim);
  }
  throw std::invalid_argument("unknown reduction " + std::to_string(op));
}

}  // namespace

extern "C" {

lt_error lt_unary(int op, lt_tensor t, lt_tensor *out) {
  LT_TRY *out = wrap(unary(op, T(t)));
  LT_CATCH
}

lt_error lt_binary(int op, lt_tensor a, lt_tensor b, lt_tensor *out) {
  LT_TRY *out = wrap(binary(op, T(a), T(b)));
  LT_CATCH
}

lt_error lt_binary_scalar(int op, lt_tensor a, double s, lt_tensor *out) {
  LT_TRY *out = wrap(binary_scalar(op, T(a), s));
  LT_CATCH
}

lt_error lt_add_scaled(lt_tensor a, lt_tensor b, double alpha, lt_tensor *out) {
  LT_TRY *out = wrap(at::add(T(a), T(b), alpha));
  LT_CATCH
}

lt_error lt_where(lt_tensor cond, lt_tensor a, lt_tensor b, lt_tensor *out) {
  LT_TRY *out = wrap(at::where(T(cond), T(a), T(b)));
  LT_CATCH
}

lt_error lt_clamp(lt_tensor t, double lo, double hi, int has_lo, int has_hi, lt_tensor *out) {
  LT_TRY c10::optional<at::Scalar> l, h;
  if (has_lo) l = lo;
  if (has_hi) h = hi;
  *out = wrap(at::clamp(T(t), l, h));
  LT_CATCH
}

lt_error lt_masked_fill(lt_tensor t, lt_tensor mask, double value, lt_tensor *out) {
  LT_TRY *out = wrap(T(t).masked_fill(T(mask), value));
  LT_CATCH
}

lt_error lt_reduce(int op, lt_tensor t, const int64_t *dims, int ndims, int keepdim, lt_tensor *out) {
  LT_TRY *out = wrap(reduce(op, T(t), dims, ndims, keepdim != 0));
  LT_CATCH
}

lt_error lt_max_dim(lt_tensor t, int64_t dim, int keepdim, lt_tensor *values, lt_tensor *indices) {
  LT_TRY auto r = at::max(T(t), dim, keepdim != 0);
  *values = wrap(std::get<0>(r));
  *indices = wrap(std::get<1>(r));
  LT_CATCH
}

lt_error lt_matmul(lt_tensor a, lt_tensor b, lt_tensor *out) {
  LT_TRY *out = wrap(at::matmul(T(a), T(b)));
  LT_CATCH
}

lt_error lt_bmm(lt_tensor a, lt_tensor b, lt_tensor *out) {
  LT_TRY *out = wrap(at::bmm(T(a), T(b)));
  LT_CATCH
}

lt_error lt_baddbmm(lt_tensor input, lt_tensor a, lt_tensor b, double beta, double alpha, lt_tensor *out) {
  LT_TRY *out = wrap(at::baddbmm(T(input), T(a), T(b), beta, alpha));
  LT_CATCH
}

}  // extern "C"
