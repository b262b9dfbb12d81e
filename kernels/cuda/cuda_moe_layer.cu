// The CUDA MoE layer: weight upload and the forward pass that strings the ops together.
//
//   router logits (fp32) -> top-k -> permutation (capacity) -> gather      [no host sync]
//   copy the E+1 expert offsets to pinned memory, wait              [the one host sync]
//   grouped GEMM gate|up -> activation -> grouped GEMM down -> combine (+ shared expert)
//
// A profiling pass (host_expert_seconds set) runs the experts one at a time instead (gate|up
// GEMM, activation over the expert's rows, down GEMM, between two events) and waits for the
// last expert's event at the end to read the times.
//
// The wait is what sizes the grouped GEMMs (cuBLAS takes per-group sizes on the host); the gather
// is queued before it so the device keeps working while the host waits. The counts it brings
// back are the per-expert load the metrics report anyway.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "activation.cuh"
#include "combine.cuh"
#include "compute_types.cuh"
#include "convert.cuh"
#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "cuda_event.cuh"
#include "expert_gemm.cuh"
#include "expert_permutation.cuh"
#include "gather_rows.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"
#include "router_logits.cuh"
#include "router_topk.cuh"

namespace moe::kernels {

using cuda_internal::ArenaPlan;
using cuda_internal::GemmProblem;
using cuda_internal::PaddedLd;

namespace {

enum class ExpertPath { kGrouped, kPerExpert, kNaiveLoop };

constexpr int64_t kMaxTokens = int64_t{1} << 26;  // as ValidateMoEForward
constexpr size_t kUploadChunkBytes = size_t{64} << 20;

absl::Status CheckForwardArgs(const RouterConfig& router, const void* input, int64_t num_tokens,
                              const void* output) {
  if (num_tokens < 0 || num_tokens > kMaxTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE forward: token count ", num_tokens, " outside [0, ", kMaxTokens, "]"));
  }
  if (num_tokens * router.top_k > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("MoE forward (CUDA): ", num_tokens,
                                                   " tokens x top_k ", router.top_k,
                                                   " assignments exceed 2^31-1; split the batch"));
  }
  if (num_tokens > 0 && output == nullptr) {
    return absl::InvalidArgumentError("MoE forward: output is required");
  }
  if (num_tokens > 0 && input == nullptr) {
    return absl::InvalidArgumentError("MoE forward: input is null");
  }
  return absl::OkStatus();
}

// Copies host `rows x cols` (src dtype, packed) to device rows of pitch `dst_ld` in the
// destination dtype, through a bounded staging buffer.
absl::Status UploadRows(CudaContext::Impl& ctx, const void* host, DType src_dtype, int64_t rows,
                        int64_t cols, void* device, DType dst_dtype, int64_t dst_ld) {
  if (rows == 0 || cols == 0) return absl::OkStatus();
  const size_t src_size = DTypeSize(src_dtype);
  const size_t dst_size = DTypeSize(dst_dtype);
  const size_t row_bytes = static_cast<size_t>(cols) * src_size;
  const int64_t chunk_rows =
      std::max<int64_t>(1, static_cast<int64_t>(kUploadChunkBytes / row_bytes));
  MOE_RETURN_IF_ERROR(
      ctx.staging.Reserve(std::min<int64_t>(chunk_rows, rows) * row_bytes, ctx.stream));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ctx.staging.data(),
                                             static_cast<const char*>(host) + r0 * row_bytes,
                                             n * row_bytes, cudaMemcpyHostToDevice, ctx.stream));
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchConvertRows(
        ctx.stream, ctx.staging.data(), src_dtype, cols,
        static_cast<char*>(device) + r0 * dst_ld * dst_size, dst_dtype, dst_ld, n, cols));
  }
  return absl::OkStatus();
}

// Allocates a zeroed device buffer and uploads `rows x cols` into it with pitch `dst_ld`.
absl::StatusOr<DeviceBuffer> UploadMatrix(CudaContext& context, const void* host, DType src_dtype,
                                          int64_t rows, int64_t cols, DType dst_dtype,
                                          int64_t dst_ld) {
  const size_t bytes = static_cast<size_t>(rows * dst_ld) * DTypeSize(dst_dtype);
  MOE_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::Allocate(context, bytes));
  if (dst_ld != cols) MOE_RETURN_IF_ERROR(buffer.FillBytes(0));
  MOE_RETURN_IF_ERROR(
      UploadRows(context.impl(), host, src_dtype, rows, cols, buffer.data(), dst_dtype, dst_ld));
  return buffer;
}

