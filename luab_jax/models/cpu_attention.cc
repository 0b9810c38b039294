// Fused multi-head attention for XLA:CPU, forward and backward, as XLA FFI handlers.
//
// Built and registered by cpu_attention.py (read its docstring first). Inputs are q, k, v in
// the projections' own [B, N, H, K] layout (no transposes): the (b, h) matrices are read with a
// row stride of H * K. Each (b, h) pair is one task on XLA's intra-op thread pool; a task runs
// single-threaded OpenBLAS sgemm calls (scipy-openblas32, set to one thread when this library
// loads), so two cores run two pairs side by side, where XLA:CPU runs a batched matmul on one
// thread. The softmax probabilities [B, H, N, N] are the forward's second output, kept for the
// backward, as autodiff of the written-out attention keeps them.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

extern "C" {
void scipy_openblas_set_num_threads(int num_threads);
void scipy_cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                       const float* a, int lda, const float* b, int ldb, float beta, float* c,
                       int ldc);
}

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// Parallelism comes from the tasks: OpenBLAS's own threads would compete with XLA's pool.
[[maybe_unused]] const bool kSingleThreadedBlas = (scipy_openblas_set_num_threads(1), true);

void Gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float* c, int ldc) {
  scipy_cblas_sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, m, n, k,
                    alpha, a, lda, b, ldb, 0.0f, c, ldc);
}

// exp(x) for x <= 0 (the softmax after subtracting the row maximum), written so that the
// compiler vectorises the loops that call it (std::exp is a scalar libm call): 2^n * p(r) with
// Cephes' expf polynomial, within 1.02 ulp of the exact exp on every float in [-87, 0]
// (checked against double precision); below -87 it returns exp(-87) (1.6e-38)
// instead of underflowing, which a probability of that size cannot tell apart.
inline float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // n is in [-126, 0] except for a NaN x, whose NaN p carries through; the select keeps the
  // float-to-int conversion defined for it.
  int32_t bits = (static_cast<int32_t>(n > -127.0f ? n : -127.0f) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

void SoftmaxRows(float* s, int rows, int cols) {
  for (int i = 0; i < rows; ++i) {
    float* row = s + static_cast<int64_t>(i) * cols;
    float m = row[0];
#pragma omp simd reduction(max : m)
    for (int j = 0; j < cols; ++j) m = std::max(m, row[j]);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int j = 0; j < cols; ++j) {
      row[j] = ExpNonPositive(row[j] - m);
      total += row[j];
    }
    float inv = 1.0f / total;
#pragma omp simd
    for (int j = 0; j < cols; ++j) row[j] *= inv;
  }
}

// Runs work(i) for i in [0, count) on XLA's intra-op pool, the calling thread included. The
// caller takes items until none are left, then waits only for items other threads took; a
// helper scheduled behind a busy thread finds nothing left and returns (its state is shared,
// so it may outlive this call).
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t count, F work) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto run = [state, count, work]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < count;) {
      work(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(run)(run));
  run();
  while (state->done.load(std::memory_order_acquire) < count) std::this_thread::yield();
}

struct Dims {
  int64_t batch, length, heads, head_dim;

  // Where pair i = b * heads + h starts in a [B, N, H, K] buffer; its rows are H * K apart.
  int64_t Offset(int64_t i) const { return ((i / heads) * length * heads + i % heads) * head_dim; }
};

ffi::Error CheckDims(const F32Buffer& x, Dims* dims) {
  auto d = x.dimensions();
  if (d.size() != 4) {
    return ffi::Error::InvalidArgument("luab cpu attention: inputs must be [B, N, H, K]");
  }
  *dims = {d[0], d[1], d[2], d[3]};
  return ffi::Error::Success();
}

ffi::Error AttentionForward(ffi::ThreadPool pool, F32Buffer q, F32Buffer k, F32Buffer v,
                            float scale, F32Result out, F32Result probs) {
  Dims d;
  if (auto e = CheckDims(q, &d); e.failure()) return e;
  const int n = d.length, kd = d.head_dim, ld = d.heads * d.head_dim;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = out->typed_data(), *pp = probs->typed_data();
  ParallelFor(pool, d.batch * d.heads, [=](int64_t i) {
    int64_t base = d.Offset(i);
    float* p = pp + i * n * n;
    // P = softmax(s Q K^T) row by row; O = P V.
    Gemm(false, true, n, n, kd, scale, qp + base, ld, kp + base, ld, p, n);
    SoftmaxRows(p, n, n);
    Gemm(false, false, n, kd, n, 1.0f, p, n, vp + base, ld, op + base, ld);
  });
  return ffi::Error::Success();
}

ffi::Error AttentionBackward(ffi::ThreadPool pool, F32Buffer q, F32Buffer k, F32Buffer v,
                             F32Buffer probs, F32Buffer grad_out, float scale, F32Result dq,
                             F32Result dk, F32Result dv) {
  Dims d;
  if (auto e = CheckDims(q, &d); e.failure()) return e;
  const int n = d.length, kd = d.head_dim, ld = d.heads * d.head_dim;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *pp = probs.typed_data(), *gp = grad_out.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  ParallelFor(pool, d.batch * d.heads, [=](int64_t i) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(n) * n);
    float* ds = scratch.data();
    int64_t base = d.Offset(i);
    const float* p = pp + i * n * n;
    // dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(P * dP)); dQ = s dS K; dK = s dS^T Q.
    Gemm(true, false, n, kd, n, 1.0f, p, n, gp + base, ld, dvp + base, ld);
    Gemm(false, true, n, n, kd, 1.0f, gp + base, ld, vp + base, ld, ds, n);
    for (int r = 0; r < n; ++r) {
      const float* pr = p + static_cast<int64_t>(r) * n;
      float* dr = ds + static_cast<int64_t>(r) * n;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int j = 0; j < n; ++j) dot += pr[j] * dr[j];
#pragma omp simd
      for (int j = 0; j < n; ++j) dr[j] = pr[j] * (dr[j] - dot);
    }
    Gemm(false, false, n, kd, n, scale, ds, n, kp + base, ld, dqp + base, ld);
    Gemm(true, false, n, kd, n, scale, ds, n, qp + base, ld, dkp + base, ld);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LuabAttentionForward, AttentionForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Attr<float>("scale")
                                  .Ret<F32Buffer>()
                                  .Ret<F32Buffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LuabAttentionBackward, AttentionBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Attr<float>("scale")
                                  .Ret<F32Buffer>()
                                  .Ret<F32Buffer>()
                                  .Ret<F32Buffer>());
