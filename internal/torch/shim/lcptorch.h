/*
 * lcptorch: the C ABI between Go and libtorch.
 *
 * Rules every function here follows:
 *  - it returns NULL on success, or a malloc'd error message the caller frees
 *    with lt_error_free; no C++ exception ever leaves the library;
 *  - results come back through out-parameters;
 *  - no state is kept per thread on behalf of the caller: grad mode is the one
 *    exception, and the Go side pins its goroutine while it changes it.
 * Handles are owned by the caller and freed with the matching *_free call.
 */
#ifndef LCPTORCH_H
#define LCPTORCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_tensor_s *lt_tensor;
typedef struct lt_generator_s *lt_generator;
typedef struct lt_optimizer_s *lt_optimizer;
typedef struct lt_mapping_s *lt_mapping;
typedef char *lt_error;

/* Element types; the numbers are this ABI's own, not c10::ScalarType's. */
enum {
  LT_F32 = 0,
  LT_F16 = 1,
  LT_BF16 = 2,
  LT_F64 = 3,
  LT_I64 = 4,
  LT_I32 = 5,
  LT_BOOL = 6,
  LT_U8 = 7,
  LT_I8 = 8,
  LT_I16 = 9,
};

enum { LT_CPU = 0, LT_CUDA = 1 };

enum {
  LT_NEG, LT_ABS, LT_SQRT, LT_RSQRT, LT_EXP, LT_LOG, LT_SIN, LT_COS,
  LT_SIGMOID, LT_TANH, LT_SILU, LT_GELU, LT_GELU_TANH, LT_RELU, LT_SQUARE,
  LT_FLOOR, LT_CEIL, LT_ROUND, LT_LOGICAL_NOT, LT_RECIPROCAL, LT_ERF,
  LT_QUICK_GELU,
};

enum {
  LT_ADD, LT_SUB, LT_MUL, LT_DIV, LT_POW, LT_MAXIMUM, LT_MINIMUM,
  LT_EQ, LT_NE, LT_LT, LT_LE, LT_GT, LT_GE, LT_LOGICAL_AND, LT_LOGICAL_OR,
  LT_RSUB, LT_RDIV, LT_RPOW, LT_ATAN2, LT_REMAINDER,
};

enum { LT_SUM, LT_MEAN, LT_AMAX, LT_AMIN, LT_VAR, LT_VAR_BIASED, LT_STD, LT_PROD, LT_ARGMAX, LT_ARGMIN, LT_NORM2 };

enum { LT_NEAREST, LT_BILINEAR, LT_BICUBIC, LT_NEAREST_EXACT };

void lt_error_free(char *err);
void lt_buffer_free(void *buf);

/* ---- library ---- */
lt_error lt_version(char **out);
lt_error lt_build_config(char **out);
lt_error lt_library_path(char **out);
/* The BLAS libraries mapped in; OpenBLAS's thread count and the kernel set
 * it chose when it loaded (-1 and "" when OpenBLAS is not the BLAS). */
lt_error lt_blas_info(char **library, int *openblas_threads, char **openblas_core);
/* Whether the shim set glibc's malloc to keep freed memory in the process
 * (one arena, no mmap'd blocks, no trimming: malloc.cpp says why); 0 when
 * the user's GLIBC_TUNABLES set malloc or the C library is not glibc. */
lt_error lt_malloc_keeps_freed(int *keeps);
lt_error lt_cuda_device_count(int *count);
/* The most bytes CUDA tensors held on device since the process began or
 * the last reset (torch.cuda.max_memory_allocated); an error without CUDA. */
lt_error lt_cuda_peak_memory(int device, int64_t *bytes);
lt_error lt_cuda_reset_peak_memory(int device);
lt_error lt_set_num_threads(int n);
lt_error lt_get_num_threads(int *n);
lt_error lt_manual_seed(uint64_t seed);
lt_error lt_set_grad_enabled(int enabled, int *previous);
lt_error lt_is_grad_enabled(int *enabled);
int64_t lt_live_tensors(void);

/* ---- tensors: lifetime, metadata, data ---- */
void lt_free(lt_tensor t);
lt_error lt_info(lt_tensor t, int *dtype, int *device_type, int *device_index,
                 int *requires_grad, int64_t *dims, int cap, int *ndim);