absl::StatusOr<DeviceBuffer> UploadOptionalF32(CudaContext& context, const float* host,
                                               int64_t count) {
  if (host == nullptr) return DeviceBuffer();
  return UploadMatrix(context, host, DType::kF32, 1, count, DType::kF32, count);
}

template <typename T>
T* Slice(char* base, size_t offset) {
  return reinterpret_cast<T*>(base + offset);
}

}  // namespace

struct CudaMoELayer::Impl {
  CudaContext* context = nullptr;
  MoELayerWeightsView shape;  // sizes only
  RouterConfig router;
  DType compute = DType::kBF16;
  int64_t d = 0, f = 0, num_experts = 0, in_rows = 0, fs = 0, shared_in_rows = 0;
  // Row pitches (elements) of the padded device matrices.
  int64_t d_ld = 0, f_ld = 0, in_ld = 0, fs_ld = 0, shared_in_ld = 0;
  int64_t weight_bytes = 0;

  DeviceBuffer router_weight;  // [E, d] f32
  DeviceBuffer router_bias;    // [E] f32
  DeviceBuffer w_in;           // [E, in_rows, d_ld]
  DeviceBuffer w_out;          // [E, d, f_ld]
  DeviceBuffer b_in;           // [E, in_rows] f32
  DeviceBuffer b_out;          // [E, d] f32
  DeviceBuffer shared_w_in;    // [shared_in_rows, d_ld]
  DeviceBuffer shared_w_out;   // [d, fs_ld]
  DeviceBuffer shared_gate;    // [d] f32

  cuda_internal::ExpertGemmRunner gemm_runner;
  std::vector<GemmProblem> gemm_in, gemm_out;
  CudaExpertGemm last_expert_gemm = CudaExpertGemm::kGrouped;
  // Profiling passes: a start and a stop event per expert ([2E], created on first use).
  std::vector<cuda_internal::CudaEvent> expert_events;

  absl::Status Run(const void* x, int64_t num_tokens, const CudaMoEOutputs& outputs,
                   ExpertPath path);
  absl::Status RunTimedExperts(const int32_t* host_offsets,
                               const cuda_internal::ActivationParams& activation,
                               const cuda_internal::ActivationParams& shared_activation,
                               bool has_shared);
  absl::Status ReadExpertSeconds(const int32_t* host_offsets, double* seconds);
  absl::Status RunNaiveExperts(const int32_t* host_offsets, int64_t num_tokens, char* px, char* h,
                               char* act, const void* shared_x, char* sh_h, char* sh_act,
                               char* sh_y, const int32_t* device_offsets);
  const void* WIn(int64_t e) const {
    return static_cast<const char*>(w_in.data()) + e * in_rows * d_ld * 2;
  }
  const void* WOut(int64_t e) const {
    return static_cast<const char*>(w_out.data()) + e * d * f_ld * 2;
  }
};

CudaMoELayer::CudaMoELayer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaMoELayer::~CudaMoELayer() = default;

