#include "server/engine/decoder/cuda_decoder.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_decoder_ops.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/cuda_paged_attention.h"
#include "server/engine/decoder/rotary_embedding.h"
#include "server/engine/routing_entropy.h"

namespace moe::engine {
namespace {

using kernels::CudaContext;
using kernels::DeviceBuffer;
using kernels::DType;

// A host float vector on the device (an empty one stays unallocated).
absl::StatusOr<DeviceBuffer> Upload(CudaContext& context, const std::vector<float>& host) {
  if (host.empty()) return DeviceBuffer();
  MOE_ASSIGN_OR_RETURN(DeviceBuffer buffer,
                       DeviceBuffer::Allocate(context, host.size() * sizeof(float)));
  MOE_RETURN_IF_ERROR(buffer.CopyFromHost(host.data(), host.size() * sizeof(float)));
  return buffer;
}

// Grows `buffer` to at least `bytes` (contents not kept).
absl::Status Ensure(CudaContext& context, DeviceBuffer& buffer, size_t bytes) {
  if (buffer.bytes() >= bytes) return absl::OkStatus();
  buffer = DeviceBuffer();  // free first: the old and new need not fit together
  MOE_ASSIGN_OR_RETURN(buffer, DeviceBuffer::Allocate(context, bytes));
  return absl::OkStatus();
}

struct DeviceLayer {
  DeviceBuffer input_norm;
  DeviceBuffer post_attention_norm;
  DeviceBuffer qkv;
  DeviceBuffer qkv_bias;  // unallocated without biases
  DeviceBuffer q_norm;    // unallocated without q/k norms
  DeviceBuffer k_norm;
  DeviceBuffer o;
  DeviceBuffer gate_up;  // dense layers only
  DeviceBuffer down;
  int64_t dense_ffn = 0;
  kernels::CudaMoELayer* moe = nullptr;  // MoE layers only
  int64_t moe_index = -1;                // its index among the MoE layers (metrics)
};

class CudaDecoder : public DeviceDecoder {
 public:
  CudaDecoder(std::shared_ptr<SharedCudaContext> shared, const model::ModelConfig& config)
      : shared_(std::move(shared)), config_(config) {}

  ~CudaDecoder() override {
    absl::MutexLock lock(&shared_->mu);
    // Device memory is freed while the context is alive.
    layers_.clear();
    embed_ = DeviceBuffer();
    final_norm_ = DeviceBuffer();
    lm_head_ = DeviceBuffer();
    rope_inv_freq_ = DeviceBuffer();
    pool_ = DeviceBuffer();
    marks_.reset();
    for (DeviceBuffer* buffer : Workspace()) *buffer = DeviceBuffer();
  }

