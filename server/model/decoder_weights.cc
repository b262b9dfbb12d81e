#include "server/model/decoder_weights.h"

#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/dtype.h"
#include "server/model/error_text.h"

namespace moe::model {
namespace {

using kernels::DType;

// A tensor's expected shape and the config.json keys behind it, for the error message.
struct Expected {
  std::vector<int64_t> shape;
  std::string meaning;  // e.g. "[num_key_value_heads * head_dim, hidden_size]"
};

// Checks tensor `name` against `expected` and widens it to float32 at `dst` (which holds the
// expected number of elements). Tensor data may sit at any byte offset of the mapping, so
// 16-bit values are staged in an aligned buffer first.
absl::Status ReadInto(const Checkpoint& checkpoint, const std::string& name,
                      const Expected& expected, float* dst) {
  MOE_ASSIGN_OR_RETURN(const TensorInfo* tensor, checkpoint.Get(name));
  const std::string& file = checkpoint.FileOf(name);
  if (tensor->dtype != DType::kF32 && tensor->dtype != DType::kBF16 &&
      tensor->dtype != DType::kF16) {
    return Invalid(file, absl::StrCat("tensor ", Quote(name), " has dtype ",
                                      std::string(kernels::DTypeName(tensor->dtype)),
                                      "; decoder weights must be F32, BF16 or F16"));
  }
  if (tensor->shape != expected.shape) {
    return Invalid(file,
                   absl::StrCat("tensor ", Quote(name), " has shape ", ShapeString(tensor->shape),
                                ", expected ", ShapeString(expected.shape), " = ", expected.meaning,
                                " from config.json; config.json and the checkpoint "
                                "disagree"));
  }
  const size_t count = static_cast<size_t>(tensor->num_elements);
  if (tensor->data.size() != count * kernels::DTypeSize(tensor->dtype)) {
    return absl::InternalError(absl::StrCat(file, ": tensor ", Quote(name), " holds ",
                                            tensor->data.size(), " bytes for ", count,
                                            " elements"));
  }
  if (tensor->dtype == DType::kF32) {
    std::memcpy(dst, tensor->data.data(), tensor->data.size());
    return absl::OkStatus();
  }
  std::vector<uint16_t> staged(count);
  std::memcpy(staged.data(), tensor->data.data(), tensor->data.size());
  kernels::WidenToFloat(tensor->dtype, staged.data(), dst, count);
  return absl::OkStatus();
}

int64_t Elements(const Expected& expected) {
  int64_t n = 1;
  for (const int64_t dim : expected.shape) n *= dim;
  return n;
}

// Reads one whole tensor into a new buffer.
absl::Status Read(const Checkpoint& checkpoint, const std::string& name, const Expected& expected,
                  std::vector<float>* out) {
  out->resize(static_cast<size_t>(Elements(expected)));
  return ReadInto(checkpoint, name, expected, out->data());
}

absl::Status LoadAttention(const Checkpoint& checkpoint, const ModelConfig& config,
                           const std::string& prefix, AttentionWeights* attention) {
  const int64_t d = config.hidden_size;
  const int64_t q_rows = config.num_attention_heads * config.head_dim;
  const int64_t kv_rows = config.num_key_value_heads * config.head_dim;
  const std::string q_meaning = "num_attention_heads * head_dim";
  const std::string kv_meaning = "num_key_value_heads * head_dim";
  const std::string attn = prefix + "self_attn.";

  attention->qkv.resize(static_cast<size_t>((q_rows + 2 * kv_rows) * d));
  float* qkv = attention->qkv.data();
  MOE_RETURN_IF_ERROR(ReadInto(checkpoint, attn + "q_proj.weight",
                               {{q_rows, d}, "[" + q_meaning + ", hidden_size]"}, qkv));
  MOE_RETURN_IF_ERROR(ReadInto(checkpoint, attn + "k_proj.weight",
                               {{kv_rows, d}, "[" + kv_meaning + ", hidden_size]"},
                               qkv + q_rows * d));
  MOE_RETURN_IF_ERROR(ReadInto(checkpoint, attn + "v_proj.weight",
                               {{kv_rows, d}, "[" + kv_meaning + ", hidden_size]"},
                               qkv + (q_rows + kv_rows) * d));
  if (config.attention_bias) {
    attention->qkv_bias.resize(static_cast<size_t>(q_rows + 2 * kv_rows));
    float* bias = attention->qkv_bias.data();
    MOE_RETURN_IF_ERROR(
        ReadInto(checkpoint, attn + "q_proj.bias", {{q_rows}, "[" + q_meaning + "]"}, bias));
    MOE_RETURN_IF_ERROR(ReadInto(checkpoint, attn + "k_proj.bias",
                                 {{kv_rows}, "[" + kv_meaning + "]"}, bias + q_rows));
    MOE_RETURN_IF_ERROR(ReadInto(checkpoint, attn + "v_proj.bias",
                                 {{kv_rows}, "[" + kv_meaning + "]"}, bias + q_rows + kv_rows));
  }
  MOE_RETURN_IF_ERROR(Read(checkpoint, attn + "o_proj.weight",
                           {{d, q_rows}, "[hidden_size, " + q_meaning + "]"}, &attention->o));
  if (config.qk_norm) {
    // OLMoE normalises the whole q/k projection, Qwen3-MoE each head.
    const bool whole = config.family == ModelFamily::kOlmoe;
    const Expected q_norm = whole ? Expected{{q_rows}, "[" + q_meaning + "]"}
                                  : Expected{{config.head_dim}, "[head_dim]"};
    const Expected k_norm = whole ? Expected{{kv_rows}, "[" + kv_meaning + "]"}
                                  : Expected{{config.head_dim}, "[head_dim]"};
    MOE_RETURN_IF_ERROR(Read(checkpoint, attn + "q_norm.weight", q_norm, &attention->q_norm));
    MOE_RETURN_IF_ERROR(Read(checkpoint, attn + "k_norm.weight", k_norm, &attention->k_norm));
  }
  return absl::OkStatus();
}

absl::Status LoadDenseMlp(const Checkpoint& checkpoint, const ModelConfig& config,
                          const std::string& prefix, DenseMlpWeights* mlp) {
  const int64_t d = config.hidden_size;
  const int64_t f = config.dense_intermediate_size;
  if (f <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "mlp is a dense layer but config.json gives no intermediate_size"));
  }
  mlp->ffn_size = f;
  mlp->gate_up.resize(static_cast<size_t>(2 * f * d));
  const Expected in_shape{{f, d}, "[intermediate_size, hidden_size]"};
  MOE_RETURN_IF_ERROR(
      ReadInto(checkpoint, prefix + "mlp.gate_proj.weight", in_shape, mlp->gate_up.data()));
  MOE_RETURN_IF_ERROR(
      ReadInto(checkpoint, prefix + "mlp.up_proj.weight", in_shape, mlp->gate_up.data() + f * d));
  return Read(checkpoint, prefix + "mlp.down_proj.weight",
              {{d, f}, "[hidden_size, intermediate_size]"}, &mlp->down);
}