lt_error lt_from_data(const void *data, int64_t nbytes, const int64_t *shape, int ndim,
                      int dtype, lt_tensor *out);
lt_error lt_copy_to_host(lt_tensor t, void *dst, int64_t nbytes);
lt_error lt_full(const int64_t *shape, int ndim, double value, int dtype, int device_type,
                 int device_index, lt_tensor *out);
lt_error lt_arange(double start, double end, double step, int dtype, int device_type,
                   int device_index, lt_tensor *out);
lt_error lt_linspace(double start, double end, int64_t steps, int dtype, int device_type,
                     int device_index, lt_tensor *out);
/* gen may be NULL for the default generator. normal: 1 = randn, 0 = rand. */
lt_error lt_random(int normal, const int64_t *shape, int ndim, int dtype, int device_type,
                   int device_index, lt_generator gen, lt_tensor *out);
lt_error lt_to(lt_tensor t, int dtype, int device_type, int device_index, lt_tensor *out);
lt_error lt_clone(lt_tensor t, lt_tensor *out);
lt_error lt_copy_(lt_tensor dst, lt_tensor src);
lt_error lt_fill_(lt_tensor t, double value);
lt_error lt_item(lt_tensor t, double *out);

/* ---- shape ---- */
lt_error lt_reshape(lt_tensor t, const int64_t *shape, int ndim, lt_tensor *out);
lt_error lt_view(lt_tensor t, const int64_t *shape, int ndim, lt_tensor *out);
lt_error lt_permute(lt_tensor t, const int64_t *dims, int ndim, lt_tensor *out);
lt_error lt_transpose(lt_tensor t, int64_t d0, int64_t d1, lt_tensor *out);
lt_error lt_contiguous(lt_tensor t, lt_tensor *out);
lt_error lt_cat(const lt_tensor *ts, int n, int64_t dim, lt_tensor *out);
lt_error lt_stack(const lt_tensor *ts, int n, int64_t dim, lt_tensor *out);
lt_error lt_chunk(lt_tensor t, int64_t chunks, int64_t dim, lt_tensor *outs, int *nout);
lt_error lt_split(lt_tensor t, const int64_t *sizes, int n, int64_t dim, lt_tensor *outs);
lt_error lt_slice(lt_tensor t, int64_t dim, int64_t start, int64_t end, int64_t step,
                  lt_tensor *out);
lt_error lt_select(lt_tensor t, int64_t dim, int64_t index, lt_tensor *out);
lt_error lt_index_select(lt_tensor t, int64_t dim, lt_tensor index, lt_tensor *out);
lt_error lt_gather(lt_tensor t, int64_t dim, lt_tensor index, lt_tensor *out);
/* all = 1 squeezes every size-1 dimension and ignores dim. */
lt_error lt_squeeze(lt_tensor t, int64_t dim, int all, lt_tensor *out);
lt_error lt_unsqueeze(lt_tensor t, int64_t dim, lt_tensor *out);
lt_error lt_expand(lt_tensor t, const int64_t *shape, int ndim, lt_tensor *out);
lt_error lt_repeat(lt_tensor t, const int64_t *reps, int ndim, lt_tensor *out);
lt_error lt_flatten(lt_tensor t, int64_t start, int64_t end, lt_tensor *out);

/* ---- elementwise ---- */
lt_error lt_unary(int op, lt_tensor t, lt_tensor *out);
lt_error lt_binary(int op, lt_tensor a, lt_tensor b, lt_tensor *out);
lt_error lt_binary_scalar(int op, lt_tensor a, double s, lt_tensor *out);
/* a + alpha * b */
lt_error lt_add_scaled(lt_tensor a, lt_tensor b, double alpha, lt_tensor *out);
lt_error lt_where(lt_tensor cond, lt_tensor a, lt_tensor b, lt_tensor *out);
lt_error lt_clamp(lt_tensor t, double lo, double hi, int has_lo, int has_hi, lt_tensor *out);
lt_error lt_masked_fill(lt_tensor t, lt_tensor mask, double value, lt_tensor *out);

/* ---- reductions: ndims = 0 reduces over every dimension ---- */
lt_error lt_reduce(int op, lt_tensor t, const int64_t *dims, int ndims, int keepdim,
                   lt_tensor *out);
