#include "server/engine/decoder/dense_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/expert_gemm.h"
#include "moe/kernels/dtype.h"

namespace moe::engine {
namespace {

// Weight rows per task: ~256 KiB of float32 weights, so a task's slice stays in L2 while it is
// multiplied against all the step's rows; at least 16 rows so tiny layers are not split to dust.
int64_t ChunkRows(int64_t in) { return std::max<int64_t>(16, (int64_t{256} << 10) / (4 * in)); }

// Below this many multiply-adds the team's wake-up costs more than the product.
constexpr int64_t kParallelMacs = int64_t{1} << 18;

}  // namespace

void LinearRows(const float* w, const float* bias, int64_t out, int64_t in, const float* x,
                int64_t n, float* y) {
  if (n <= 0 || out <= 0) return;
  const int64_t chunk = ChunkRows(in);
  const int64_t tasks = (out + chunk - 1) / chunk;
#pragma omp parallel if (tasks > 1 && n * out * in > kParallelMacs)
  {
    std::vector<float> unused_scratch;  // only half-precision weights need one
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t begin = task * chunk;
      const int64_t count = std::min(chunk, out - begin);
      kernels::cpu::WeightGemmRowsSerial(w, kernels::DType::kF32, begin, count, in, bias, x, in, n,
                                         y + begin, out, &unused_scratch);
    }
  }
}

void RmsNormRows(const float* x, int64_t rows, int64_t width, int64_t stride, const float* weight,
                 double eps, float* y, int64_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    double squares = 0.0;
    for (int64_t c = 0; c < width; ++c) squares += static_cast<double>(row[c]) * row[c];
    const float scale =
        static_cast<float>(1.0 / std::sqrt(squares / static_cast<double>(width) + eps));
    float* dst = y + r * y_stride;
    for (int64_t c = 0; c < width; ++c) dst[c] = row[c] * scale * weight[c];
  }
}

void SwiGluRows(const float* h, int64_t n, int64_t f, float* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* gate = h + r * 2 * f;
    const float* up = gate + f;
    float* dst = out + r * f;
    for (int64_t c = 0; c < f; ++c) dst[c] = gate[c] / (1.0f + std::exp(-gate[c])) * up[c];
  }
}

void AddInPlace(float* y, const float* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

}  // namespace moe::engine
