#include "server/engine/decoder/decoder_model.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/expert_gemm.h"
#include "moe/common/status_macros.h"
#include "server/engine/decoder/dense_ops.h"
#include "server/engine/routing_entropy.h"
#include "server/model/checkpoint.h"

namespace moe::engine {
namespace {

template <typename T>
void Grow(std::vector<T>& buffer, int64_t elements) {
  if (buffer.size() < static_cast<size_t>(elements)) buffer.resize(static_cast<size_t>(elements));
}

// Configurations whose forward pass differs from what Step computes are refused at load rather
// than served wrong. (Scaled RoPE kinds are refused by the config parser already.)
absl::Status CheckSupported(const model::ModelConfig& config, const std::string& dir) {
  if (config.sliding_window > 0 && config.sliding_window < config.max_position_embeddings) {
    return absl::UnimplementedError(
        absl::StrCat(dir, "/config.json: sliding_window = ", config.sliding_window,
                     " is shorter than max_position_embeddings = ", config.max_position_embeddings,
                     "; sliding-window attention is not implemented (only full causal attention)"));
  }
  return absl::OkStatus();
}

}  // namespace

DecoderModel::~DecoderModel() = default;

absl::StatusOr<std::unique_ptr<DecoderModel>> DecoderModel::Load(
    const std::string& dir, MoEBackend* backend, const model::LoadProgressCallback& progress) {
  if (backend == nullptr) return absl::InvalidArgumentError("DecoderModel::Load: no backend");
  std::unique_ptr<DecoderModel> model(new DecoderModel());
  MOE_ASSIGN_OR_RETURN(model->config_, model::LoadModelConfig(dir));
  const model::ModelConfig& c = model->config_;
  MOE_RETURN_IF_ERROR(CheckSupported(c, dir));
  {
    // The checkpoint's mapping is only needed while the weights are copied out of it.
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<model::Checkpoint> checkpoint,
                         model::Checkpoint::Open(dir));
    MOE_ASSIGN_OR_RETURN(model->weights_, model::LoadDecoderWeights(*checkpoint, c));
    MOE_ASSIGN_OR_RETURN(model->moe_weights_, model::LoadMoELayers(*checkpoint, c, progress));
  }
  const kernels::RouterConfig router = c.router();
  model->moe_index_.assign(static_cast<size_t>(c.num_layers), -1);
  for (const model::MoELayerWeights& layer : model->moe_weights_) {
    absl::StatusOr<std::unique_ptr<PreparedMoELayer>> prepared =
        backend->PrepareLayer(layer.view(), router);
    if (!prepared.ok()) {
      return absl::Status(prepared.status().code(),
                          absl::StrCat(dir, ": layer ", layer.layer_index(),
                                       "'s MoE block: ", prepared.status().message()));
    }
    model->moe_index_[layer.layer_index()] = static_cast<int64_t>(model->moe_layers_.size());
    model->moe_layers_.push_back(std::move(prepared).value());
  }
  model->rope_ = std::make_unique<RotaryEmbedding>(
      c.head_dim, ComputeRopeFrequencies(c.head_dim, c.rope_theta, c.rope_scaling));
  DeviceDecoderInputs device_inputs;
  device_inputs.config = &model->config_;
  device_inputs.weights = &model->weights_;
  device_inputs.moe_layers.assign(static_cast<size_t>(c.num_layers), nullptr);
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    if (model->moe_index_[layer] >= 0) {
      device_inputs.moe_layers[layer] = model->moe_layers_[model->moe_index_[layer]].get();
    }
  }
  absl::StatusOr<std::unique_ptr<DeviceDecoder>> device =
      backend->CreateDeviceDecoder(device_inputs);
  if (!device.ok()) {
    return absl::Status(
        device.status().code(),
        absl::StrCat(dir, ": the decoder on ", std::string(BackendKindName(backend->kind())), ": ",
                     device.status().message()));
  }
  model->device_ = std::move(device).value();
  // The device holds its own copy of the dense weights; the host's would only take memory.
  if (model->device_ != nullptr) model->weights_ = model::DecoderWeights();

  DecoderSpec& s = model->spec_;
  s.architecture = c.architecture;
  s.family = c.model_type;
  s.vocab_size = c.vocab_size;
  s.max_position_embeddings = c.max_position_embeddings;
  s.num_layers = c.num_layers;
  s.num_moe_layers = static_cast<int64_t>(model->moe_layers_.size());
  s.num_experts = c.num_experts;
  s.top_k = c.top_k;
  s.hidden_size = c.hidden_size;
  s.expert_ffn_size = c.moe_intermediate_size;
  s.num_attention_heads = c.num_attention_heads;
  s.num_kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.bos_token_id = c.bos_token_id;
  s.eos_token_ids = c.eos_token_ids;
  s.weight_dtype =
      model->moe_weights_.empty() ? c.torch_dtype : model->moe_weights_.front().view().weight_dtype;
  s.weight_bytes = model->weights_.bytes();
  for (const model::MoELayerWeights& layer : model->moe_weights_) s.weight_bytes += layer.bytes();
  s.backend = std::string(BackendKindName(backend->kind()));
  s.device = backend->device_description();
  return model;
}