  absl::Status Upload(const DeviceDecoderInputs& inputs) {
    absl::MutexLock lock(&shared_->mu);
    CudaContext& context = *shared_->context;
    const model::DecoderWeights& w = *inputs.weights;
    MOE_ASSIGN_OR_RETURN(embed_, engine::Upload(context, w.embed_tokens));
    MOE_ASSIGN_OR_RETURN(final_norm_, engine::Upload(context, w.final_norm));
    MOE_ASSIGN_OR_RETURN(lm_head_, engine::Upload(context, w.lm_head));  // empty when tied
    int64_t moe_count = 0;
    layers_.resize(w.layers.size());
    for (size_t i = 0; i < w.layers.size(); ++i) {
      const model::DecoderLayerWeights& host = w.layers[i];
      DeviceLayer& layer = layers_[i];
      MOE_ASSIGN_OR_RETURN(layer.input_norm, engine::Upload(context, host.input_norm));
      MOE_ASSIGN_OR_RETURN(layer.post_attention_norm,
                           engine::Upload(context, host.post_attention_norm));
      MOE_ASSIGN_OR_RETURN(layer.qkv, engine::Upload(context, host.attention.qkv));
      MOE_ASSIGN_OR_RETURN(layer.qkv_bias, engine::Upload(context, host.attention.qkv_bias));
      MOE_ASSIGN_OR_RETURN(layer.q_norm, engine::Upload(context, host.attention.q_norm));
      MOE_ASSIGN_OR_RETURN(layer.k_norm, engine::Upload(context, host.attention.k_norm));
      MOE_ASSIGN_OR_RETURN(layer.o, engine::Upload(context, host.attention.o));
      PreparedMoELayer* prepared = i < inputs.moe_layers.size() ? inputs.moe_layers[i] : nullptr;
      if (prepared != nullptr) {
        auto* cuda_layer = dynamic_cast<CudaPreparedLayer*>(prepared);
        if (cuda_layer == nullptr || cuda_layer->shared() != shared_) {
          return absl::InvalidArgumentError(
              absl::StrCat("layer ", i, "'s MoE block was not prepared by this CUDA backend"));
        }
        layer.moe = &cuda_layer->device_layer();
        layer.moe_index = moe_count++;
        moe_dtype_ = layer.moe->compute_dtype();
      } else {
        layer.dense_ffn = host.dense_mlp.ffn_size;
        max_dense_ffn_ = std::max(max_dense_ffn_, layer.dense_ffn);
        MOE_ASSIGN_OR_RETURN(layer.gate_up, engine::Upload(context, host.dense_mlp.gate_up));
        MOE_ASSIGN_OR_RETURN(layer.down, engine::Upload(context, host.dense_mlp.down));
      }
    }
    num_moe_layers_ = moe_count;
    const RopeFrequencies rope =
        ComputeRopeFrequencies(config_.head_dim, config_.rope_theta, config_.rope_scaling);
    MOE_ASSIGN_OR_RETURN(rope_inv_freq_,
                         DeviceBuffer::Allocate(context, rope.inv_freq.size() * sizeof(double)));
    MOE_RETURN_IF_ERROR(
        rope_inv_freq_.CopyFromHost(rope.inv_freq.data(), rope.inv_freq.size() * sizeof(double)));
    rope_scale_ = rope.attention_scale;
    MOE_ASSIGN_OR_RETURN(marks_,
                         kernels::CudaStreamMarks::Create(
                             context, static_cast<int>(2 * std::max<int64_t>(moe_count, 1))));
    return context.Synchronize();
  }

  absl::Status Step(std::span<const DecoderChunk> chunks, int64_t num_tokens,
                    const DecoderStepOutputs& outputs) override;

  absl::Status AllocateKvPool(const KvCache& cache) override {
    absl::MutexLock lock(&shared_->mu);
    if (pool_cache_id_ == cache.id()) return absl::OkStatus();
    return AllocatePool(cache);
  }

 private:
  // Host-side description of a step, uploaded as one int32 array.
  struct StepLayout {
    std::vector<int32_t> host;  // ids | positions | context_lens | query_start | tables | rows
    size_t ids = 0, positions = 0, context_lens = 0, query_start = 0, tables = 0, rows = 0;
    int64_t max_blocks = 0;
    int64_t max_query_len = 0;
    int64_t max_context_len = 0;
    int64_t logit_rows = 0;
    bool decode_only = true;
  };

  std::vector<DeviceBuffer*> Workspace() {
    return {&metadata_,           &hidden_,  &normed_, &qkv_,           &attention_, &block_out_,
            &mlp_hidden_,         &mlp_act_, &moe_in_, &router_logits_, &moe_out_,   &logits_,
            &attention_workspace_};
  }

