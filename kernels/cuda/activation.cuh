// The expert activation between the two GEMMs: SwiGLU / GeGLU on the fused gate|up rows, or
// ReLU / GELU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"

namespace moe::kernels::cuda_internal {

struct ActivationParams {
  DType dtype = DType::kBF16;  // of h and out
  Activation activation = Activation::kSwiGLU;
  const void* h = nullptr;  // [rows, h_ld] gate in columns [0, f), up in [f, 2f) when gated
  int64_t h_ld = 0;
  void* out = nullptr;  // [rows, out_ld] columns [0, f)
  int64_t out_ld = 0;
  int64_t row_begin = 0;  // rows [row_begin, row_begin + num_rows)
  int64_t num_rows = 0;
  int64_t ffn_size = 0;  // f
  // Optional expert bias [E, in_rows] added before the activation; the row's expert is found
  // in expert_offsets [E + 1].
  const float* bias = nullptr;
  int64_t bias_ld = 0;
  const int32_t* expert_offsets = nullptr;
  int num_experts = 0;
};

absl::Status LaunchActivation(cudaStream_t stream, const ActivationParams& params);

}  // namespace moe::kernels::cuda_internal
