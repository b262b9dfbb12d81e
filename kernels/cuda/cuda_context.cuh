// The CUDA objects behind moe::kernels::CudaContext: device, stream, cuBLAS handles, and two
// stream-ordered scratch arenas (one for a forward pass's intermediates, one for ForwardHost's
// staging) plus a pinned host buffer for the per-expert counts and GEMM pointer arrays.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/cuda_moe.h"

namespace moe::kernels {

namespace cuda_internal {

// A device allocation that grows on demand. Growth frees and allocates in stream order
// (cudaFreeAsync / cudaMallocAsync), so work still queued on the old memory is unaffected.
class StreamArena {
 public:
  StreamArena() = default;
  StreamArena(const StreamArena&) = delete;
  StreamArena& operator=(const StreamArena&) = delete;
  ~StreamArena();

  absl::Status Reserve(size_t bytes, cudaStream_t stream);
  // Frees the memory (in stream order) and waits for the stream.
  void Release();
  char* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  char* data_ = nullptr;
  size_t capacity_ = 0;
  cudaStream_t stream_ = nullptr;
};

// Hands out 256-byte aligned slices of one arena. Call Add() for every slice to learn the
// total, Reserve the arena, then Take() in the same order.
class ArenaPlan {
 public:
  // Returns the offset of a new slice of `bytes` (0 bytes is allowed and yields a valid offset).
  size_t Add(size_t bytes) {
    const size_t offset = total_;
    total_ += (bytes + kAlign - 1) / kAlign * kAlign;
    return offset;
  }
  size_t total() const { return total_; }

  static constexpr size_t kAlign = 256;

 private:
  size_t total_ = 0;
};

}  // namespace cuda_internal

struct CudaContext::Impl {
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl();

  // Makes this context's device current for the calling thread.
  absl::Status Activate() const;
  // Grows the pinned host buffer; waits for the stream first (earlier copies may read it).
  absl::Status ReservePinned(size_t bytes);

  int device = 0;
  CudaDeviceInfo info;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublas_lt = nullptr;
  void* cublas_workspace = nullptr;
  size_t cublas_workspace_bytes = 0;
  cuda_internal::StreamArena scratch;  // a forward pass's intermediates
  cuda_internal::StreamArena staging;  // ForwardHost's device copies of host inputs/outputs
  void* pinned = nullptr;
  size_t pinned_bytes = 0;
};

}  // namespace moe::kernels