  StepLayout Layout(std::span<const DecoderChunk> chunks, int64_t num_tokens) const;
  // Frees the pool and allocates `cache`'s.
  absl::Status AllocatePool(const KvCache& cache) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu);
  // A step's pool: `cache`'s, allocated here at the first step if AllocateKvPool was not called.
  // FAILED_PRECONDITION when the pool holds another cache's blocks, or held some before (a
  // failed move): moving it would silently drop K/V, which only AllocateKvPool may do.
  absl::Status PoolForStep(const KvCache& cache) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu);
  absl::Status EnsureWorkspace(int64_t num_tokens, int64_t logit_rows,
                               const DecoderStepOutputs& outputs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu);
  absl::Status AttentionBlock(const DeviceLayer& layer, int64_t index, int64_t tokens,
                              const int32_t* positions, const kernels::PagedBatch& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu);
  absl::Status MlpBlock(const DeviceLayer& layer, int64_t tokens, const DecoderStepOutputs& outputs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu);
  // After the step's last wait: the MoE blocks' device times (between their marks) and gate
  // entropies (from their router logits) into `outputs`.
  absl::Status ReadMoEMetrics(int64_t tokens, const DecoderStepOutputs& outputs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu);

  const std::shared_ptr<SharedCudaContext> shared_;
  const model::ModelConfig config_;
  int64_t num_moe_layers_ = 0;
  int64_t max_dense_ffn_ = 0;       // widest dense MLP (0: every layer is MoE)
  DType moe_dtype_ = DType::kBF16;  // the MoE blocks' compute dtype (one backend, one dtype)
  // Two per MoE block, around its forward pass: its device time without a host wait.
  std::unique_ptr<kernels::CudaStreamMarks> marks_;
  DeviceBuffer embed_;
  DeviceBuffer final_norm_;
  DeviceBuffer lm_head_;        // unallocated with tied embeddings: the head is embed_
  DeviceBuffer rope_inv_freq_;  // [head_dim / 2] double, as the host's RotaryEmbedding
  double rope_scale_ = 1.0;
  std::vector<DeviceLayer> layers_;

  // The device memory of one KvCache's blocks, and that cache's geometry (the cache itself may
  // be gone: only its id is kept).
  uint64_t pool_cache_id_ = 0;  // 0: no pool
  bool pool_ever_allocated_ = false;
  int64_t pool_blocks_ = 0;
  int64_t pool_block_tokens_ = 0;
  DeviceBuffer pool_;

  // Per-step workspace, grown to the largest step.
  DeviceBuffer metadata_;
  DeviceBuffer hidden_;         // [T, d] float32, the residual stream
  DeviceBuffer normed_;         // [T, d] float32
  DeviceBuffer qkv_;            // [T, (H + 2 KV) hd]
  DeviceBuffer attention_;      // [T, H hd]
  DeviceBuffer block_out_;      // [T, d]
  DeviceBuffer mlp_hidden_;     // [T, 2 f_dense]
  DeviceBuffer mlp_act_;        // [T, f_dense]
  DeviceBuffer moe_in_;         // [T, d] compute dtype
  DeviceBuffer moe_out_;        // [T, d] compute dtype
  DeviceBuffer router_logits_;  // [num MoE layers, T, E] float32
  DeviceBuffer logits_;         // [rows, V] float32
  DeviceBuffer attention_workspace_;
  std::vector<float> host_router_logits_;
};