KvCacheShape DecoderModel::kv_shape() const {
  return KvCacheShape{.num_layers = config_.num_layers,
                      .num_kv_heads = config_.num_key_value_heads,
                      .head_dim = config_.head_dim};
}

absl::Status DecoderModel::PrepareKvCache(const KvCache& cache) {
  if (cache.storage() != kv_storage()) {
    return absl::InvalidArgumentError(
        "the KV cache's storage does not match the model's kv_storage()");
  }
  return device_ != nullptr ? device_->AllocateKvPool(cache) : absl::OkStatus();
}

absl::Status DecoderModel::Validate(std::span<const DecoderChunk> chunks) const {
  const KvCacheShape shape = kv_shape();
  std::set<const KvSequence*> seen;
  const KvCache* device_cache = nullptr;
  int64_t total = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const DecoderChunk& chunk = chunks[c];
    if (chunk.sequence == nullptr || chunk.sequence->cache() == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", c, " has no sequence"));
    }
    if (!seen.insert(chunk.sequence).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", c, "'s sequence appears twice in one step; give it one chunk"));
    }
    const KvCacheShape& cache_shape = chunk.sequence->cache()->shape();
    if (cache_shape.num_layers != shape.num_layers ||
        cache_shape.num_kv_heads != shape.num_kv_heads || cache_shape.head_dim != shape.head_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", c, "'s sequence belongs to a KV cache of ", cache_shape.num_layers,
                       " layers x ", cache_shape.num_kv_heads, " kv heads x ", cache_shape.head_dim,
                       "; this model needs ", shape.num_layers, " x ", shape.num_kv_heads, " x ",
                       shape.head_dim));
    }
    if (chunk.sequence->cache()->storage() != kv_storage()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", c, "'s sequence belongs to a KV cache ",
          kv_storage() == KvStorage::kHost
              ? "without host storage; this model computes on the host"
              : "in host memory; this model keeps its cache on the device (KvStorage::kNone)"));
    }
    if (device_ != nullptr) {
      if (device_cache == nullptr) device_cache = chunk.sequence->cache();
      if (chunk.sequence->cache() != device_cache) {
        return absl::InvalidArgumentError(
            absl::StrCat("chunk ", c,
                         "'s sequence belongs to another KV cache than chunk 0's; on a device "
                         "one step reads one cache"));
      }
    }
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("chunk ", c, " has no tokens"));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t token = chunk.tokens[i];
      if (token < 0 || token >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", c, ": token ", i, " = ", token,
                                                       " is outside the vocabulary [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
    const int64_t end = chunk.sequence->length() + n;
    if (end > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", c, ": positions up to ", end - 1,
          " exceed max_position_embeddings = ", config_.max_position_embeddings,
          " (the sequence holds ", chunk.sequence->length(), " tokens, the chunk ", n, ")"));
    }
    if (end > chunk.sequence->capacity_tokens()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "chunk ", c, ": the sequence has room for ", chunk.sequence->capacity_tokens(),
          " tokens but needs ", end, "; Reserve() its blocks before the step"));
    }
    total += n;
  }
  // BLAS takes 32-bit sizes.
  const int64_t widest =
      std::max({config_.hidden_size, config_.vocab_size,
                (config_.num_attention_heads + 2 * config_.num_key_value_heads) * config_.head_dim,
                2 * config_.dense_intermediate_size, config_.num_experts});
  if (total > std::numeric_limits<int32_t>::max() / widest) {
    return absl::InvalidArgumentError(
        absl::StrCat("a step of ", total, " tokens is too large; split it"));
  }
  return absl::OkStatus();
}

