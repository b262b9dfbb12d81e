// CUDA MoE layer: the public host interface of the CUDA backend. No CUDA types appear here, so
// host code (engine, benchmark, tests) compiles with the plain C++ compiler; the CUDA objects
// live behind opaque handles defined in kernels/cuda/.
//
// Data path of one forward pass (one MoE layer, T tokens, all on the context's stream):
//   x [T,d] ─► router GEMM (fp32) ─► scores + top-k ─► histogram, scan, stable scatter (capacity)
//     ─► gather rows in expert order ─► grouped GEMM 1 (gate|up fused) ─► activation
//     ─► grouped GEMM 2 (down) ─► un-permute + weighted combine (+ shared expert) ─► y [T,d]
// Activations are kept in the compute dtype (kBF16 or kF16) with float32 accumulation; router
// weights, logits, scores and combine weights stay float32.
//
// Host synchronisation: a forward pass waits on the device once, to read the per-expert row
// counts that size the grouped GEMMs (they are returned for metrics as well); the gather is
// queued before the wait so the device keeps busy. (A call that first needs a larger pinned
// host buffer waits once more to replace it.) ForwardHost also waits for its copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"

namespace moe::kernels {

// ---------------------------------------------------------------------------------------------
// Devices

// Number of usable CUDA devices. 0 when the runtime reports none or fails (no driver, no device,
// driver too old): that is not an error, and `why_none` (when given) receives the runtime's
// explanation.
int CudaDeviceCount(std::string* why_none = nullptr);

struct CudaDeviceInfo {
  int index = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3"
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  int multiprocessor_count = 0;
  // Dynamic shared memory one thread block may opt in to (cudaFuncSetAttribute); 227 KiB on sm_90.
  int64_t max_shared_memory_per_block_optin = 0;
  int64_t total_memory_bytes = 0;
  int64_t free_memory_bytes = 0;  // at the time of the query
  int64_t used_memory_bytes() const { return total_memory_bytes - free_memory_bytes; }
  // "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 1.2/79.1 GiB used)"
  std::string Describe() const;
};

absl::StatusOr<CudaDeviceInfo> GetCudaDeviceInfo(int device);

// The CUDA architectures this build's kernels were compiled for, as CMAKE_CUDA_ARCHITECTURES
// spelled them ("90": sm_90 machine code plus compute_90 PTX for newer devices to compile).
const char* CudaBuildArchitectures();

// ---------------------------------------------------------------------------------------------
// Context: one device, one stream, cuBLAS and cuBLASLt handles, and a scratch arena that grows
// to the largest forward pass seen. Every operation taking a context runs on its stream, in
// order. Thread-compatible: one thread uses a context at a time. Must outlive every layer,
// buffer and timer created with it.

class CudaContext {
 public:
  // FAILED_PRECONDITION when there is no such device or when this build's kernels cannot run
  // on it (compiled for other architectures: the message names the device, its compute
  // capability and CudaBuildArchitectures()); INVALID_ARGUMENT for a device index out of range.
  static absl::StatusOr<std::unique_ptr<CudaContext>> Create(int device = 0);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const;
  // Device properties captured at creation (free memory as of then; query again for current).
  const CudaDeviceInfo& device_info() const;
  // The stream as an opaque handle (a cudaStream_t) for callers that launch their own work.
  void* stream_handle() const;
  // Waits for all work queued on the stream; returns the first asynchronous error if any.
  absl::Status Synchronize();

  struct Impl;  // defined in kernels/cuda/cuda_context.cuh
  Impl& impl() { return *impl_; }

 private:
  explicit CudaContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Device memory helpers (tests, benchmark, engine)

// RAII device allocation. Movable, not copyable. Copies are ordered on the context's stream and
// the host-side ones return when the data has arrived.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(CudaContext& context, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T>
  T* as() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data_);
  }
  size_t bytes() const { return bytes_; }

  // Raw byte copies; `bytes + offset` must fit in the buffer.
  absl::Status CopyFromHost(const void* src, size_t bytes, size_t offset = 0);
  absl::Status CopyToHost(void* dst, size_t bytes, size_t offset = 0) const;
  // Sets every byte to `value` (0xFF poisons float32/bf16/f16 with NaN and int32 with -1).
  absl::Status FillBytes(uint8_t value);

 private:
  DeviceBuffer(CudaContext* context, void* data, size_t bytes)
      : context_(context), data_(data), bytes_(bytes) {}
  void Release();

  CudaContext* context_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Host float32 [count] -> device `dtype` (kF32, kBF16 or kF16), converted on the device with
