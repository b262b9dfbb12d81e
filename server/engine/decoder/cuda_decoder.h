// The CUDA backend's device decoder: a whole decoder step on one device. CUDA builds only.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "server/engine/cuda_backend_internal.h"
#include "server/engine/decoder/device_decoder.h"

namespace moe::engine {

// Uploads the dense weights of `inputs` (float32) to the shared context's device; the MoE
// layers must be CudaPreparedLayers of that context (INVALID_ARGUMENT otherwise).
// RESOURCE_EXHAUSTED when the device memory runs out.
//
// A step, all on the context's stream under the context's mutex: embedding gather, then per
// layer RMSNorm, the fused qkv projection (cuBLAS SGEMM, + bias), q/k norms, rotary embedding,
// the K/V scatter into the paged pool and paged attention (kernels/cuda/paged_attention*.cu),
// the output projection, and the MoE block (CudaMoELayer::Forward on rows in its compute dtype)
// or dense SwiGLU MLP, each with its residual add; then the final norm of the rows whose logits
// are wanted and the LM head. The host waits for the MoE blocks' expert counts (one wait per
// layer, as on the MoE-MLP path) and for the logits; the blocks' times (CUDA events around each)
// and gate entropies (their router logits, downloaded together) are read after that last wait. The
// KV pool (AllocateKvPool, or the first step with a cache) is its total_blocks() x
// bytes_per_block() bytes of device memory, float32 in KvCache's layout.
absl::StatusOr<std::unique_ptr<DeviceDecoder>> CreateCudaDecoder(
    std::shared_ptr<SharedCudaContext> shared, const DeviceDecoderInputs& inputs);

}  // namespace moe::engine
