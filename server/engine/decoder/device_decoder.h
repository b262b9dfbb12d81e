// A decoder step run entirely on an accelerator: the backend's own implementation of
// DecoderModel::Step, with the dense weights resident on the device next to the MoE layers and
// the KV cache's blocks in device memory. DecoderModel validates the step and advances the
// sequences; a DeviceDecoder only computes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "server/engine/decoder/decoder_step.h"
#include "server/model/decoder_weights.h"
#include "server/model/model_config.h"

namespace moe::engine {

class PreparedMoELayer;

// What a backend needs to build one. `config` and the MoE layers stay valid for the
// DeviceDecoder's lifetime (DecoderModel owns them); `weights` only during CreateDeviceDecoder:
// the model frees its host copy of the dense weights once the device has its own.
struct DeviceDecoderInputs {
  const model::ModelConfig* config = nullptr;
  const model::DecoderWeights* weights = nullptr;
  // [num_layers]: the layer's MoE block as this backend prepared it, null for dense layers.
  std::vector<PreparedMoELayer*> moe_layers;
};

class DeviceDecoder {
 public:
  virtual ~DeviceDecoder() = default;

  // DecoderModel::Step after validation: the chunks' tokens are in the vocabulary, their
  // positions within the model's context and their sequences' capacity, and every sequence comes
  // from one KvCache made without host storage (KvStorage::kNone); `num_tokens` is their sum.
  // Writes the K/V of the new tokens to the device cache and fills `outputs`; does not advance
  // the sequences. The first step allocates the cache's device pool if AllocateKvPool has not;
  // a step on a cache other than the pool's is FAILED_PRECONDITION. Thread-compatible.
  virtual absl::Status Step(std::span<const DecoderChunk> chunks, int64_t num_tokens,
                            const DecoderStepOutputs& outputs) = 0;

  // Allocates the device memory that holds `cache`'s blocks; nothing to do when it holds them
  // already. One cache at a time: moving the pool to another cache drops the K/V of the one it
  // held, whose sequences must not step again. RESOURCE_EXHAUSTED, naming the size, when it
  // does not fit.
  virtual absl::Status AllocateKvPool(const KvCache& cache) = 0;
};

}  // namespace moe::engine
