// The CUDA backend of moe-bench: CudaMoELayer::Forward against ForwardNaiveLoop on device
// buffers, timed with CUDA events; ceilings from cuda_moe.h. Built only with MOE_HAVE_CUDA.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "bench/backend.h"

namespace moe::bench {

// FAILED_PRECONDITION naming the reason when no CUDA device can be used.
absl::StatusOr<std::unique_ptr<BenchBackend>> MakeCudaBackend();

}  // namespace moe::bench