void DecoderModel::Reserve(int64_t tokens) {
  if (tokens <= reserved_tokens_) return;
  const model::ModelConfig& c = config_;
  Grow(hidden_, tokens * c.hidden_size);
  Grow(normed_, tokens * c.hidden_size);
  Grow(qkv_, tokens * (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim);
  Grow(attention_, tokens * c.num_attention_heads * c.head_dim);
  Grow(block_out_, tokens * c.hidden_size);
  Grow(mlp_hidden_, tokens * 2 * c.dense_intermediate_size);
  Grow(mlp_act_, tokens * c.dense_intermediate_size);
  Grow(router_logits_, tokens * c.num_experts);
  Grow(positions_, tokens);
  reserved_tokens_ = tokens;
}

void DecoderModel::AttentionBlock(int64_t layer, std::span<const AttentionChunk> chunks,
                                  int64_t tokens) {
  const model::ModelConfig& c = config_;
  const model::DecoderLayerWeights& w = weights_.layers[layer];
  const int64_t d = c.hidden_size;
  const int64_t hd = c.head_dim;
  const int64_t heads = c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads;
  const int64_t width = (heads + 2 * kv_heads) * hd;
  float* qkv = qkv_.data();

  RmsNormRows(hidden_.data(), tokens, d, d, w.input_norm.data(), c.rms_norm_eps, normed_.data(), d);
  LinearRows(w.attention.qkv.data(),
             w.attention.qkv_bias.empty() ? nullptr : w.attention.qkv_bias.data(), width, d,
             normed_.data(), tokens, qkv);
  if (c.qk_norm) {
    if (c.family == model::ModelFamily::kOlmoe) {
      // OLMoE normalises the whole q and k projections before splitting them into heads.
      RmsNormRows(qkv, tokens, heads * hd, width, w.attention.q_norm.data(), c.rms_norm_eps, qkv,
                  width);
      RmsNormRows(qkv + heads * hd, tokens, kv_heads * hd, width, w.attention.k_norm.data(),
                  c.rms_norm_eps, qkv + heads * hd, width);
    } else {
      // Qwen3-MoE normalises each head.
      for (int64_t t = 0; t < tokens; ++t) {
        float* row = qkv + t * width;
        RmsNormRows(row, heads, hd, hd, w.attention.q_norm.data(), c.rms_norm_eps, row, hd);
        RmsNormRows(row + heads * hd, kv_heads, hd, hd, w.attention.k_norm.data(), c.rms_norm_eps,
                    row + heads * hd, hd);
      }
    }
  }
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = qkv + t * width;
    rope_->Apply(row, heads, positions_[t]);
    rope_->Apply(row + heads * hd, kv_heads, positions_[t]);
  }
  const AttentionGeometry geometry{heads, kv_heads, hd};
  const QkvRows rows{qkv, width};
  WriteKv(layer, chunks, geometry, rows);
  PagedAttention(layer, chunks, geometry, rows, attention_.data());
  LinearRows(w.attention.o.data(), nullptr, d, heads * hd, attention_.data(), tokens,
             block_out_.data());
  AddInPlace(hidden_.data(), block_out_.data(), tokens * d);
}

absl::Status DecoderModel::MlpBlock(int64_t layer, int64_t tokens,
                                    const DecoderStepOutputs& outputs) {
  const model::ModelConfig& c = config_;
  const model::DecoderLayerWeights& w = weights_.layers[layer];
  const int64_t d = c.hidden_size;
  RmsNormRows(hidden_.data(), tokens, d, d, w.post_attention_norm.data(), c.rms_norm_eps,
              normed_.data(), d);
  const int64_t moe = moe_index_[layer];
  if (moe < 0) {
    const int64_t f = w.dense_mlp.ffn_size;
    LinearRows(w.dense_mlp.gate_up.data(), nullptr, 2 * f, d, normed_.data(), tokens,
               mlp_hidden_.data());
    SwiGluRows(mlp_hidden_.data(), tokens, f, mlp_act_.data());
    LinearRows(w.dense_mlp.down.data(), nullptr, d, f, mlp_act_.data(), tokens, block_out_.data());
  } else {
    // The metrics fields exactly as MoEMLPModel::Run fills them, indexed by MoE layer.
    const int64_t num_experts = c.num_experts;
    kernels::MoELayerOutputs layer_outputs;
    layer_outputs.output = block_out_.data();
    if (outputs.expert_token_counts != nullptr) {
      layer_outputs.expert_token_counts = outputs.expert_token_counts + moe * num_experts;
    }
    if (outputs.gate_entropy_sum != nullptr) layer_outputs.router_logits = router_logits_.data();
    if (outputs.expert_seconds != nullptr) {
      layer_outputs.expert_seconds = outputs.expert_seconds + moe * num_experts;
    }
    const auto start = std::chrono::steady_clock::now();
    const absl::Status status = moe_layers_[moe]->Forward(normed_.data(), tokens, layer_outputs);
    if (outputs.layer_seconds != nullptr) {
      outputs.layer_seconds[moe] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("layer ", layer, "'s MoE block: ", status.message()));
    }
    if (outputs.gate_entropy_sum != nullptr) {
      outputs.gate_entropy_sum[moe] =
          GateEntropySumNats(router_logits_.data(), tokens, num_experts, c.router().scoring);
    }
  }
  AddInPlace(hidden_.data(), block_out_.data(), tokens * d);
  return absl::OkStatus();
}