lt_error lt_max_dim(lt_tensor t, int64_t dim, int keepdim, lt_tensor *values,
                    lt_tensor *indices);

/* ---- linear algebra ---- */
lt_error lt_matmul(lt_tensor a, lt_tensor b, lt_tensor *out);
lt_error lt_bmm(lt_tensor a, lt_tensor b, lt_tensor *out);
lt_error lt_baddbmm(lt_tensor input, lt_tensor a, lt_tensor b, double beta, double alpha,
                    lt_tensor *out);

/* ---- nn functional; optional tensors may be NULL ---- */
lt_error lt_linear(lt_tensor x, lt_tensor w, lt_tensor b, lt_tensor *out);
lt_error lt_conv2d(lt_tensor x, lt_tensor w, lt_tensor b, const int64_t *stride,
                   const int64_t *padding, const int64_t *dilation, int64_t groups,
                   lt_tensor *out);
lt_error lt_group_norm(lt_tensor x, int64_t groups, lt_tensor w, lt_tensor b, double eps,
                       lt_tensor *out);
lt_error lt_layer_norm(lt_tensor x, const int64_t *shape, int ndim, lt_tensor w, lt_tensor b,
                       double eps, lt_tensor *out);
lt_error lt_softmax(lt_tensor t, int64_t dim, int log, lt_tensor *out);
lt_error lt_dropout(lt_tensor t, double p, int train, lt_tensor *out);
/* size (2 values) or scale (2 values) is given, the other NULL. */
lt_error lt_interpolate(lt_tensor t, int mode, const int64_t *size, const double *scale,
                        int align_corners, int antialias, lt_tensor *out);
lt_error lt_avg_pool2d(lt_tensor t, const int64_t *kernel, const int64_t *stride,
                       const int64_t *padding, lt_tensor *out);
/* Attention over (..., L, E) queries and (..., S, E) keys; mask is additive
 * (float) or boolean (true = keep) and broadcasts to (..., L, S). scale <= 0
 * means 1/sqrt(E). */
lt_error lt_attention(lt_tensor q, lt_tensor k, lt_tensor v, lt_tensor mask, double scale,
                      lt_tensor *out);
/* The same, also returning softmax(QK^T*scale + mask), which stays in the graph. */
lt_error lt_attention_probs(lt_tensor q, lt_tensor k, lt_tensor v, lt_tensor mask,
                            double scale, lt_tensor *out, lt_tensor *probs);

/* ---- autograd ---- */
lt_error lt_set_requires_grad(lt_tensor t, int requires_grad);
lt_error lt_detach(lt_tensor t, lt_tensor *out);
/* grad may be NULL for a scalar t. */
lt_error lt_backward(lt_tensor t, lt_tensor grad, int retain_graph);
/* out is NULL when t has no gradient. */
lt_error lt_grad(lt_tensor t, lt_tensor *out);
lt_error lt_zero_grad(lt_tensor t);
/* d(sum outputs)/d(inputs); grad_outputs may be NULL. outs[i] is NULL for an
 * input the outputs do not depend on. */
lt_error lt_autograd_grad(const lt_tensor *outputs, int nout, const lt_tensor *grad_outputs,
                          const lt_tensor *inputs, int nin, int retain_graph,
                          int create_graph, lt_tensor *outs);

/* ---- mixed precision and gradient checkpointing (training.cpp) ---- */
/* Autocast, like grad mode, is per thread: the caller pins its thread from
 * enter to exit. device_type is 0 (CPU) or 1 (CUDA); dtype the lower
 * precision (LT_BF16, LT_F16). enter reports the state it replaced, which
 * exit restores. */
lt_error lt_autocast_enter(int device_type, int dtype, int *prev_enabled, int *prev_dtype);
lt_error lt_autocast_exit(int device_type, int prev_enabled, int prev_dtype);
/* Gradient checkpointing. run(handle, inputs, n, outputs) computes a
 * function of the inputs (it owns the n input handles and frees them) and
 * reports each result with lt_outputs_push(outputs, t); it returns NULL or a
 * malloc'd error line. lt_checkpoint calls it once without recording a
 * graph; when autograd is on, the results get one backward node that calls
 * run again, with autograd and the autocast state of the first call, and
 * back-propagates through that. release(handle) is called exactly once,
 * when handle is no longer needed. Tensors run uses without receiving them
 * as inputs are reached through their own graphs (kept for every such
 * call). */