CudaDecoder::StepLayout CudaDecoder::Layout(std::span<const DecoderChunk> chunks,
                                            int64_t num_tokens) const {
  StepLayout layout;
  const size_t seqs = chunks.size();
  for (const DecoderChunk& chunk : chunks) {
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    layout.max_blocks = std::max(layout.max_blocks, chunk.sequence->num_blocks());
    layout.max_query_len = std::max(layout.max_query_len, n);
    layout.max_context_len = std::max(layout.max_context_len, chunk.sequence->length() + n);
    layout.logit_rows += chunk.all_logits ? n : 1;
    if (n != 1) layout.decode_only = false;
  }
  const auto tokens = static_cast<size_t>(num_tokens);
  layout.ids = 0;
  layout.positions = layout.ids + tokens;
  layout.context_lens = layout.positions + tokens;
  layout.query_start = layout.context_lens + seqs;
  layout.tables = layout.query_start + seqs + 1;
  layout.rows = layout.tables + seqs * static_cast<size_t>(layout.max_blocks);
  layout.host.assign(layout.rows + static_cast<size_t>(layout.logit_rows), 0);
  int32_t* h = layout.host.data();
  int64_t row = 0;
  int64_t logit_row = 0;
  for (size_t s = 0; s < seqs; ++s) {
    const DecoderChunk& chunk = chunks[s];
    const int64_t start = chunk.sequence->length();
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    h[layout.query_start + s] = static_cast<int32_t>(row);
    h[layout.context_lens + s] = static_cast<int32_t>(start + n);
    const std::span<const int32_t> blocks = chunk.sequence->blocks();
    std::copy(blocks.begin(), blocks.end(),
              h + layout.tables + s * static_cast<size_t>(layout.max_blocks));
    for (int64_t i = 0; i < n; ++i) {
      h[layout.ids + row + i] = chunk.tokens[i];
      h[layout.positions + row + i] = static_cast<int32_t>(start + i);
    }
    const int64_t first = chunk.all_logits ? row : row + n - 1;
    for (int64_t r = first; r < row + n; ++r)
      h[layout.rows + logit_row++] = static_cast<int32_t>(r);
    row += n;
  }
  h[layout.query_start + seqs] = static_cast<int32_t>(row);
  return layout;
}

absl::Status CudaDecoder::PoolForStep(const KvCache& cache) {
  if (pool_cache_id_ == cache.id()) return absl::OkStatus();
  // Only the very first pool is allocated implicitly: once one existed, the cache it held (or
  // another) might still have sequences whose K/V a blank pool would not have.
  if (pool_ever_allocated_) {
    return absl::FailedPreconditionError(
        "this model's device KV pool does not hold this KV cache's blocks; call "
        "DecoderModel::PrepareKvCache for this cache first (the other cache's K/V is dropped)");
  }
  return AllocatePool(cache);
}

absl::Status CudaDecoder::AllocatePool(const KvCache& cache) {
  CudaContext& context = *shared_->context;
  pool_ = DeviceBuffer();
  pool_cache_id_ = 0;
  const uint64_t bytes = cache.bytes_per_block() * static_cast<uint64_t>(cache.total_blocks());
  absl::StatusOr<DeviceBuffer> pool = DeviceBuffer::Allocate(context, bytes);
  if (!pool.ok()) {
    return absl::Status(
        pool.status().code(),
        absl::StrCat("the KV cache's ", cache.total_blocks(), " blocks (", bytes,
                     " bytes) do not fit in device memory: ", pool.status().message()));
  }
  pool_ = std::move(pool).value();
  pool_ever_allocated_ = true;
  pool_cache_id_ = cache.id();
  pool_blocks_ = cache.total_blocks();
  pool_block_tokens_ = cache.block_tokens();
  return absl::OkStatus();
}