absl::StatusOr<DecoderWeights> LoadAll(const Checkpoint& checkpoint, const ModelConfig& config) {
  const int64_t d = config.hidden_size;
  const int64_t vocab = config.vocab_size;
  DecoderWeights weights;
  MOE_RETURN_IF_ERROR(Read(checkpoint, "model.embed_tokens.weight",
                           {{vocab, d}, "[vocab_size, hidden_size]"}, &weights.embed_tokens));
  MOE_RETURN_IF_ERROR(
      Read(checkpoint, "model.norm.weight", {{d}, "[hidden_size]"}, &weights.final_norm));
  // Tied checkpoints usually omit lm_head.weight; when one is saved anyway it is read.
  if (!config.tie_word_embeddings || checkpoint.Contains("lm_head.weight")) {
    MOE_RETURN_IF_ERROR(Read(checkpoint, "lm_head.weight",
                             {{vocab, d}, "[vocab_size, hidden_size]"}, &weights.lm_head));
  }
  weights.layers.resize(static_cast<size_t>(config.num_layers));
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    DecoderLayerWeights& w = weights.layers[layer];
    MOE_RETURN_IF_ERROR(
        Read(checkpoint, prefix + "input_layernorm.weight", {{d}, "[hidden_size]"}, &w.input_norm));
    MOE_RETURN_IF_ERROR(Read(checkpoint, prefix + "post_attention_layernorm.weight",
                             {{d}, "[hidden_size]"}, &w.post_attention_norm));
    MOE_RETURN_IF_ERROR(LoadAttention(checkpoint, config, prefix, &w.attention));
    if (!config.layer_is_moe[layer]) {
      MOE_RETURN_IF_ERROR(LoadDenseMlp(checkpoint, config, prefix, &w.dense_mlp));
    }
  }
  return weights;
}

uint64_t Bytes(const std::vector<float>& v) { return v.size() * sizeof(float); }

}  // namespace

uint64_t DecoderWeights::bytes() const {
  uint64_t total = Bytes(embed_tokens) + Bytes(final_norm) + Bytes(lm_head);
  for (const DecoderLayerWeights& layer : layers) {
    total += Bytes(layer.input_norm) + Bytes(layer.post_attention_norm) +
             Bytes(layer.attention.qkv) + Bytes(layer.attention.qkv_bias) +
             Bytes(layer.attention.o) + Bytes(layer.attention.q_norm) +
             Bytes(layer.attention.k_norm) + Bytes(layer.dense_mlp.gate_up) +
             Bytes(layer.dense_mlp.down);
  }
  return total;
}

absl::StatusOr<DecoderWeights> LoadDecoderWeights(const Checkpoint& checkpoint,
                                                  const ModelConfig& config) {
  // ParseModelConfig guarantees these; a hand-built config might not.
  if (config.hidden_size <= 0 || config.vocab_size <= 0 || config.num_attention_heads <= 0 ||
      config.num_key_value_heads <= 0 || config.head_dim <= 0 ||
      static_cast<int64_t>(config.layer_is_moe.size()) != config.num_layers) {
    return absl::InvalidArgumentError(
        "model config is incomplete for a decoder; build it with ParseModelConfig");
  }
  try {
    return LoadAll(checkpoint, config);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough host memory to widen the dense weights of ", checkpoint.path(), " to float32"));
  }
}

}  // namespace moe::model
