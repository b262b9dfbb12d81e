// Random MoEMLP checkpoints for tests: a small config, its tensors with random values (scaled by
// 1/sqrt(fan_in) so activations keep their size through the blocks), and an in-memory
// checkpoint holding them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#include "server/model/checkpoint.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/moe_mlp_weights.h"
#include "server/model/safetensors.h"
#include "tests/testing/random.h"
#include "tests/testing/safetensors_writer.h"

namespace moe::testing {

inline model::MoEMLPConfig SmallMoEMLPConfig(kernels::Activation activation) {
  model::MoEMLPConfig config;
  config.input_dim = 24;
  config.hidden_size = 64;
  config.output_dim = 10;
  config.num_blocks = 2;
  config.num_experts = 8;
  config.top_k = 2;
  config.expert_ffn_dim = 48;
  config.activation = activation;
  return config;
}

// The shape docs/moe_mlp_format.md gives tensor `name` under `config`.
inline std::vector<int64_t> MoEMLPTensorShape(const model::MoEMLPConfig& c,
                                              const std::string& name) {
  const int64_t d = c.hidden_size;
  const int64_t e = c.num_experts;
  if (name == "input_proj.weight") return {d, c.input_dim};
  if (name == "output_proj.weight") return {c.output_dim, d};
  if (name == "output_proj.bias") return {c.output_dim};
  if (name.ends_with("router.weight")) return {e, d};
  if (name.ends_with("moe.w_in")) return {e, c.expert_in_rows(), d};
  if (name.ends_with("moe.b_in")) return {e, c.expert_in_rows()};
  if (name.ends_with("moe.w_out")) return {e, d, c.expert_ffn_dim};
  if (name.ends_with("moe.b_out")) return {e, d};
  return {d};
}

inline bool IsMoEMLPExpertWeight(const std::string& name) {
  return name.ends_with("moe.w_in") || name.ends_with("moe.w_out");
}

// Every tensor of a checkpoint for `config`, random, in the format's order. Expert weights in
// `expert_dtype` (F32, BF16 or F16).
inline std::vector<TestTensor> RandomMoEMLPTensors(
    const model::MoEMLPConfig& config, std::mt19937_64& rng,
    kernels::DType expert_dtype = kernels::DType::kF32) {
  std::vector<TestTensor> tensors;
  for (const std::string& name : model::ExpectedMoEMLPTensorNames(config)) {
    const std::vector<int64_t> shape = MoEMLPTensorShape(config, name);
    size_t count = 1;
    for (const int64_t dim : shape) count *= static_cast<size_t>(dim);
    std::vector<float> values;
    if (name.ends_with("norm.weight")) {
      values = RandomFloats(rng, count, 0.1f);
      for (float& v : values) v += 1.0f;
    } else if (name.ends_with("bias") || name.ends_with("b_in") || name.ends_with("b_out")) {
      values = RandomFloats(rng, count, 0.1f);
    } else {
      values = RandomFloats(rng, count, 1.0f / std::sqrt(static_cast<float>(shape.back())));
    }
    if (!IsMoEMLPExpertWeight(name) || expert_dtype == kernels::DType::kF32) {
      tensors.push_back(F32Tensor(name, shape, values));
      continue;
    }
    TestTensor tensor{name, expert_dtype, shape, {}};
    tensor.bytes.resize(count * 2);
    for (size_t i = 0; i < count; ++i) {
      const uint16_t bits = expert_dtype == kernels::DType::kBF16 ? kernels::FloatToBF16(values[i])
                                                                  : kernels::FloatToHalf(values[i]);
      std::memcpy(tensor.bytes.data() + 2 * i, &bits, 2);
    }
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

// A checkpoint over an in-memory image of `tensors`; nullptr (with a test failure) when the
// image does not validate.
inline std::unique_ptr<model::Checkpoint> InMemoryCheckpoint(
    const std::vector<TestTensor>& tensors, const std::string& name = "test.safetensors") {
  auto file = model::SafetensorsFile::FromBytes(BuildSafetensors(tensors), name);
  if (!file.ok()) {
    ADD_FAILURE() << file.status();
    return nullptr;
  }
  return model::Checkpoint::FromFile(std::move(file).value());
}

}  // namespace moe::testing