absl::StatusOr<std::unique_ptr<CudaMoELayer>> CudaMoELayer::Upload(
    CudaContext& context, const MoELayerWeightsView& host, const RouterConfig& router,
    const CudaLayerOptions& options) {
  MOE_RETURN_IF_ERROR(ValidateMoELayer(host, router));
  if (!cuda_internal::IsComputeDType(options.compute_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA compute dtype ",
                                                   std::string(DTypeName(options.compute_dtype)),
                                                   " unsupported (BF16 or F16)"));
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  auto impl = std::make_unique<Impl>();
  Impl& l = *impl;
  l.context = &context;
  l.router = router;
  l.compute = options.compute_dtype;
  l.shape = host;
  l.shape.weight_dtype = options.compute_dtype;
  l.shape.router_weight = l.shape.router_bias = l.shape.b_in = l.shape.b_out = nullptr;
  l.shape.shared_gate = nullptr;
  l.shape.w_in = l.shape.w_out = l.shape.shared_w_in = l.shape.shared_w_out = nullptr;
  l.d = host.hidden_size;
  l.f = host.ffn_size;
  l.num_experts = host.num_experts;
  l.in_rows = host.in_rows();
  l.fs = host.shared_ffn_size;
  l.shared_in_rows = host.shared_in_rows();
  l.d_ld = PaddedLd(l.d);
  l.f_ld = PaddedLd(l.f);
  l.in_ld = PaddedLd(l.in_rows);
  l.fs_ld = PaddedLd(l.fs);
  l.shared_in_ld = PaddedLd(l.shared_in_rows);

  const DType src = host.weight_dtype;
  const DType dst = l.compute;
  const int64_t e = l.num_experts;
  MOE_ASSIGN_OR_RETURN(l.router_weight, UploadMatrix(context, host.router_weight, DType::kF32, e,
                                                     l.d, DType::kF32, l.d));
  MOE_ASSIGN_OR_RETURN(l.router_bias, UploadOptionalF32(context, host.router_bias, e));
  MOE_ASSIGN_OR_RETURN(l.w_in,
                       UploadMatrix(context, host.w_in, src, e * l.in_rows, l.d, dst, l.d_ld));
  MOE_ASSIGN_OR_RETURN(l.w_out, UploadMatrix(context, host.w_out, src, e * l.d, l.f, dst, l.f_ld));
  MOE_ASSIGN_OR_RETURN(l.b_in, UploadOptionalF32(context, host.b_in, e * l.in_rows));
  MOE_ASSIGN_OR_RETURN(l.b_out, UploadOptionalF32(context, host.b_out, e * l.d));
  if (l.fs > 0) {
    MOE_ASSIGN_OR_RETURN(l.shared_w_in, UploadMatrix(context, host.shared_w_in, src,
                                                     l.shared_in_rows, l.d, dst, l.d_ld));
    MOE_ASSIGN_OR_RETURN(l.shared_w_out,
                         UploadMatrix(context, host.shared_w_out, src, l.d, l.fs, dst, l.fs_ld));
    MOE_ASSIGN_OR_RETURN(l.shared_gate, UploadOptionalF32(context, host.shared_gate, l.d));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  for (const DeviceBuffer* b : {&l.router_weight, &l.router_bias, &l.w_in, &l.w_out, &l.b_in,
                                &l.b_out, &l.shared_w_in, &l.shared_w_out, &l.shared_gate}) {
    l.weight_bytes += static_cast<int64_t>(b->bytes());
  }
  return std::unique_ptr<CudaMoELayer>(new CudaMoELayer(std::move(impl)));
}

const MoELayerWeightsView& CudaMoELayer::layer_shape() const { return impl_->shape; }
const RouterConfig& CudaMoELayer::router() const { return impl_->router; }
DType CudaMoELayer::compute_dtype() const { return impl_->compute; }
int64_t CudaMoELayer::weight_bytes() const { return impl_->weight_bytes; }
CudaContext& CudaMoELayer::context() { return *impl_->context; }
CudaExpertGemm CudaMoELayer::last_expert_gemm() const { return impl_->last_expert_gemm; }
bool CudaMoELayer::grouped_gemm_unsupported() const {
  return impl_->gemm_runner.grouped_unsupported();
}

absl::Status CudaMoELayer::Forward(const void* x, int64_t num_tokens, const CudaMoEOutputs& outputs,
                                   const CudaForwardOptions& options) {
  return impl_->Run(x, num_tokens, outputs,
                    options.expert_gemm == CudaExpertGemm::kGrouped ? ExpertPath::kGrouped
                                                                    : ExpertPath::kPerExpert);
}

absl::Status CudaMoELayer::ForwardNaiveLoop(const void* x, int64_t num_tokens,
                                            const CudaMoEOutputs& outputs) {
  return impl_->Run(x, num_tokens, outputs, ExpertPath::kNaiveLoop);
}

absl::Status CudaMoELayer::Impl::Run(const void* x, int64_t num_tokens,
                                     const CudaMoEOutputs& outputs, ExpertPath path) {
  MOE_RETURN_IF_ERROR(CheckForwardArgs(router, x, num_tokens, outputs.output));
  CudaContext::Impl& ctx = context->impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  cudaStream_t stream = ctx.stream;
  const int64_t E = num_experts;
  const int k = router.top_k;
  const int64_t T = num_tokens;
  const int64_t N = T * k;
  // The naive loop is a benchmark baseline: it does not time experts.
  double* const expert_seconds =
      path == ExpertPath::kNaiveLoop ? nullptr : outputs.host_expert_seconds;
  if (expert_seconds != nullptr) std::fill_n(expert_seconds, E, 0.0);

  if (T == 0) {
    if (outputs.expert_token_counts != nullptr) {
      MOE_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(outputs.expert_token_counts, 0, sizeof(int64_t) * E, stream));
    }
    if (outputs.dropped_assignments != nullptr) {
      MOE_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(outputs.dropped_assignments, 0, sizeof(int64_t), stream));
    }
    if (outputs.host_expert_token_counts != nullptr) {
      std::fill_n(outputs.host_expert_token_counts, E, 0);
    }
    if (outputs.host_dropped_assignments != nullptr) *outputs.host_dropped_assignments = 0;
    return absl::OkStatus();
  }

  // ---- Scratch layout (one arena, 256-byte aligned slices).
  const bool has_shared = fs > 0;
  // The shared expert's GEMM reads x directly when its rows are already 16-byte aligned.
  const bool copy_shared_x = has_shared && (d_ld != d || reinterpret_cast<uintptr_t>(x) % 16 != 0);
  const int64_t pointer_stride = E + 1;  // experts + the shared expert
  MOE_ASSIGN_OR_RETURN(const size_t temp_bytes, cuda_internal::ExpertPermutationTempBytes(N, E));
  ArenaPlan plan;
  const size_t o_x_f32 = plan.Add(sizeof(float) * T * d);
  const size_t o_logits = plan.Add(outputs.router_logits ? 0 : sizeof(float) * T * E);
  const size_t o_ids = plan.Add(outputs.topk_ids ? 0 : sizeof(int32_t) * N);
  const size_t o_weights = plan.Add(outputs.topk_weights ? 0 : sizeof(float) * N);
  const size_t o_offsets = plan.Add(sizeof(int32_t) * (E + 1));
  const size_t o_p2a = plan.Add(sizeof(int32_t) * N);
  const size_t o_a2p = plan.Add(sizeof(int32_t) * N);
  const size_t o_raw_counts = plan.Add(sizeof(int32_t) * E);
  const size_t o_raw_offsets = plan.Add(sizeof(int32_t) * E);
  const size_t o_kept = plan.Add(sizeof(int32_t) * (E + 1));
  const size_t o_sorted_experts = plan.Add(sizeof(uint32_t) * N);
  const size_t o_index = plan.Add(sizeof(int32_t) * N);
  const size_t o_sorted_assignments = plan.Add(sizeof(int32_t) * N);
  const size_t o_temp = plan.Add(temp_bytes);
  const size_t o_px = plan.Add(2 * N * d_ld);  // gathered rows; reused for the expert outputs
  const size_t o_h = plan.Add(2 * N * in_ld);
  const size_t o_act = plan.Add(2 * N * f_ld);
  const size_t o_shared_x = plan.Add(copy_shared_x ? 2 * T * d_ld : 0);
  const size_t o_sh_h = plan.Add(has_shared ? 2 * T * shared_in_ld : 0);
  const size_t o_sh_act = plan.Add(has_shared ? 2 * T * fs_ld : 0);
  const size_t o_sh_y = plan.Add(has_shared ? 2 * T * d_ld : 0);
  const size_t o_pointers = plan.Add(sizeof(void*) * 6 * pointer_stride);
  MOE_RETURN_IF_ERROR(ctx.scratch.Reserve(plan.total(), stream));
  char* base = ctx.scratch.data();

  // Pinned host: expert offsets, then both GEMMs' pointer arrays.
  const size_t pinned_pointers_offset = (sizeof(int32_t) * (E + 1) + 63) / 64 * 64;
  MOE_RETURN_IF_ERROR(
      ctx.ReservePinned(pinned_pointers_offset + sizeof(void*) * 6 * pointer_stride));
  auto* host_offsets = static_cast<int32_t*>(ctx.pinned);
  auto* host_pointers =
      reinterpret_cast<void**>(static_cast<char*>(ctx.pinned) + pinned_pointers_offset);

  float* x_f32 = Slice<float>(base, o_x_f32);
  float* logits = outputs.router_logits ? outputs.router_logits : Slice<float>(base, o_logits);
  int32_t* ids = outputs.topk_ids ? outputs.topk_ids : Slice<int32_t>(base, o_ids);
  float* weights = outputs.topk_weights ? outputs.topk_weights : Slice<float>(base, o_weights);
  int32_t* offsets = Slice<int32_t>(base, o_offsets);
  char* px = base + o_px;
  char* h = base + o_h;
  char* act = base + o_act;
  char* y = px;  // GEMM 1 has consumed the gathered rows when GEMM 2 writes
  const void* shared_x = copy_shared_x ? static_cast<const void*>(base + o_shared_x) : x;
  char* sh_h = base + o_sh_h;
  char* sh_act = base + o_sh_act;
  char* sh_y = base + o_sh_y;
  auto* device_pointers = reinterpret_cast<void**>(base + o_pointers);

  // ---- Routing.
  MOE_RETURN_IF_ERROR(cuda_internal::LaunchRouterLogits(
      stream, ctx.cublas, x, compute, T, d, router_weight.as<float>(), E, x_f32, logits));
  cuda_internal::RouterTopKParams topk;
  topk.logits = logits;
  topk.bias = router_bias.as<float>();
  topk.num_tokens = T;
  topk.num_experts = static_cast<int>(E);
  topk.router = router;
  topk.topk_ids = ids;
  topk.topk_weights = weights;
  MOE_RETURN_IF_ERROR(cuda_internal::LaunchRouterTopK(stream, topk));

  cuda_internal::ExpertPermutationBuffers perm;
  perm.expert_offsets = offsets;
  perm.permuted_to_assignment = Slice<int32_t>(base, o_p2a);
  perm.assignment_to_permuted = Slice<int32_t>(base, o_a2p);
  perm.raw_counts = Slice<int32_t>(base, o_raw_counts);
  perm.raw_offsets = Slice<int32_t>(base, o_raw_offsets);
  perm.kept_counts = Slice<int32_t>(base, o_kept);
  perm.sorted_experts = Slice<uint32_t>(base, o_sorted_experts);
  perm.assignment_index = Slice<int32_t>(base, o_index);
  perm.sorted_assignments = Slice<int32_t>(base, o_sorted_assignments);
  perm.temp = base + o_temp;
  perm.temp_bytes = temp_bytes;
  MOE_RETURN_IF_ERROR(cuda_internal::LaunchExpertPermutation(stream, ids, N, E,
                                                             ExpertCapacity(router, T, E), perm));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_offsets, offsets, sizeof(int32_t) * (E + 1),
                                           cudaMemcpyDeviceToHost, stream));

  // Queued before the wait: the device gathers while the host waits for the counts.
  cuda_internal::GatherRowsParams gather;
  gather.x = x;
  gather.hidden_size = d;
  gather.top_k = k;
  gather.permuted_to_assignment = perm.permuted_to_assignment;
  gather.num_rows = offsets + E;
  gather.max_rows = N;
  gather.out = px;
  gather.out_ld = d_ld;
  MOE_RETURN_IF_ERROR(cuda_internal::LaunchGatherRows(stream, gather));
  if (copy_shared_x) {
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchConvertRows(stream, x, compute, d, base + o_shared_x,
                                                         compute, d_ld, T, d));
  }

  // ---- The one host synchronisation of the layer: the per-expert row counts.
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  const int64_t num_rows = host_offsets[E];

  // ---- Experts.
  if (path == ExpertPath::kNaiveLoop) {
    MOE_RETURN_IF_ERROR(
        RunNaiveExperts(host_offsets, T, px, h, act, shared_x, sh_h, sh_act, sh_y, offsets));
  } else {
    gemm_in.clear();
    gemm_out.clear();
    for (int64_t e = 0; e < E; ++e) {
      const int64_t begin = host_offsets[e];
      const int rows = host_offsets[e + 1] - host_offsets[e];
      if (rows == 0) continue;
      gemm_in.push_back({WIn(e), px + 2 * begin * d_ld, h + 2 * begin * in_ld,
                         static_cast<int>(in_rows), rows, static_cast<int>(d),
                         static_cast<int>(d_ld), static_cast<int>(d_ld), static_cast<int>(in_ld)});
      gemm_out.push_back({WOut(e), act + 2 * begin * f_ld, y + 2 * begin * d_ld,
                          static_cast<int>(d), rows, static_cast<int>(f), static_cast<int>(f_ld),
                          static_cast<int>(f_ld), static_cast<int>(d_ld)});
    }
    if (has_shared) {
      gemm_in.push_back({shared_w_in.data(), shared_x, sh_h, static_cast<int>(shared_in_rows),
                         static_cast<int>(T), static_cast<int>(d), static_cast<int>(d_ld),
                         static_cast<int>(d_ld), static_cast<int>(shared_in_ld)});
      gemm_out.push_back({shared_w_out.data(), sh_act, sh_y, static_cast<int>(d),
                          static_cast<int>(T), static_cast<int>(fs), static_cast<int>(fs_ld),
                          static_cast<int>(fs_ld), static_cast<int>(d_ld)});
    }
    const CudaExpertGemm mode = path == ExpertPath::kGrouped && expert_seconds == nullptr
                                    ? CudaExpertGemm::kGrouped
                                    : CudaExpertGemm::kPerExpert;
    cuda_internal::ActivationParams activation;
    activation.dtype = compute;
    activation.activation = shape.activation;
    activation.h = h;
    activation.h_ld = in_ld;
    activation.out = act;
    activation.out_ld = f_ld;
    activation.num_rows = num_rows;
    activation.ffn_size = f;
    activation.bias = b_in.as<float>();
    activation.bias_ld = in_rows;
    activation.expert_offsets = offsets;
    activation.num_experts = static_cast<int>(E);
    cuda_internal::ActivationParams shared_activation = activation;
    shared_activation.h = sh_h;
    shared_activation.h_ld = shared_in_ld;
    shared_activation.out = sh_act;
    shared_activation.out_ld = fs_ld;
    shared_activation.num_rows = T;
    shared_activation.ffn_size = fs;
    shared_activation.bias = nullptr;
    if (expert_seconds != nullptr) {
      MOE_RETURN_IF_ERROR(RunTimedExperts(host_offsets, activation, shared_activation, has_shared));
    } else {
      if (mode == CudaExpertGemm::kGrouped) {
        cuda_internal::ExpertGemmRunner::WritePointerArrays(gemm_in, pointer_stride, host_pointers);
        cuda_internal::ExpertGemmRunner::WritePointerArrays(gemm_out, pointer_stride,
                                                            host_pointers + 3 * pointer_stride);
        // Safe to reuse the pinned array: the wait above ordered every earlier copy from it.
        MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_pointers, host_pointers,
                                                 sizeof(void*) * 6 * pointer_stride,
                                                 cudaMemcpyHostToDevice, stream));
      }
      MOE_RETURN_IF_ERROR(
          gemm_runner.Run(ctx.cublas, compute, gemm_in, device_pointers, pointer_stride, mode));
      MOE_RETURN_IF_ERROR(cuda_internal::LaunchActivation(stream, activation));
      if (has_shared) {
        MOE_RETURN_IF_ERROR(cuda_internal::LaunchActivation(stream, shared_activation));
      }
      MOE_RETURN_IF_ERROR(gemm_runner.Run(ctx.cublas, compute, gemm_out,
                                          device_pointers + 3 * pointer_stride, pointer_stride,
                                          mode));
    }
    last_expert_gemm = mode == CudaExpertGemm::kGrouped && !gemm_runner.grouped_unsupported()
                           ? CudaExpertGemm::kGrouped
                           : CudaExpertGemm::kPerExpert;
  }

  // ---- Combine.
  cuda_internal::CombineParams combine;
  combine.dtype = compute;
  combine.num_tokens = T;
  combine.hidden_size = d;
  combine.top_k = k;
  combine.expert_y = y;
  combine.y_ld = d_ld;
  combine.assignment_to_permuted = perm.assignment_to_permuted;
  combine.topk_ids = ids;
  combine.topk_weights = weights;
  combine.b_out = b_out.as<float>();
  combine.shared_y = has_shared ? sh_y : nullptr;
  combine.shared_ld = d_ld;
  combine.shared_gate = shared_gate.as<float>();
  combine.x = x;
  combine.out = outputs.output;
  MOE_RETURN_IF_ERROR(cuda_internal::LaunchCombine(stream, combine));

  MOE_RETURN_IF_ERROR(cuda_internal::LaunchWriteExpertCounts(
      stream, offsets, E, N, outputs.expert_token_counts, outputs.dropped_assignments));
  if (outputs.host_expert_token_counts != nullptr) {
    for (int64_t e = 0; e < E; ++e) {
      outputs.host_expert_token_counts[e] = host_offsets[e + 1] - host_offsets[e];
    }
  }
  if (outputs.host_dropped_assignments != nullptr) {
    *outputs.host_dropped_assignments = N - num_rows;
  }
  if (expert_seconds != nullptr) {
    MOE_RETURN_IF_ERROR(ReadExpertSeconds(host_offsets, expert_seconds));
  }
  return absl::OkStatus();
}

