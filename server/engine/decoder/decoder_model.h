// A Mixture-of-Experts decoder language model (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE) for
// iteration-level batching: one Step runs several sequences' new tokens (prefill chunks and
// decode tokens alike) through the network as one batch, with attention per sequence over its
// pages of the KV cache. The MoE blocks run over all of the step's tokens at once, which is what
// makes continuous batching pay: the experts' GEMMs see every sequence's tokens together.
//
// Where it runs: on the CPU backend, the dense parts (attention, norms, projections, LM head)
// run on the host in float32 (OpenBLAS) and the KV cache is host memory. A backend with a
// device decoder (CUDA) runs the whole step on its device instead (device_decoder.h): dense
// weights resident there, the KV cache's blocks in device memory (the KvCache then only keeps
// the block tables: kv_storage() says which kind of cache the model needs).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moe/kernels/dtype.h"
#include "server/engine/decoder/decoder_step.h"
#include "server/engine/decoder/device_decoder.h"
#include "server/engine/decoder/kv_cache.h"
#include "server/engine/decoder/paged_attention.h"
#include "server/engine/decoder/rotary_embedding.h"
#include "server/engine/moe_backend.h"
#include "server/model/decoder_weights.h"
#include "server/model/load_progress.h"
#include "server/model/model_config.h"
#include "server/model/moe_weights.h"

namespace moe::engine {

// What the scheduler and the API need to know of a decoder (and what a ModelDescription for it
// is filled from).
struct DecoderSpec {
  std::string architecture;  // "MixtralForCausalLM", ...
  std::string family;        // config.json's model_type: "mixtral", "olmoe", ...
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;  // a sequence holds at most this many tokens
  int64_t num_layers = 0;
  int64_t num_moe_layers = 0;  // layers with a routed MoE block (the metrics' layer axis)
  int64_t num_experts = 0;
  int top_k = 0;
  int64_t hidden_size = 0;
  int64_t expert_ffn_size = 0;
  int64_t num_attention_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t bos_token_id = -1;           // -1: none given
  std::vector<int64_t> eos_token_ids;  // generation stops at any of them; may be empty
  kernels::DType weight_dtype = kernels::DType::kF32;  // of the expert weights
  // Host memory the model's weights take: the dense parts in float32 (none when a device
  // decoder holds them) and the MoE blocks as loaded.
  uint64_t weight_bytes = 0;
  std::string backend;  // "cpu" / "cuda", where the MoE blocks run
  std::string device;   // the backend's device description
};

class DecoderModel {
 public:
  // Reads `dir` (config.json + safetensors, validated by the model loader's readers), checks
  // every tensor against the config and prepares each MoE layer on `backend`, which must
  // outlive the model. Configurations the forward pass does not implement (RoPE scaling other
  // than linear and YaRN, a sliding window shorter than max_position_embeddings) are refused
  // with a message naming them.
  // `progress`, when set, is told after each MoE tensor is packed (the bulk of the bytes).
  static absl::StatusOr<std::unique_ptr<DecoderModel>> Load(
      const std::string& dir, MoEBackend* backend,
      const model::LoadProgressCallback& progress = model::LoadProgressCallback());

  DecoderModel(const DecoderModel&) = delete;
  DecoderModel& operator=(const DecoderModel&) = delete;
  ~DecoderModel();

  const DecoderSpec& spec() const { return spec_; }
  // The geometry a KvCache for this model needs (block_tokens at its default).
  KvCacheShape kv_shape() const;
  // The storage a KvCache for this model needs: kHost on the host path, kNone when a device
  // decoder keeps the blocks in device memory.
  KvStorage kv_storage() const { return device_ ? KvStorage::kNone : KvStorage::kHost; }
  // Makes `cache` (of kv_shape() and kv_storage()) ready for Step: on a device, allocates its
  // blocks' device memory now rather than at the first step (RESOURCE_EXHAUSTED when it does
  // not fit). The device holds one cache's blocks at a time: preparing another drops the
  // previous cache's K/V, and a step on a cache other than the prepared one fails. Nothing to
  // do on the host path.
  absl::Status PrepareKvCache(const KvCache& cache);
  // Whether steps run on the backend's device from embedding to logits.
  bool runs_on_device() const { return device_ != nullptr; }

  // One iteration over several sequences (see the file comment). Appends each chunk's K/V to
  // its sequence and advances the sequence's length. The caller Reserve()s first.
  // Errors, with nothing computed and no sequence changed: FAILED_PRECONDITION when a sequence
  // lacks the reserved capacity; INVALID_ARGUMENT for a token id outside the vocabulary, a
  // position past max_position_embeddings, an empty chunk, a null or repeated sequence, or a
  // sequence from a cache of another shape or storage (and, on a device, from another cache than
  // the step's other sequences). An error of the MoE backend is returned as it is
  // (no sequence advances). Thread-compatible: one Step at a time.
  absl::Status Step(std::span<const DecoderChunk> chunks, const DecoderStepOutputs& outputs);

 private:
  DecoderModel() = default;

  absl::Status Validate(std::span<const DecoderChunk> chunks) const;
  void Reserve(int64_t tokens);
  // Layer `layer`'s attention block: hidden_ += o_proj(attention(input_norm(hidden_))).
  void AttentionBlock(int64_t layer, std::span<const AttentionChunk> chunks, int64_t tokens);
  // Layer `layer`'s MoE block or dense MLP on the post-attention norm: hidden_ += mlp(...).
  absl::Status MlpBlock(int64_t layer, int64_t tokens, const DecoderStepOutputs& outputs);

  model::ModelConfig config_;
  DecoderSpec spec_;
  model::DecoderWeights weights_;
  std::vector<model::MoELayerWeights> moe_weights_;  // the CPU backend reads them in place
  std::vector<std::unique_ptr<PreparedMoELayer>> moe_layers_;
  std::vector<int64_t> moe_index_;  // [num_layers] index into moe_layers_, -1 for dense layers
  std::unique_ptr<RotaryEmbedding> rope_;
  std::unique_ptr<DeviceDecoder> device_;  // null: the host path

  // Workspace for one step, grown to the largest step; [tokens, ...] each.
  int64_t reserved_tokens_ = 0;
  std::vector<float> hidden_;         // [T, d] the residual stream
  std::vector<float> normed_;         // [T, d]
  std::vector<float> qkv_;            // [T, (H + 2 KV) hd]
  std::vector<float> attention_;      // [T, H hd]
  std::vector<float> block_out_;      // [T, d] o_proj / MoE / MLP output
  std::vector<float> mlp_hidden_;     // [T, 2 f_dense], dense layers only
  std::vector<float> mlp_act_;        // [T, f_dense]
  std::vector<float> router_logits_;  // [T, E], for the gate entropy
  std::vector<int64_t> positions_;    // [T]
};

}  // namespace moe::engine
