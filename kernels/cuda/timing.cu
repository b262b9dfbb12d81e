// CUDA-event timing of work queued on a context's stream.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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

struct CudaStreamMarks::Impl {
  CudaContext* context = nullptr;
  std::vector<CudaEvent> events;
  std::vector<bool> marked;
};

CudaStreamMarks::CudaStreamMarks(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaStreamMarks::~CudaStreamMarks() = default;

absl::StatusOr<std::unique_ptr<CudaStreamMarks>> CudaStreamMarks::Create(CudaContext& context,
                                                                         int count) {
  if (count < 1) {
    return absl::InvalidArgumentError(absl::StrCat("CudaStreamMarks: count ", count, " < 1"));
  }
  MOE_RETURN_IF_ERROR(context.impl().Activate());
  auto impl = std::make_unique<Impl>();
  impl->context = &context;
  impl->events.resize(static_cast<size_t>(count));
  for (CudaEvent& event : impl->events) MOE_RETURN_IF_ERROR(event.Create());
  impl->marked.assign(static_cast<size_t>(count), false);
  return std::unique_ptr<CudaStreamMarks>(new CudaStreamMarks(std::move(impl)));
}

int CudaStreamMarks::count() const { return static_cast<int>(impl_->events.size()); }

absl::Status CudaStreamMarks::Mark(int index) {
  if (index < 0 || index >= count()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaStreamMarks: mark ", index, " outside [0, ", count(), ")"));
  }
  CudaContext::Impl& ctx = impl_->context->impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(impl_->events[index].get(), ctx.stream));
  impl_->marked[index] = true;
  return absl::OkStatus();
}

absl::StatusOr<double> CudaStreamMarks::Seconds(int from, int to) {
  if (from < 0 || from >= count() || to < 0 || to >= count()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaStreamMarks: marks ", from, " and ", to, " outside [0, ", count(), ")"));
  }
  if (!impl_->marked[from] || !impl_->marked[to]) {
    return absl::FailedPreconditionError(
        absl::StrCat("CudaStreamMarks: mark ", impl_->marked[from] ? to : from, " not recorded"));
  }
  MOE_RETURN_IF_ERROR(impl_->context->impl().Activate());
  MOE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(impl_->events[to].get()));
  float ms = 0.0f;
  MOE_CUDA_RETURN_IF_ERROR(
      cudaEventElapsedTime(&ms, impl_->events[from].get(), impl_->events[to].get()));
  return static_cast<double>(ms) / 1e3;
}

}  // namespace moe::kernels