absl::Status DecoderModel::Step(std::span<const DecoderChunk> chunks,
                                const DecoderStepOutputs& outputs) {
  MOE_RETURN_IF_ERROR(Validate(chunks));
  const model::ModelConfig& c = config_;
  const int64_t d = c.hidden_size;
  const int64_t moe_layers = spec_.num_moe_layers;
  const int64_t num_experts = c.num_experts;
  if (chunks.empty()) {
    // Nothing ran: the metrics say so rather than keep stale values.
    if (outputs.expert_token_counts != nullptr) {
      std::fill_n(outputs.expert_token_counts, moe_layers * num_experts, 0);
    }
    if (outputs.layer_seconds != nullptr) std::fill_n(outputs.layer_seconds, moe_layers, 0.0);
    if (outputs.gate_entropy_sum != nullptr) {
      std::fill_n(outputs.gate_entropy_sum, moe_layers, 0.0);
    }
    if (outputs.expert_seconds != nullptr) {
      std::fill_n(outputs.expert_seconds, moe_layers * num_experts, 0.0);
    }
    return absl::OkStatus();
  }

  if (device_ != nullptr) {
    int64_t tokens = 0;
    for (const DecoderChunk& chunk : chunks) tokens += static_cast<int64_t>(chunk.tokens.size());
    MOE_RETURN_IF_ERROR(device_->Step(chunks, tokens, outputs));
    for (const DecoderChunk& chunk : chunks) {
      chunk.sequence->Advance(static_cast<int64_t>(chunk.tokens.size()));
    }
    return absl::OkStatus();
  }

  std::vector<AttentionChunk> attention_chunks;
  attention_chunks.reserve(chunks.size());
  int64_t tokens = 0;
  int64_t positions = 0;
  for (const DecoderChunk& chunk : chunks) {
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    attention_chunks.push_back({chunk.sequence, chunk.sequence->length(), n, tokens});
    positions = std::max(positions, chunk.sequence->length() + n);
    tokens += n;
  }
  try {
    Reserve(tokens);
    rope_->Prepare(positions);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("not enough host memory for a step of ", tokens, " tokens"));
  }
  // One OpenMP team computes everything; BLAS stays on the calling thread of each task.
  const kernels::cpu::ScopedSingleThreadedBlas single_threaded_blas;

  for (size_t c_index = 0; c_index < chunks.size(); ++c_index) {
    const AttentionChunk& chunk = attention_chunks[c_index];
    const std::span<const int32_t> ids = chunks[c_index].tokens;
    for (int64_t i = 0; i < chunk.num_tokens; ++i) {
      const int64_t row = chunk.first_row + i;
      positions_[row] = chunk.start + i;
      std::copy_n(weights_.embed_tokens.data() + static_cast<int64_t>(ids[i]) * d, d,
                  hidden_.data() + row * d);
    }
  }
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    AttentionBlock(layer, attention_chunks, tokens);
    MOE_RETURN_IF_ERROR(MlpBlock(layer, tokens, outputs));
  }

  if (outputs.logits != nullptr) {
    // The final norm of just the rows whose logits are wanted, gathered in chunk order.
    int64_t rows = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const AttentionChunk& chunk = attention_chunks[i];
      const int64_t first =
          chunks[i].all_logits ? chunk.first_row : chunk.first_row + chunk.num_tokens - 1;
      const int64_t count = chunk.first_row + chunk.num_tokens - first;
      RmsNormRows(hidden_.data() + first * d, count, d, d, weights_.final_norm.data(),
                  c.rms_norm_eps, normed_.data() + rows * d, d);
      rows += count;
    }
    LinearRows(weights_.lm_head_data(), nullptr, c.vocab_size, d, normed_.data(), rows,
               outputs.logits);
  }
  for (const DecoderChunk& chunk : chunks) {
    chunk.sequence->Advance(static_cast<int64_t>(chunk.tokens.size()));
  }
  return absl::OkStatus();
}

}  // namespace moe::engine