// round-to-nearest-even. Returns when the copy is complete.
absl::Status UploadFloats(CudaContext& context, const float* host, int64_t count, DType dtype,
                          void* device);
// Device `dtype` [count] -> host float32. Returns when the data is on the host.
absl::Status DownloadFloats(CudaContext& context, const void* device, DType dtype, int64_t count,
                            float* host);
// Fills device `dtype` [count] with normal(0, scale) values generated on the device from
// (seed, index): the same seed gives the same values on every run and device.
absl::Status FillRandomNormal(CudaContext& context, void* device, DType dtype, int64_t count,
                              uint64_t seed, float scale = 1.0f);

// ---------------------------------------------------------------------------------------------
// Timing

// Times `fn` (which queues work on the context's stream) with CUDA events: `warmup` untimed
// calls, then `repeats` timed ones; returns each timed call's milliseconds. `fn` may
// synchronise internally (a forward pass does): the events still bracket its device work.
absl::StatusOr<std::vector<double>> TimeOnStreamMs(CudaContext& context,
                                                   const std::function<absl::Status()>& fn,
                                                   int warmup, int repeats);

// Marks on a context's stream for timing intervals of queued work without waiting for it:
// Mark(i) records event i where the stream has got to; once the work is done (any later
// synchronisation), Seconds(i, j) is the device time between marks i and j. Used where a
// host wait per interval would stall the pipeline (a decoder step's MoE blocks).
class CudaStreamMarks {
 public:
  // `count` events on the context's device. INVALID_ARGUMENT for count < 1.
  static absl::StatusOr<std::unique_ptr<CudaStreamMarks>> Create(CudaContext& context, int count);
  ~CudaStreamMarks();
  CudaStreamMarks(const CudaStreamMarks&) = delete;
  CudaStreamMarks& operator=(const CudaStreamMarks&) = delete;

  int count() const;
  absl::Status Mark(int index);
  // Waits for mark `to` if needed. FAILED_PRECONDITION when either was never marked.
  absl::StatusOr<double> Seconds(int from, int to);

  struct Impl;  // defined in kernels/cuda/timing.cu