// Profiling pass: gemm_in / gemm_out hold the active experts' problems in expert order (then
// the shared expert's). Each active expert runs alone between its start and stop events; the
// activation covers only its rows (offsets and biases as in the one launch over all rows, so
// every element is computed exactly as in a kPerExpert pass).
absl::Status CudaMoELayer::Impl::RunTimedExperts(
    const int32_t* host_offsets, const cuda_internal::ActivationParams& activation,
    const cuda_internal::ActivationParams& shared_activation, bool has_shared) {
  CudaContext::Impl& ctx = context->impl();
  if (expert_events.size() < static_cast<size_t>(2 * num_experts)) {
    expert_events.resize(static_cast<size_t>(2 * num_experts));
    for (cuda_internal::CudaEvent& event : expert_events) {
      if (event.get() == nullptr) MOE_RETURN_IF_ERROR(event.Create());
    }
  }
  size_t problem = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = host_offsets[e];
    const int64_t rows = host_offsets[e + 1] - begin;
    if (rows == 0) continue;
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(expert_events[2 * e].get(), ctx.stream));
    MOE_RETURN_IF_ERROR(cuda_internal::RunGemm(ctx.cublas, compute, gemm_in[problem]));
    cuda_internal::ActivationParams expert_activation = activation;
    expert_activation.row_begin = begin;
    expert_activation.num_rows = rows;
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchActivation(ctx.stream, expert_activation));
    MOE_RETURN_IF_ERROR(cuda_internal::RunGemm(ctx.cublas, compute, gemm_out[problem]));
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(expert_events[2 * e + 1].get(), ctx.stream));
    ++problem;
  }
  if (has_shared) {
    MOE_RETURN_IF_ERROR(cuda_internal::RunGemm(ctx.cublas, compute, gemm_in[problem]));
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchActivation(ctx.stream, shared_activation));
    MOE_RETURN_IF_ERROR(cuda_internal::RunGemm(ctx.cublas, compute, gemm_out[problem]));
  }
  return absl::OkStatus();
}