absl::Status CudaDecoder::EnsureWorkspace(int64_t num_tokens, int64_t logit_rows,
                                          const DecoderStepOutputs& outputs) {
  CudaContext& context = *shared_->context;
  const model::ModelConfig& c = config_;
  const auto t = static_cast<size_t>(num_tokens);
  const size_t f32 = sizeof(float);
  const int64_t dense_ffn = max_dense_ffn_;
  const DType compute = moe_dtype_;
  const auto d = static_cast<size_t>(c.hidden_size);
  const auto width =
      static_cast<size_t>((c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim);
  MOE_RETURN_IF_ERROR(Ensure(context, hidden_, t * d * f32));
  MOE_RETURN_IF_ERROR(
      Ensure(context, normed_, std::max(t, static_cast<size_t>(logit_rows)) * d * f32));
  MOE_RETURN_IF_ERROR(Ensure(context, qkv_, t * width * f32));
  MOE_RETURN_IF_ERROR(Ensure(context, attention_,
                             t * static_cast<size_t>(c.num_attention_heads * c.head_dim) * f32));
  MOE_RETURN_IF_ERROR(Ensure(context, block_out_, t * d * f32));
  if (dense_ffn > 0) {
    MOE_RETURN_IF_ERROR(Ensure(context, mlp_hidden_, t * 2 * static_cast<size_t>(dense_ffn) * f32));
    MOE_RETURN_IF_ERROR(Ensure(context, mlp_act_, t * static_cast<size_t>(dense_ffn) * f32));
  }
  MOE_RETURN_IF_ERROR(Ensure(context, moe_in_, t * d * kernels::DTypeSize(compute)));
  MOE_RETURN_IF_ERROR(Ensure(context, moe_out_, t * d * kernels::DTypeSize(compute)));
  // Router logits are kept only for the gate entropies, logits only when they are wanted: at
  // a long prefill both are large ([MoE layers, T, E] and [rows, V]).
  if (outputs.gate_entropy_sum != nullptr) {
    MOE_RETURN_IF_ERROR(Ensure(
        context, router_logits_,
        static_cast<size_t>(num_moe_layers_) * t * static_cast<size_t>(c.num_experts) * f32));
  }
  if (outputs.logits != nullptr) {
    MOE_RETURN_IF_ERROR(
        Ensure(context, logits_,
               static_cast<size_t>(logit_rows) * static_cast<size_t>(c.vocab_size) * f32));
  }
  return absl::OkStatus();
}

absl::Status CudaDecoder::AttentionBlock(const DeviceLayer& layer, int64_t index, int64_t tokens,
                                         const int32_t* positions,
                                         const kernels::PagedBatch& batch) {
  CudaContext& context = *shared_->context;
  const model::ModelConfig& c = config_;
  const int64_t d = c.hidden_size;
  const int64_t hd = c.head_dim;
  const int64_t heads = c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads;
  const int64_t width = (heads + 2 * kv_heads) * hd;
  float* hidden = hidden_.as<float>();
  float* normed = normed_.as<float>();
  float* qkv = qkv_.as<float>();

  MOE_RETURN_IF_ERROR(kernels::CudaRmsNorm(context, {.x = hidden,
                                                     .x_stride = d,
                                                     .num_rows = tokens,
                                                     .width = d,
                                                     .weight = layer.input_norm.as<float>(),
                                                     .eps = c.rms_norm_eps,
                                                     .y = normed,
                                                     .y_stride = d}));
  MOE_RETURN_IF_ERROR(kernels::CudaLinear(
      context, layer.qkv.as<float>(), layer.qkv_bias.as<float>(), width, d, normed, tokens, qkv));
  if (c.qk_norm) {
    // OLMoE normalises the whole q and k projections; Qwen3-MoE each head (as on the host).
    const bool whole = c.family == model::ModelFamily::kOlmoe;
    MOE_RETURN_IF_ERROR(kernels::CudaRmsNorm(context, {.x = qkv,
                                                       .x_stride = width,
                                                       .num_rows = tokens,
                                                       .groups = whole ? 1 : heads,
                                                       .width = whole ? heads * hd : hd,
                                                       .weight = layer.q_norm.as<float>(),
                                                       .eps = c.rms_norm_eps,
                                                       .y = qkv,
                                                       .y_stride = width}));
    MOE_RETURN_IF_ERROR(kernels::CudaRmsNorm(context, {.x = qkv + heads * hd,
                                                       .x_stride = width,
                                                       .num_rows = tokens,
                                                       .groups = whole ? 1 : kv_heads,
                                                       .width = whole ? kv_heads * hd : hd,
                                                       .weight = layer.k_norm.as<float>(),
                                                       .eps = c.rms_norm_eps,
                                                       .y = qkv + heads * hd,
                                                       .y_stride = width}));
  }
  MOE_RETURN_IF_ERROR(kernels::CudaApplyRotary(context, {.x = qkv,
                                                         .num_tokens = tokens,
                                                         .stride = width,
                                                         .num_heads = heads,
                                                         .head_dim = hd,
                                                         .positions = positions,
                                                         .inv_freq = rope_inv_freq_.as<double>(),
                                                         .scale = rope_scale_}));
  MOE_RETURN_IF_ERROR(kernels::CudaApplyRotary(context, {.x = qkv + heads * hd,
                                                         .num_tokens = tokens,
                                                         .stride = width,
                                                         .num_heads = kv_heads,
                                                         .head_dim = hd,
                                                         .positions = positions,
                                                         .inv_freq = rope_inv_freq_.as<double>(),
                                                         .scale = rope_scale_}));

  const kernels::PagedKvCacheView cache{.data = pool_.data(),
                                        .dtype = DType::kF32,
                                        .num_blocks = pool_blocks_,
                                        .num_layers = c.num_layers,
                                        .num_kv_heads = kv_heads,
                                        .block_tokens = pool_block_tokens_,
                                        .head_dim = hd};
  MOE_RETURN_IF_ERROR(kernels::CudaWritePagedKv(context, {.cache = cache,
                                                          .layer = index,
                                                          .batch = batch,
                                                          .k = qkv + heads * hd,
                                                          .k_stride = width,
                                                          .v = qkv + (heads + kv_heads) * hd,
                                                          .v_stride = width}));
  kernels::CudaPagedAttentionParams attention{.cache = cache,
                                              .layer = index,
                                              .batch = batch,
                                              .num_heads = heads,
                                              .q = qkv,
                                              .q_stride = width,
                                              .out = attention_.as<float>()};
  MOE_ASSIGN_OR_RETURN(const size_t workspace,
                       kernels::CudaPagedAttentionWorkspaceBytes(context, attention));
  MOE_RETURN_IF_ERROR(Ensure(context, attention_workspace_, workspace));
  attention.workspace = workspace > 0 ? attention_workspace_.data() : nullptr;
  attention.workspace_bytes = attention_workspace_.bytes();
  MOE_RETURN_IF_ERROR(kernels::CudaPagedAttention(context, attention));
  MOE_RETURN_IF_ERROR(kernels::CudaLinear(context, layer.o.as<float>(), nullptr, d, heads * hd,
                                          attention_.as<float>(), tokens, block_out_.as<float>()));
  return kernels::CudaAddInPlace(context, hidden, block_out_.data(), DType::kF32, tokens * d);
}

absl::Status CudaDecoder::MlpBlock(const DeviceLayer& layer, int64_t tokens,
                                   const DecoderStepOutputs& outputs) {
  CudaContext& context = *shared_->context;
  const model::ModelConfig& c = config_;
  const int64_t d = c.hidden_size;
  float* hidden = hidden_.as<float>();
  // The post-attention norm writes the MoE block's rows in its compute dtype directly, a dense
  // MLP's in float32.
  const DType norm_dtype = layer.moe != nullptr ? layer.moe->compute_dtype() : DType::kF32;
  MOE_RETURN_IF_ERROR(
      kernels::CudaRmsNorm(context, {.x = hidden,
                                     .x_stride = d,
                                     .num_rows = tokens,
                                     .width = d,
                                     .weight = layer.post_attention_norm.as<float>(),
                                     .eps = c.rms_norm_eps,
                                     .y = layer.moe != nullptr ? moe_in_.data() : normed_.data(),
                                     .y_dtype = norm_dtype,
                                     .y_stride = d}));
  if (layer.moe == nullptr) {
    const int64_t f = layer.dense_ffn;
    MOE_RETURN_IF_ERROR(kernels::CudaLinear(context, layer.gate_up.as<float>(), nullptr, 2 * f, d,
                                            normed_.as<float>(), tokens, mlp_hidden_.as<float>()));
    MOE_RETURN_IF_ERROR(
        kernels::CudaSwiGlu(context, mlp_hidden_.as<float>(), tokens, f, mlp_act_.as<float>()));
    MOE_RETURN_IF_ERROR(kernels::CudaLinear(context, layer.down.as<float>(), nullptr, d, f,
                                            mlp_act_.as<float>(), tokens, block_out_.as<float>()));
    return kernels::CudaAddInPlace(context, hidden, block_out_.data(), DType::kF32, tokens * d);
  }

  const DType compute = norm_dtype;
  const int64_t moe = layer.moe_index;
  const int64_t num_experts = c.num_experts;
  kernels::CudaMoEOutputs moe_outputs;
  moe_outputs.output = moe_out_.data();
  if (outputs.gate_entropy_sum != nullptr) {
    // Each block's logits go to its own slice; ReadMoEMetrics downloads them all at once.
    moe_outputs.router_logits = router_logits_.as<float>() + moe * tokens * num_experts;
  }
  if (outputs.expert_token_counts != nullptr) {
    moe_outputs.host_expert_token_counts = outputs.expert_token_counts + moe * num_experts;
  }
  if (outputs.expert_seconds != nullptr) {
    moe_outputs.host_expert_seconds = outputs.expert_seconds + moe * num_experts;
  }
  if (outputs.layer_seconds != nullptr) MOE_RETURN_IF_ERROR(marks_->Mark(2 * moe));
  MOE_RETURN_IF_ERROR(layer.moe->Forward(moe_in_.data(), tokens, moe_outputs));
  if (outputs.layer_seconds != nullptr) MOE_RETURN_IF_ERROR(marks_->Mark(2 * moe + 1));
  return kernels::CudaAddInPlace(context, hidden, moe_out_.data(), compute, tokens * d);
}

absl::Status CudaDecoder::Step(std::span<const DecoderChunk> chunks, int64_t num_tokens,
                               const DecoderStepOutputs& outputs) {
  if (chunks.empty() || num_tokens <= 0) return absl::OkStatus();
  absl::MutexLock lock(&shared_->mu);
  CudaContext& context = *shared_->context;
  const model::ModelConfig& c = config_;
  const int64_t d = c.hidden_size;

  const StepLayout layout = Layout(chunks, num_tokens);
  MOE_RETURN_IF_ERROR(PoolForStep(*chunks.front().sequence->cache()));
  MOE_RETURN_IF_ERROR(EnsureWorkspace(num_tokens, layout.logit_rows, outputs));
  MOE_RETURN_IF_ERROR(Ensure(context, metadata_, layout.host.size() * sizeof(int32_t)));
  MOE_RETURN_IF_ERROR(
      metadata_.CopyFromHost(layout.host.data(), layout.host.size() * sizeof(int32_t)));
  const int32_t* meta = metadata_.as<int32_t>();

  const kernels::PagedBatch batch{
      .num_seqs = static_cast<int64_t>(chunks.size()),
      .block_tables = meta + layout.tables,
      .max_blocks_per_seq = std::max<int64_t>(layout.max_blocks, 1),
      .context_lens = meta + layout.context_lens,
      .query_start_loc = layout.decode_only ? nullptr : meta + layout.query_start,
      .num_query_rows = num_tokens,
      .max_query_len = layout.max_query_len,
      .max_context_len = layout.max_context_len};

  MOE_RETURN_IF_ERROR(kernels::CudaEmbedRows(context, embed_.as<float>(), c.vocab_size, d,
                                             meta + layout.ids, num_tokens, hidden_.as<float>()));
  for (size_t i = 0; i < layers_.size(); ++i) {
    MOE_RETURN_IF_ERROR(AttentionBlock(layers_[i], static_cast<int64_t>(i), num_tokens,
                                       meta + layout.positions, batch));
    absl::Status status = MlpBlock(layers_[i], num_tokens, outputs);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("layer ", i, ": ", status.message()));
    }
  }

  if (outputs.logits == nullptr) {
    MOE_RETURN_IF_ERROR(context.Synchronize());
    return ReadMoEMetrics(num_tokens, outputs);
  }
  // The final norm of just the rows whose logits are wanted, in chunk order, then the head.
  MOE_RETURN_IF_ERROR(kernels::CudaRmsNorm(context, {.x = hidden_.as<float>(),
                                                     .x_stride = d,
                                                     .rows = meta + layout.rows,
                                                     .num_rows = layout.logit_rows,
                                                     .width = d,
                                                     .weight = final_norm_.as<float>(),
                                                     .eps = c.rms_norm_eps,
                                                     .y = normed_.data(),
                                                     .y_stride = d}));
  const float* head = lm_head_.bytes() > 0 ? lm_head_.as<float>() : embed_.as<float>();
  MOE_RETURN_IF_ERROR(kernels::CudaLinear(context, head, nullptr, c.vocab_size, d,
                                          normed_.as<float>(), layout.logit_rows,
                                          logits_.as<float>()));
  MOE_RETURN_IF_ERROR(kernels::DownloadFloats(context, logits_.data(), DType::kF32,
                                              layout.logit_rows * c.vocab_size, outputs.logits));
  return ReadMoEMetrics(num_tokens, outputs);
}

