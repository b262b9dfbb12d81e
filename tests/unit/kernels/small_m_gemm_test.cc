// The streaming small-row GEMM against a double-precision loop, over every edge of its register
// blocking: weight rows not a multiple of 4, token rows not a multiple of 3, lengths not a
// multiple of 8, strided inputs and outputs.
#include "kernels/cpu/small_m_gemm.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/random.h"

namespace moe::kernels::cpu {
namespace {

TEST(SmallMGemmTest, MatchesDoubleLoopOnEveryBlockEdge) {
  if (!SmallMGemmAvailable()) GTEST_SKIP() << "this CPU has no AVX2+FMA; the kernel is not used";
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr double kTolerance = 1e-5;
  for (int64_t rows : {1, 2, 3, 4, 5, 7, 9, 33}) {
    for (int64_t cols : {1, 7, 8, 9, 31, 64, 130}) {
      for (int64_t n : {1, 2, 3, 4, 5, 8, 16, 31, 32}) {
        const int64_t ldx = cols + 3, ldo = rows + 5;
        const auto w = testing::RandomFloats(rng, rows * cols);
        const auto x = testing::RandomFloats(rng, n * ldx);
        std::vector<float> out(n * ldo, NAN);
        SmallMGemm(w.data(), rows, cols, x.data(), ldx, n, out.data(), ldo);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            // Float32 accumulation error is bounded relative to the sum of |terms|, not to
            // the (possibly cancelling) result.
            double sum = 0.0, magnitude = 0.0;
            for (int64_t c = 0; c < cols; ++c) {
              const double term = double{w[r * cols + c]} * x[i * ldx + c];
              sum += term;
              magnitude += std::fabs(term);
            }
            EXPECT_LE(std::fabs(out[i * ldo + r] - sum), kTolerance * magnitude)
                << "rows " << rows << " cols " << cols << " n " << n << " at (" << i << ", " << r
                << "): got " << out[i * ldo + r] << " want " << sum << " (tolerance " << kTolerance
                << " x sum of |terms|)";
          }
          for (int64_t r = rows; r < ldo; ++r) {
            EXPECT_TRUE(std::isnan(out[i * ldo + r])) << "wrote past row " << rows;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace moe::kernels::cpu