typedef char *(*lt_checkpoint_run)(uintptr_t handle, lt_tensor *inputs, int n, void *outputs);
typedef void (*lt_checkpoint_release)(uintptr_t handle);
lt_error lt_checkpoint_callbacks(lt_checkpoint_run run, lt_checkpoint_release release);
lt_error lt_outputs_push(void *outputs, lt_tensor t);
lt_error lt_checkpoint(uintptr_t handle, const lt_tensor *inputs, int n, lt_tensor *outs, int cap,
                       int *nout);

/* ---- generators ---- */
/* Generators are CPU generators (mt19937, as torch.Generator()): samples for a
 * CUDA tensor are drawn on the CPU and moved, so a seed gives the same noise on
 * every device, as diffusers does with a CPU generator. */
lt_error lt_generator_new(uint64_t seed, lt_generator *out);
void lt_generator_free(lt_generator g);
lt_error lt_generator_get_state(lt_generator g, lt_tensor *out);
lt_error lt_generator_set_state(lt_generator g, lt_tensor state);

/* ---- AdamW (libtorch's own) ---- */
lt_error lt_adamw_new(const lt_tensor *params, int n, double lr, double beta1, double beta2,
                      double eps, double weight_decay, int amsgrad, lt_optimizer *out);
void lt_optimizer_free(lt_optimizer o);
lt_error lt_optimizer_step(lt_optimizer o);
lt_error lt_optimizer_zero_grad(lt_optimizer o);
lt_error lt_optimizer_set_lr(lt_optimizer o, double lr);
/* state as libtorch's own archive bytes; free *data with lt_buffer_free. */
lt_error lt_optimizer_save(lt_optimizer o, void **data, int64_t *size);
lt_error lt_optimizer_load(lt_optimizer o, const void *data, int64_t size);

/* ---- memory-mapped files: tensors made from a mapping keep it alive ---- */
lt_error lt_mapping_open(const char *path, lt_mapping *out, const void **data, int64_t *size);
void lt_mapping_free(lt_mapping m);
/* A CPU tensor over bytes [offset, offset+nbytes) of the mapping, without copying. */
lt_error lt_mapping_tensor(lt_mapping m, int64_t offset, int64_t nbytes, const int64_t *shape,
                           int ndim, int dtype, lt_tensor *out);

/* ---- data parallelism: c10d process groups, started the torchrun way ----
 * Collectives block until every rank has joined them and fail, never hang,
 * after the group's timeout. Every rank passes the same tensor shapes in the
 * same order. Without Gloo at build time every call returns an error. */
typedef struct lt_process_group_s *lt_process_group;
enum { LT_DIST_SUM = 0, LT_DIST_AVG = 1 };
/* backend "gloo" or "nccl"; rank 0 serves the rendezvous at master_addr:master_port. */
lt_error lt_dist_init(const char *backend, const char *master_addr, int master_port, int rank,
                      int world_size, int timeout_seconds, lt_process_group *out);
/* In place on every rank: the sum, or the mean (op LT_DIST_AVG), over ranks. */
lt_error lt_dist_all_reduce(lt_process_group pg, const lt_tensor *ts, int n, int op);
/* In place: every rank ends with root's values. */
lt_error lt_dist_broadcast(lt_process_group pg, const lt_tensor *ts, int n, int root);
lt_error lt_dist_barrier(lt_process_group pg);
void lt_dist_free(lt_process_group pg);

/* ---- TorchScript modules (jit.cpp) ----
 * A module saved by torch.jit.save, loaded with torch::jit::load onto one
 * device and put in eval mode. forward runs without recording gradients
 * (its own guard, whatever the calling thread's grad mode) and returns a
 * tensor, or a tuple or list of tensors, as up to cap handles in outs; any
 * other result is an error and no handle is made. */
typedef struct lt_module_s *lt_module;
lt_error lt_jit_load(const char *path, int device_type, int device_index, lt_module *out);
void lt_jit_free(lt_module m);
lt_error lt_jit_forward(lt_module m, const lt_tensor *inputs, int nin, lt_tensor *outs, int cap,
                        int *nout);
/* ---- end of TorchScript modules ---- */

#ifdef __cplusplus
}
#endif

#endif
