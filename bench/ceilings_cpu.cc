#include "bench/ceilings_cpu.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>

#include "absl/strings/str_cat.h"
#include "bench/random_fill.h"

namespace moe::bench {
namespace {

absl::StatusOr<double> MeasureSgemmTflops(const CeilingOptions& options, std::string* method) {
  const int64_t n = options.gemm_size;
  const size_t count = static_cast<size_t>(n * n);
  std::unique_ptr<float[]> a(new (std::nothrow) float[count]);
  std::unique_ptr<float[]> b(new (std::nothrow) float[count]);
  std::unique_ptr<float[]> c(new (std::nothrow) float[count]);
  if (a == nullptr || b == nullptr || c == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("dense GEMM ceiling: cannot allocate 3 x ", n, "^2 floats"));
  }
  FillUniform(kernels::DType::kF32, a.get(), n * n, 1.0f, 1);
  FillUniform(kernels::DType::kF32, b.get(), n * n, 1.0f, 2);
  const blasint bn = static_cast<blasint>(n);
  auto sgemm_once = [&]() {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bn, bn, bn, 1.0f, a.get(), bn, b.get(),
                bn, 0.0f, c.get(), bn);
    return absl::OkStatus();
  };
  absl::StatusOr<TimingStats> stats =
      Measure(HostTimed(sgemm_once), options.warmup, options.repeats);
  if (!stats.ok()) return stats.status();
  *method = absl::StrCat("OpenBLAS cblas_sgemm ", n, "x", n, "x", n, " f32, ",
                         openblas_get_num_threads(), " threads, median of ", options.repeats);
  const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * n;
  return flops / (stats->median_ms * 1e-3) / 1e12;
}

absl::StatusOr<double> MeasureCopyGbps(const CeilingOptions& options, std::string* method) {
  const int64_t bytes = options.copy_bytes;
  std::unique_ptr<char[]> src(new (std::nothrow) char[static_cast<size_t>(bytes)]);
  std::unique_ptr<char[]> dst(new (std::nothrow) char[static_cast<size_t>(bytes)]);
  if (src == nullptr || dst == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("copy ceiling: cannot allocate 2 x ", bytes, " bytes"));
  }
  // Real data in the source: untouched pages all map the zero page, which reads from cache.
  FillUniform(kernels::DType::kF32, src.get(), bytes / 4, 1.0f, 3);
  std::memset(dst.get(), 0, static_cast<size_t>(bytes));
  const int threads = omp_get_max_threads();
  const int64_t chunk = (bytes + threads - 1) / threads;
  auto copy_once = [&]() {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < threads; ++i) {
      const int64_t begin = i * chunk;
      const int64_t end = std::min(bytes, begin + chunk);
      if (begin < end) {
        std::memcpy(dst.get() + begin, src.get() + begin, static_cast<size_t>(end - begin));
      }
    }
    return absl::OkStatus();
  };
  absl::StatusOr<TimingStats> stats =
      Measure(HostTimed(copy_once), options.warmup, options.repeats);
  if (!stats.ok()) return stats.status();
  *method = absl::StrCat("memcpy ", bytes >> 20, " MiB over ", threads,
                         " OpenMP threads, (read + write bytes) / time as STREAM Copy counts, "
                         "median of ",
                         options.repeats);
  return 2.0 * static_cast<double>(bytes) / (stats->median_ms * 1e-3) / 1e9;
}

}  // namespace

CeilingOptions ResolveCpuCeilingOptions(CeilingOptions options) {
  if (options.gemm_size <= 0) options.gemm_size = kCpuDefaultGemmSize;
  if (options.copy_bytes <= 0) options.copy_bytes = kCpuDefaultCopyBytes;
  return options;
}

absl::StatusOr<Ceilings> MeasureCpuCeilings(const CeilingOptions& requested) {
  const CeilingOptions options = ResolveCpuCeilingOptions(requested);
  Ceilings ceilings;
  // Copy first: OpenBLAS threads keep spinning for a moment after a call.
  absl::StatusOr<double> copy = MeasureCopyGbps(options, &ceilings.copy_method);
  if (!copy.ok()) return copy.status();
  ceilings.copy_gbps = *copy;
  absl::StatusOr<double> gemm = MeasureSgemmTflops(options, &ceilings.dense_gemm_method);
  if (!gemm.ok()) return gemm.status();
  ceilings.dense_gemm_tflops = *gemm;
  return ceilings;
}

}  // namespace moe::bench
