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

absl::StatusOr<double> MeasureReadGbps(const CeilingOptions& options, std::string* method) {
  // Floats summed per step into as many independent accumulators: enough vector registers'
  // worth of add chains to hide the add latency, so the loop waits on memory, not on itself.
  constexpr int64_t kLanes = 64;
  const int64_t count = options.read_bytes / static_cast<int64_t>(sizeof(float));
  std::unique_ptr<float[]> data(new (std::nothrow) float[static_cast<size_t>(count)]);
  if (data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("read ceiling: cannot allocate ", options.read_bytes, " bytes"));
  }
  // Real data: untouched pages all map the zero page, which reads from cache.
  FillUniform(kernels::DType::kF32, data.get(), count, 1.0f, 4);
  const int threads = omp_get_max_threads();
  const float* values = data.get();
  const int64_t steps = count / kLanes;
  volatile float sink = 0.0f;  // keeps the sum, and so the reads, alive
  auto read_once = [&]() {
    float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int64_t thread = omp_get_thread_num();
      const int64_t team = omp_get_num_threads();
      float lanes[kLanes] = {};
      for (int64_t step = steps * thread / team; step < steps * (thread + 1) / team; ++step) {
        const float* block = values + step * kLanes;
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) lanes[j] += block[j];
      }
      for (int64_t j = 0; j < kLanes; ++j) total += lanes[j];
    }
    for (int64_t i = steps * kLanes; i < count; ++i) total += values[i];
    sink = total;
    return absl::OkStatus();
  };
  absl::StatusOr<TimingStats> stats =
      Measure(HostTimed(read_once), options.warmup, options.repeats);
  if (!stats.ok()) return stats.status();
  *method = absl::StrCat("float sum over ", options.read_bytes >> 20, " MiB, ", threads,
                         " OpenMP threads, ", kLanes,
                         " independent lanes each, bytes read / time, median of ", options.repeats);
  return static_cast<double>(count * sizeof(float)) / (stats->median_ms * 1e-3) / 1e9;
}

}  // namespace

CeilingOptions ResolveCpuCeilingOptions(CeilingOptions options) {
  if (options.gemm_size <= 0) options.gemm_size = kCpuDefaultGemmSize;
  if (options.copy_bytes <= 0) options.copy_bytes = kCpuDefaultCopyBytes;
  if (options.read_bytes <= 0) options.read_bytes = kCpuDefaultReadBytes;
  return options;
}

absl::StatusOr<Ceilings> MeasureCpuCeilings(const CeilingOptions& requested) {
  const CeilingOptions options = ResolveCpuCeilingOptions(requested);
  Ceilings ceilings;
  // Copy and read first: OpenBLAS threads keep spinning for a moment after a call.
  absl::StatusOr<double> copy = MeasureCopyGbps(options, &ceilings.copy_method);
  if (!copy.ok()) return copy.status();
  ceilings.copy_gbps = *copy;
  absl::StatusOr<double> read = MeasureReadGbps(options, &ceilings.read_method);
  if (!read.ok()) return read.status();
  ceilings.read_gbps = *read;
  absl::StatusOr<double> gemm = MeasureSgemmTflops(options, &ceilings.dense_gemm_method);
  if (!gemm.ok()) return gemm.status();
  ceilings.dense_gemm_tflops = *gemm;
  return ceilings;
}

}  // namespace moe::bench