// Waits for the last active expert's stop event, then converts every active expert's event
// pair to seconds (`seconds` is already zeroed).
absl::Status CudaMoELayer::Impl::ReadExpertSeconds(const int32_t* host_offsets, double* seconds) {
  int64_t last = -1;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (host_offsets[e + 1] > host_offsets[e]) last = e;
  }
  if (last < 0) return absl::OkStatus();
  MOE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(expert_events[2 * last + 1].get()));
  for (int64_t e = 0; e <= last; ++e) {
    if (host_offsets[e + 1] == host_offsets[e]) continue;
    float ms = 0.0f;
    MOE_CUDA_RETURN_IF_ERROR(
        cudaEventElapsedTime(&ms, expert_events[2 * e].get(), expert_events[2 * e + 1].get()));
    seconds[e] = 1e-3 * static_cast<double>(ms);
  }
  return absl::OkStatus();
}

// The framework-loop baseline: per active expert, separate gate / up / down GEMMs and one
// activation launch; the shared expert the same way.
absl::Status CudaMoELayer::Impl::RunNaiveExperts(const int32_t* host_offsets, int64_t num_tokens,
                                                 char* px, char* h, char* act, const void* shared_x,
                                                 char* sh_h, char* sh_act, char* sh_y,
                                                 const int32_t* device_offsets) {
  CudaContext::Impl& ctx = context->impl();
  const bool gated = IsGated(shape.activation);
  // input [rows, d_ld] -> hidden [rows, hidden_ld] (gate | up) -> activated [rows, ffn_ld]
  // -> out [rows, d_ld].
  auto run_expert = [&](const void* w_in_e, const void* w_out_e, const float* bias_e,
                        const void* input, int64_t rows, int64_t ffn, int64_t ffn_ld, void* hidden,
                        int64_t hidden_ld, void* activated, void* out) -> absl::Status {
    const int n = static_cast<int>(rows);
    // Gate (or the only) projection, then up, each its own GEMM.
    MOE_RETURN_IF_ERROR(cuda_internal::RunGemm(
        ctx.cublas, compute,
        {w_in_e, input, hidden, static_cast<int>(ffn), n, static_cast<int>(d),
         static_cast<int>(d_ld), static_cast<int>(d_ld), static_cast<int>(hidden_ld)}));
    if (gated) {
      MOE_RETURN_IF_ERROR(cuda_internal::RunGemm(
          ctx.cublas, compute,
          {static_cast<const char*>(w_in_e) + 2 * ffn * d_ld, input,
           static_cast<char*>(hidden) + 2 * ffn, static_cast<int>(ffn), n, static_cast<int>(d),
           static_cast<int>(d_ld), static_cast<int>(d_ld), static_cast<int>(hidden_ld)}));
    }
    cuda_internal::ActivationParams a;
    a.dtype = compute;
    a.activation = shape.activation;
    a.h = hidden;
    a.h_ld = hidden_ld;
    a.out = activated;
    a.out_ld = ffn_ld;
    a.num_rows = rows;
    a.ffn_size = ffn;
    // The bias pointer is already this expert's row, so every row maps to "expert 0".
    a.bias = bias_e;
    a.bias_ld = 0;
    a.expert_offsets = device_offsets;
    a.num_experts = 1;
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchActivation(ctx.stream, a));
    return cuda_internal::RunGemm(
        ctx.cublas, compute,
        {w_out_e, activated, out, static_cast<int>(d), n, static_cast<int>(ffn),
         static_cast<int>(ffn_ld), static_cast<int>(ffn_ld), static_cast<int>(d_ld)});
  };
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = host_offsets[e];
    const int64_t rows = host_offsets[e + 1] - begin;
    if (rows == 0) continue;
    const float* bias_e = b_in.data() != nullptr ? b_in.as<float>() + e * in_rows : nullptr;
    MOE_RETURN_IF_ERROR(run_expert(WIn(e), WOut(e), bias_e, px + 2 * begin * d_ld, rows, f, f_ld,
                                   h + 2 * begin * in_ld, in_ld, act + 2 * begin * f_ld,
                                   px + 2 * begin * d_ld));
  }
  if (fs > 0) {
    MOE_RETURN_IF_ERROR(run_expert(shared_w_in.data(), shared_w_out.data(), nullptr, shared_x,
                                   num_tokens, fs, fs_ld, sh_h, shared_in_ld, sh_act, sh_y));
  }
  return absl::OkStatus();
}