absl::Status CudaDecoder::ReadMoEMetrics(int64_t tokens, const DecoderStepOutputs& outputs) {
  CudaContext& context = *shared_->context;
  const int64_t num_experts = config_.num_experts;
  for (int64_t moe = 0; moe < num_moe_layers_; ++moe) {
    if (outputs.layer_seconds != nullptr) {
      MOE_ASSIGN_OR_RETURN(
          outputs.layer_seconds[moe],
          marks_->Seconds(static_cast<int>(2 * moe), static_cast<int>(2 * moe + 1)));
    }
  }
  if (outputs.gate_entropy_sum != nullptr && num_moe_layers_ > 0) {
    const int64_t per_layer = tokens * num_experts;
    host_router_logits_.resize(static_cast<size_t>(num_moe_layers_ * per_layer));
    MOE_RETURN_IF_ERROR(kernels::DownloadFloats(context, router_logits_.data(), DType::kF32,
                                                num_moe_layers_ * per_layer,
                                                host_router_logits_.data()));
    for (int64_t moe = 0; moe < num_moe_layers_; ++moe) {
      outputs.gate_entropy_sum[moe] =
          GateEntropySumNats(host_router_logits_.data() + moe * per_layer, tokens, num_experts,
                             config_.router().scoring);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceDecoder>> CreateCudaDecoder(
    std::shared_ptr<SharedCudaContext> shared, const DeviceDecoderInputs& inputs) {
  if (shared == nullptr || inputs.config == nullptr || inputs.weights == nullptr) {
    return absl::InvalidArgumentError("CreateCudaDecoder: missing context, config or weights");
  }
  if (inputs.config->head_dim > kernels::kMaxPagedHeadDim ||
      inputs.config->num_attention_heads /
              std::max<int64_t>(inputs.config->num_key_value_heads, 1) >
          kernels::kMaxPagedGqaRatio) {
    return absl::UnimplementedError(absl::StrCat(
        "head_dim ", inputs.config->head_dim, " with ", inputs.config->num_attention_heads,
        " query heads per ", inputs.config->num_key_value_heads,
        " kv heads is beyond the CUDA paged-attention kernel (head_dim <= ",
        kernels::kMaxPagedHeadDim, ", at most ", kernels::kMaxPagedGqaRatio,
        " query heads per kv head)"));
  }
  auto decoder = std::make_unique<CudaDecoder>(std::move(shared), *inputs.config);
  MOE_RETURN_IF_ERROR(decoder->Upload(inputs));
  return std::unique_ptr<DeviceDecoder>(std::move(decoder));
}

}  // namespace moe::engine
