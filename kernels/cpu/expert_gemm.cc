#include "expert_gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

#include "moe/kernels/dtype.h"
#include "small_m_gemm.h"

namespace moe::kernels::cpu {
namespace {

// Token rows up to which the streaming kernel beats BLAS's packed sgemm inside the layer's
// tasks (moe-bench, 2 cores: Qwen3-30B-A3B shape at T=128, ~8 rows per expert, 130 -> 100 ms;
// Mixtral-8x7B at T=128, ~32 rows, 627 -> 517 ms; no change at 64 rows, where BLAS takes over).
constexpr int64_t kSmallMBlasThreshold = 32;

// Rows of widened weights per chunk: ~4 MiB of float32 keeps the chunk in L2/L3 while BLAS
// multiplies it, and bounds the scratch whatever the expert size.
int64_t ChunkRows(int64_t cols) { return std::max<int64_t>(16, (int64_t{1} << 20) / cols); }

void F32Gemm(const float* w, int64_t rows, int64_t cols, const float* x, int64_t ldx, int64_t n,
             float* out, int64_t ldo) {
  if (n >= 2 && n <= kSmallMBlasThreshold && SmallMGemmAvailable()) {
    SmallMGemm(w, rows, cols, x, ldx, n, out, ldo);
    return;
  }
  if (n == 1) {
    // One token: a matrix-vector product reads the weights once at memory bandwidth.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(cols),
                1.0f, w, static_cast<blasint>(cols), x, 1, 0.0f, out, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(n),
              static_cast<blasint>(rows), static_cast<blasint>(cols), 1.0f, x,
              static_cast<blasint>(ldx), w, static_cast<blasint>(cols), 0.0f, out,
              static_cast<blasint>(ldo));
}

float Silu(float x) { return x / (1.0f + std::exp(-x)); }
float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}
float GeluErf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }

}  // namespace

void WeightGemm(const void* weights, DType dtype, int64_t rows, int64_t cols, const float* bias,
                const float* x, int64_t ldx, int64_t n, float* out, int64_t ldo,
                std::vector<float>* scratch) {
  if (n == 0) return;
  if (dtype == DType::kF32) {
    F32Gemm(static_cast<const float*>(weights), rows, cols, x, ldx, n, out, ldo);
  } else {
    const int64_t chunk = std::min(rows, ChunkRows(cols));
    if (scratch->size() < static_cast<size_t>(chunk * cols)) scratch->resize(chunk * cols);
    const auto* w16 = static_cast<const uint16_t*>(weights);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t rc = std::min(chunk, rows - r0);
#pragma omp parallel for schedule(static) if (rc * cols > 65536)
      for (int64_t r = 0; r < rc; ++r) {
        WidenToFloat(dtype, w16 + (r0 + r) * cols, scratch->data() + r * cols,
                     static_cast<size_t>(cols));
      }
      F32Gemm(scratch->data(), rc, cols, x, ldx, n, out + r0, ldo);
    }
  }
  if (bias != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t r = 0; r < rows; ++r) out[i * ldo + r] += bias[r];
    }
  }
}

void WeightGemmRowsSerial(const void* weights, DType dtype, int64_t row_begin, int64_t row_count,
                          int64_t cols, const float* bias, const float* x, int64_t ldx, int64_t n,
                          float* out, int64_t ldo, std::vector<float>* scratch) {
  if (n == 0 || row_count == 0) return;
  const size_t elem = DTypeSize(dtype);
  const void* first_row = static_cast<const char*>(weights) + row_begin * cols * elem;
  if (dtype == DType::kF32) {
    F32Gemm(static_cast<const float*>(first_row), row_count, cols, x, ldx, n, out, ldo);
  } else {
    if (scratch->size() < static_cast<size_t>(row_count * cols)) {
      scratch->resize(row_count * cols);
    }
    WidenToFloat(dtype, first_row, scratch->data(), static_cast<size_t>(row_count * cols));
    F32Gemm(scratch->data(), row_count, cols, x, ldx, n, out, ldo);
  }
  if (bias != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t r = 0; r < row_count; ++r) out[i * ldo + r] += bias[row_begin + r];
    }
  }
}

void ApplyActivationColumnsSerial(Activation activation, float* h, int64_t n, int64_t f,
                                  int64_t ldh, int64_t col_begin, int64_t col_count) {
  const int64_t end = col_begin + col_count;
  for (int64_t i = 0; i < n; ++i) {
    float* row = h + i * ldh;
    switch (activation) {
      case Activation::kSwiGLU:
        for (int64_t j = col_begin; j < end; ++j) row[j] = Silu(row[j]) * row[f + j];
        break;
      case Activation::kGeGLU:
        for (int64_t j = col_begin; j < end; ++j) row[j] = GeluTanh(row[j]) * row[f + j];
        break;
      case Activation::kReLU:
        for (int64_t j = col_begin; j < end; ++j) row[j] = std::max(row[j], 0.0f);
        break;
      case Activation::kGELU:
        for (int64_t j = col_begin; j < end; ++j) row[j] = GeluErf(row[j]);
        break;
    }
  }
}

void ApplyActivation(Activation activation, float* h, int64_t n, int64_t f, int64_t ldh) {
#pragma omp parallel for schedule(static) if (n * f > 65536)
  for (int64_t i = 0; i < n; ++i) {
    ApplyActivationColumnsSerial(activation, h + i * ldh, 1, f, ldh, 0, f);
  }
}

namespace {

// OpenBLAS's thread count is process-wide: concurrent forward passes (different layers on
// different threads) share one "parked" state, entered by the first and left by the last.
std::mutex g_blas_threads_mutex;
int g_blas_parkers = 0;
int g_blas_saved_threads = 1;

}  // namespace

ScopedSingleThreadedBlas::ScopedSingleThreadedBlas() {
  std::lock_guard<std::mutex> lock(g_blas_threads_mutex);
  if (g_blas_parkers++ == 0) {
    g_blas_saved_threads = openblas_get_num_threads();
    if (g_blas_saved_threads != 1) openblas_set_num_threads(1);
  }
}

ScopedSingleThreadedBlas::~ScopedSingleThreadedBlas() {
  std::lock_guard<std::mutex> lock(g_blas_threads_mutex);
  if (--g_blas_parkers == 0 && g_blas_saved_threads != 1) {
    openblas_set_num_threads(g_blas_saved_threads);
  }
}

}  // namespace moe::kernels::cpu
