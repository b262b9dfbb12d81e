// The CPU backend's measured ceilings: the dense sgemm rate of OpenBLAS and the memory-copy and
// memory-read bandwidths of all cores, taken in the same run as the MoE figures they are compared
// with.
#pragma once

#include "absl/status/statusor.h"
#include "bench/backend.h"

namespace moe::bench {

// Dense GEMM: C[n, n] = A[n, n] * B[n, n] with cblas_sgemm (row-major, f32) on random data,
// 2 n^3 FLOPs per call. Copy: memcpy of `copy_bytes` between two buffers far larger than the
// caches, split over the OpenMP threads; bandwidth counts bytes read plus bytes written
// (2 * copy_bytes per call), the STREAM "Copy" convention. Read: a float sum over a buffer of
// `read_bytes`, split over the OpenMP threads and vectorised; bandwidth counts the bytes read
// (nothing is written), which is what a pass streaming its weights once does. All three report
// the median of `repeats` timed calls after `warmup` untimed ones.
absl::StatusOr<Ceilings> MeasureCpuCeilings(const CeilingOptions& options);

inline constexpr int64_t kCpuDefaultGemmSize = 2048;
inline constexpr int64_t kCpuDefaultCopyBytes = int64_t{512} << 20;
inline constexpr int64_t kCpuDefaultReadBytes = int64_t{512} << 20;

// `options` with the zero (default) sizes replaced by the CPU defaults.
CeilingOptions ResolveCpuCeilingOptions(CeilingOptions options);

}  // namespace moe::bench
