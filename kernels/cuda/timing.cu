// CUDA-event timing of work queued on a context's stream.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "cuda_event.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"

namespace moe::kernels {

using cuda_internal::CudaEvent;

double MedianOf(std::vector<double> values) {
  if (values.empty()) return 0.0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  if (values.size() % 2 == 1) return values[mid];
  const double upper = values[mid];
  const double lower = *std::max_element(values.begin(), values.begin() + mid);
  return 0.5 * (lower + upper);
}

absl::StatusOr<std::vector<double>> TimeOnStreamMs(CudaContext& context,
                                                   const std::function<absl::Status()>& fn,
                                                   int warmup, int repeats) {
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  CudaEvent start, stop;
  MOE_RETURN_IF_ERROR(start.Create());
  MOE_RETURN_IF_ERROR(stop.Create());
  for (int i = 0; i < warmup; ++i) MOE_RETURN_IF_ERROR(fn());
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  std::vector<double> times;
  times.reserve(static_cast<size_t>(std::max(repeats, 0)));
  for (int i = 0; i < repeats; ++i) {
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), ctx.stream));
    MOE_RETURN_IF_ERROR(fn());
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), ctx.stream));
    MOE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
    float ms = 0.0f;
    MOE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    times.push_back(ms);
  }
  return times;
}

}  // namespace moe::kernels
