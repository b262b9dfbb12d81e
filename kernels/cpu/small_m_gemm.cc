#include "small_m_gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>

namespace moe::kernels::cpu {

#if defined(__x86_64__)
namespace {

// Register block: kW weight rows x kX token rows of 8-float accumulators (12 of the 16 ymm
// registers), the 4 weight vectors in the rest; token vectors are FMA memory operands.
constexpr int kW = 4;
constexpr int kX = 3;

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

// One block of up to kW weight rows against up to kX token rows, full length `cols`.
template <int W, int X>
__attribute__((target("avx2,fma"))) void Block(const float* w, int64_t cols, const float* x,
                                               int64_t ldx, float* out, int64_t ldo) {
  __m256 acc[W][X];
#pragma GCC unroll 4
  for (int j = 0; j < W; ++j) {
#pragma GCC unroll 4
    for (int i = 0; i < X; ++i) acc[j][i] = _mm256_setzero_ps();
  }
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    __m256 wv[W];
#pragma GCC unroll 4
    for (int j = 0; j < W; ++j) wv[j] = _mm256_loadu_ps(w + j * cols + c);
#pragma GCC unroll 4
    for (int i = 0; i < X; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + c);
#pragma GCC unroll 4
      for (int j = 0; j < W; ++j) acc[j][i] = _mm256_fmadd_ps(wv[j], xv, acc[j][i]);
    }
  }
  for (int j = 0; j < W; ++j) {
    for (int i = 0; i < X; ++i) {
      float sum = HorizontalSum(acc[j][i]);
      for (int64_t t = c; t < cols; ++t) sum += w[j * cols + t] * x[i * ldx + t];
      out[i * ldo + j] = sum;
    }
  }
}

template <int W>
__attribute__((target("avx2,fma"))) void RowBlock(const float* w, int64_t cols, const float* x,
                                                  int64_t ldx, int64_t n, float* out, int64_t ldo) {
  int64_t m = 0;
  for (; m + kX <= n; m += kX) Block<W, kX>(w, cols, x + m * ldx, ldx, out + m * ldo, ldo);
  switch (n - m) {
    case 2:
      Block<W, 2>(w, cols, x + m * ldx, ldx, out + m * ldo, ldo);
      break;
    case 1:
      Block<W, 1>(w, cols, x + m * ldx, ldx, out + m * ldo, ldo);
      break;
    default:
      break;
  }
}

}  // namespace

bool SmallMGemmAvailable() {
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return available;
}

void SmallMGemm(const float* w, int64_t rows, int64_t cols, const float* x, int64_t ldx, int64_t n,
                float* out, int64_t ldo) {
  int64_t r = 0;
  for (; r + kW <= rows; r += kW) RowBlock<kW>(w + r * cols, cols, x, ldx, n, out + r, ldo);
  switch (rows - r) {
    case 3:
      RowBlock<3>(w + r * cols, cols, x, ldx, n, out + r, ldo);
      break;
    case 2:
      RowBlock<2>(w + r * cols, cols, x, ldx, n, out + r, ldo);
      break;
    case 1:
      RowBlock<1>(w + r * cols, cols, x, ldx, n, out + r, ldo);
      break;
    default:
      break;
  }
}

#else  // not x86-64: BLAS handles every row count.

bool SmallMGemmAvailable() { return false; }

void SmallMGemm(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t) {}

#endif

}  // namespace moe::kernels::cpu