 private:
  explicit CudaStreamMarks(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Median of `values` (0 when empty).
double MedianOf(std::vector<double> values);

// ---------------------------------------------------------------------------------------------
// Ceilings the benchmark divides by

struct CopyBandwidth {
  double gigabytes_per_second = 0;  // (bytes read + bytes written) / time, 1 GB = 1e9 B
  double median_ms = 0;
  size_t buffer_bytes = 0;
};
// Device-to-device cudaMemcpyAsync of `buffer_bytes`, median of `repeats`.
absl::StatusOr<CopyBandwidth> MeasureCopyBandwidth(CudaContext& context,
                                                   size_t buffer_bytes = size_t{1} << 30,
                                                   int repeats = 20);

struct ReadBandwidth {
  double gigabytes_per_second = 0;  // bytes read / time, 1 GB = 1e9 B
  double median_ms = 0;
  size_t buffer_bytes = 0;
};
// A read-only stream: a kernel sums `buffer_bytes` of device memory in 16-byte loads (one
// float per block written back), median of `repeats`. The ceiling of a pass that streams its
// weights once: unlike the copy, no byte is written. `buffer_bytes` must be a multiple of 16.
absl::StatusOr<ReadBandwidth> MeasureReadBandwidth(CudaContext& context,
                                                   size_t buffer_bytes = size_t{1} << 30,
                                                   int repeats = 20);

struct GemmRate {
  double teraflops = 0;  // 2*m*n*k / time, 1 TFLOP = 1e12 FLOP
  double median_ms = 0;
  int64_t size = 0;  // m = n = k
};
// Dense cuBLAS GEMM, `dtype` (kBF16 or kF16) operands and output, float32 accumulation
// (CUBLAS_COMPUTE_32F), square `size`, median of `repeats`.
absl::StatusOr<GemmRate> MeasureDenseGemmRate(CudaContext& context, DType dtype,
                                              int64_t size = 8192, int repeats = 20);

// ---------------------------------------------------------------------------------------------
// The MoE layer on a device

struct CudaLayerOptions {
  // Dtype of activations and expert weights on the device: kBF16 or kF16.
  DType compute_dtype = DType::kBF16;
};

enum class CudaExpertGemm : uint8_t {
  // One cublasGemmGroupedBatchedEx per projection over every active expert. Where cuBLAS reports
  // it unsupported, the layer falls back to kPerExpert (see CudaMoELayer::last_expert_gemm).
  kGrouped,
  kPerExpert,  // one cublasGemmEx per active expert and projection (gate|up still fused)
};

struct CudaForwardOptions {
  CudaExpertGemm expert_gemm = CudaExpertGemm::kGrouped;
};

// Where a device forward pass writes. Device pointers unless named host_*; only `output` is
// required, and only when T > 0 (as MoELayerOutputs).
struct CudaMoEOutputs {
  void* output = nullptr;                  // [T, d]  compute dtype (no residual add)
  float* router_logits = nullptr;          // [T, E]
  int32_t* topk_ids = nullptr;             // [T, k]  highest score first, ties -> lower index
  float* topk_weights = nullptr;           // [T, k]  combine weights
  int64_t* expert_token_counts = nullptr;  // [E]     assignments each expert computed
  int64_t* dropped_assignments = nullptr;  // [1]     assignments dropped by the capacity limit
  // Filled from the pass's one host synchronisation, at no extra cost.
  int64_t* host_expert_token_counts = nullptr;  // [E]
  int64_t* host_dropped_assignments = nullptr;  // [1]
  // [E] profiling pass when non-null (see MoELayerOutputs::expert_seconds): each active routed
  // expert's gate|up GEMM, activation and down GEMM run on their own between a CUDA event pair
  // (per-expert GEMMs whatever CudaForwardOptions::expert_gemm asks, so the output is that of a
  // kPerExpert pass, bit for bit), and the call waits for the experts' events before returning.
  // Experts without rows get 0; the shared expert is not timed. ForwardNaiveLoop ignores it.
  double* host_expert_seconds = nullptr;  // [E]
};

// A layer's weights resident on one device, converted to the compute dtype (router weight and
// biases stay float32). Thread-compatible; forward passes run on the context's stream and use
// its scratch arena, so layers sharing a context run one after another.
class CudaMoELayer {
 public:
  // Copies and converts `host` (F32, BF16 or F16 expert weights; host pointers) to the device.
  // `host` need not outlive the call.
  static absl::StatusOr<std::unique_ptr<CudaMoELayer>> Upload(CudaContext& context,
                                                              const MoELayerWeightsView& host,
                                                              const RouterConfig& router,
                                                              const CudaLayerOptions& options = {});
  ~CudaMoELayer();
  CudaMoELayer(const CudaMoELayer&) = delete;
  CudaMoELayer& operator=(const CudaMoELayer&) = delete;

  // x [T, d] in the compute dtype, device memory. T = 0 writes zero counts and returns.
  absl::Status Forward(const void* x, int64_t num_tokens, const CudaMoEOutputs& outputs,
                       const CudaForwardOptions& options = {});

  // Baseline for the benchmark: the same routing and combine, but experts run as a plain
  // framework loop would: per active expert separate gate, up and down cuBLAS GEMMs, one
  // activation launch per expert. Same outputs as Forward (up to rounding).
  absl::Status ForwardNaiveLoop(const void* x, int64_t num_tokens, const CudaMoEOutputs& outputs);

  // Convenience for the engine and tests: host float32 input [T, d], host outputs (every
  // pointer of `outputs` is a host pointer; `output` float32 [T, d]). Copies in, converts,
  // runs Forward, copies back. `outputs.expert_seconds` becomes host_expert_seconds.
  absl::Status ForwardHost(const float* input, int64_t num_tokens, const MoELayerOutputs& outputs,
                           const CudaForwardOptions& options = {});

  // Sizes and activation of the layer (weight_dtype is the compute dtype). The pointers are
  // null: on the device, rows are padded to 16-byte multiples for aligned tensor-core GEMMs.
  const MoELayerWeightsView& layer_shape() const;
  const RouterConfig& router() const;
  DType compute_dtype() const;
  // Device memory the weights occupy.
  int64_t weight_bytes() const;
  // The expert-GEMM path the last Forward / ForwardHost with tokens actually ran: kGrouped, or
  // kPerExpert when that was asked for or when the grouped GEMM fell back (kGrouped before the
  // first such call). Benchmarks report it next to their timings.
  CudaExpertGemm last_expert_gemm() const;
  // Whether cuBLAS reported the grouped GEMM unsupported here; from then on this layer's
  // kGrouped requests run per expert.
  bool grouped_gemm_unsupported() const;
  CudaContext& context();

  struct Impl;  // defined in kernels/cuda/cuda_moe_layer.cu

 private:
  explicit CudaMoELayer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::kernels
