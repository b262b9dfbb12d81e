// Loading a reference checkpoint folder (tests/fixtures/README.md) for the fixture tests of
// every backend: the model through the project's loader, and per sequence and MoE layer the
// expected tensors from reference.safetensors. Failures are gtest fatal failures: call through
// ASSERT_NO_FATAL_FAILURE.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"
#include "server/model/moe_weights.h"
#include "server/model/safetensors.h"
#include "tests/testing/status_matchers.h"

namespace moe::testing {

struct FixtureModel {
  model::ModelConfig config;
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::vector<model::MoELayerWeights> layers;
  std::unique_ptr<model::SafetensorsFile> reference;
  std::set<std::string> sequences;     // "seq0", "seq1", ... with MoE inputs in the reference
  std::set<int64_t> reference_layers;  // layer indices with MoE inputs in the reference
};

inline void LoadFixtureModel(const std::string& dir, FixtureModel* fixture) {
  MOE_ASSERT_OK_AND_ASSIGN(fixture->config, model::LoadModelConfig(dir));
  MOE_ASSERT_OK_AND_ASSIGN(fixture->checkpoint, model::Checkpoint::Open(dir));
  MOE_ASSERT_OK_AND_ASSIGN(fixture->layers,
                           model::LoadMoELayers(*fixture->checkpoint, fixture->config));
  ASSERT_FALSE(fixture->layers.empty()) << dir << ": no MoE layer loaded";
  MOE_ASSERT_OK_AND_ASSIGN(fixture->reference,
                           model::SafetensorsFile::Open(
                               (std::filesystem::path(dir) / "reference.safetensors").string()));
  const std::regex pattern(R"((seq\d+)\.layers\.(\d+)\.moe_input)");
  for (const auto& tensor : fixture->reference->tensors()) {
    std::smatch match;
    if (std::regex_match(tensor.name, match, pattern)) {
      fixture->sequences.insert(match[1]);
      fixture->reference_layers.insert(std::stoll(match[2]));
    }
  }
  ASSERT_FALSE(fixture->sequences.empty())
      << dir << ": reference.safetensors has no seqS.layers.L.moe_input";
}

// Expected values of one MoE layer for one sequence.
struct LayerReference {
  int64_t tokens = 0;
  std::vector<float> input;          // [T, d]
  std::vector<float> router_logits;  // [T, E]
  std::vector<int32_t> topk_ids;     // [T, k]
  std::vector<float> topk_weights;   // [T, k]
  std::vector<float> output;         // [T, d]
};

template <typename T>
void ReadReferenceTensor(const model::SafetensorsFile& file, const std::string& name,
                         size_t expected_elements, std::vector<T>* values) {
  const model::TensorInfo* tensor = file.Find(name);
  ASSERT_NE(tensor, nullptr) << file.path() << ": reference tensor '" << name << "' missing";
  ASSERT_EQ(kernels::DTypeSize(tensor->dtype), sizeof(T)) << name;
  ASSERT_EQ(static_cast<size_t>(tensor->num_elements), expected_elements) << name;
  values->resize(expected_elements);
  // Tensor data in a mapping carries no alignment guarantee.
  std::memcpy(values->data(), tensor->data.data(), expected_elements * sizeof(T));
}

inline void ReadLayerReference(const FixtureModel& fixture, const std::string& seq, int64_t layer,
                               LayerReference* ref) {
  const std::string prefix = seq + ".layers." + std::to_string(layer) + ".";
  const int64_t d = fixture.config.hidden_size;
  const int64_t experts = fixture.config.num_experts;
  const int64_t k = fixture.config.top_k;
  const model::TensorInfo* input = fixture.reference->Find(prefix + "moe_input");
  ASSERT_NE(input, nullptr) << prefix << "moe_input missing";
  ASSERT_EQ(input->dtype, kernels::DType::kF32);
  ASSERT_EQ(input->shape.size(), 2u);
  ASSERT_EQ(input->shape[1], d);
  const int64_t t = ref->tokens = input->shape[0];
  ReadReferenceTensor(*fixture.reference, prefix + "moe_input", t * d, &ref->input);
  ReadReferenceTensor(*fixture.reference, prefix + "router_logits", t * experts,
                      &ref->router_logits);
  ReadReferenceTensor(*fixture.reference, prefix + "topk_ids", t * k, &ref->topk_ids);
  ReadReferenceTensor(*fixture.reference, prefix + "topk_weights", t * k, &ref->topk_weights);
  ReadReferenceTensor(*fixture.reference, prefix + "moe_output", t * d, &ref->output);
}

// Test-name suffix for a fixture folder: its base name with non-alphanumerics as '_'.
inline std::string FixtureTestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = std::filesystem::path(info.param).filename().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

}  // namespace moe::testing