absl::Status CudaMoELayer::ForwardHost(const float* input, int64_t num_tokens,
                                       const MoELayerOutputs& outputs,
                                       const CudaForwardOptions& options) {
  Impl& l = *impl_;
  MOE_RETURN_IF_ERROR(CheckForwardArgs(l.router, input, num_tokens, outputs.output));
  const int64_t E = l.num_experts;
  const int64_t T = num_tokens;
  const int64_t N = T * l.router.top_k;
  if (T == 0) {
    if (outputs.expert_token_counts != nullptr) std::fill_n(outputs.expert_token_counts, E, 0);
    if (outputs.expert_seconds != nullptr) std::fill_n(outputs.expert_seconds, E, 0.0);
    if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = 0;
    return absl::OkStatus();
  }
  CudaContext::Impl& ctx = l.context->impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  cudaStream_t stream = ctx.stream;
  const size_t compute_size = DTypeSize(l.compute);
  ArenaPlan plan;
  const size_t o_f32 = plan.Add(sizeof(float) * T * l.d);  // input, later the output
  const size_t o_x = plan.Add(compute_size * T * l.d);
  const size_t o_y = plan.Add(compute_size * T * l.d);
  const size_t o_logits = plan.Add(outputs.router_logits ? sizeof(float) * T * E : 0);
  const size_t o_ids = plan.Add(outputs.topk_ids ? sizeof(int32_t) * N : 0);
  const size_t o_weights = plan.Add(outputs.topk_weights ? sizeof(float) * N : 0);
  MOE_RETURN_IF_ERROR(ctx.staging.Reserve(plan.total(), stream));
  char* base = ctx.staging.data();
  float* f32 = Slice<float>(base, o_f32);

  MOE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(f32, input, sizeof(float) * T * l.d, cudaMemcpyHostToDevice, stream));
  MOE_RETURN_IF_ERROR(cuda_internal::LaunchConvertRows(stream, f32, DType::kF32, l.d, base + o_x,
                                                       l.compute, l.d, T, l.d));
  CudaMoEOutputs device_outputs;
  device_outputs.output = base + o_y;
  if (outputs.router_logits) device_outputs.router_logits = Slice<float>(base, o_logits);
  if (outputs.topk_ids) device_outputs.topk_ids = Slice<int32_t>(base, o_ids);
  if (outputs.topk_weights) device_outputs.topk_weights = Slice<float>(base, o_weights);
  device_outputs.host_expert_token_counts = outputs.expert_token_counts;
  device_outputs.host_dropped_assignments = outputs.dropped_assignments;
  device_outputs.host_expert_seconds = outputs.expert_seconds;
  MOE_RETURN_IF_ERROR(Forward(base + o_x, T, device_outputs, options));

  MOE_RETURN_IF_ERROR(cuda_internal::LaunchConvertRows(stream, base + o_y, l.compute, l.d, f32,
                                                       DType::kF32, l.d, T, l.d));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(outputs.output, f32, sizeof(float) * T * l.d,
                                           cudaMemcpyDeviceToHost, stream));
  if (outputs.router_logits) {
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(outputs.router_logits, device_outputs.router_logits,
                                             sizeof(float) * T * E, cudaMemcpyDeviceToHost,
                                             stream));
  }
  if (outputs.topk_ids) {
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(outputs.topk_ids, device_outputs.topk_ids,
                                             sizeof(int32_t) * N, cudaMemcpyDeviceToHost, stream));
  }
  if (outputs.topk_weights) {
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(outputs.topk_weights, device_outputs.topk_weights,
                                             sizeof(float) * N, cudaMemcpyDeviceToHost, stream));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace moe::kernels
