// Shared by the decoder tests: a model from a fixture folder on the CPU backend, a KV cache
// for it, running whole prompts and greedy decoding, and the reference sequences of a folder.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/decoder/kv_cache.h"
#include "server/engine/decoder/sampler.h"
#include "server/engine/moe_backend.h"
#include "server/model/safetensors.h"
#include "tests/testing/status_matchers.h"

namespace moe::testing {

struct LoadedDecoder {
  std::unique_ptr<engine::MoEBackend> backend;
  std::unique_ptr<engine::DecoderModel> model;
  std::unique_ptr<engine::KvCache> cache;
};

// The model of `dir` on `backend` (the CPU backend when null) and a cache of `blocks` blocks of
// `block_tokens`.
inline void LoadDecoder(const std::string& dir, LoadedDecoder* loaded, int64_t blocks = 256,
                        int64_t block_tokens = 16,
                        std::unique_ptr<engine::MoEBackend> backend = nullptr) {
  loaded->backend = backend != nullptr ? std::move(backend) : engine::CreateCpuBackend();
  MOE_ASSERT_OK_AND_ASSIGN(loaded->model, engine::DecoderModel::Load(dir, loaded->backend.get()));
  engine::KvCacheShape shape = loaded->model->kv_shape();
  shape.block_tokens = block_tokens;
  auto probe = engine::KvCache::Create(shape, uint64_t{1} << 30, engine::KvStorage::kNone);
  MOE_ASSERT_OK(probe.status());
  const uint64_t bytes = (*probe)->bytes_per_block() * static_cast<uint64_t>(blocks);
  MOE_ASSERT_OK_AND_ASSIGN(loaded->cache,
                           engine::KvCache::Create(shape, bytes, loaded->model->kv_storage()));
}

// One chunk through Step; `logits` receives its rows ([n or 1, vocab]), poisoned first.
inline void StepOne(engine::DecoderModel& model, engine::KvSequence& sequence,
                    const std::vector<int32_t>& tokens, bool all_logits,
                    std::vector<float>* logits) {
  const int64_t vocab = model.spec().vocab_size;
  logits->assign((all_logits ? tokens.size() : 1) * vocab, NAN);
  ASSERT_TRUE(sequence.Reserve(sequence.length() + static_cast<int64_t>(tokens.size())))
      << "KV cache too small for the test";
  const engine::DecoderChunk chunk{&sequence, tokens, all_logits};
  engine::DecoderStepOutputs outputs;
  outputs.logits = logits->data();
  MOE_ASSERT_OK(model.Step({&chunk, 1}, outputs));
}

// Greedy continuation of `prompt`'s last logits for `count` tokens, one Step per token.
inline void GreedyDecode(engine::DecoderModel& model, engine::KvSequence& sequence,
                         std::vector<int32_t> history, std::vector<float> last_logits, int count,
                         std::vector<int32_t>* generated) {
  engine::TokenSampler sampler(engine::SamplingParams{});
  const int64_t vocab = model.spec().vocab_size;
  for (int i = 0; i < count; ++i) {
    const int32_t next = sampler.Sample(
        std::span<const float>(last_logits.data() + last_logits.size() - vocab, vocab), history,
        nullptr);
    generated->push_back(next);
    history.push_back(next);
    if (i + 1 < count) {
      ASSERT_NO_FATAL_FAILURE(StepOne(model, sequence, {next}, false, &last_logits));
    }
  }
}

// Names S of the reference sequences "seqS.input_ids" in reference.safetensors.
inline std::set<std::string> ReferenceSequences(const model::SafetensorsFile& reference) {
  std::set<std::string> names;
  const std::regex pattern(R"((seq\d+)\.input_ids)");
  for (const auto& tensor : reference.tensors()) {
    std::smatch match;
    if (std::regex_match(tensor.name, match, pattern)) names.insert(match[1]);
  }
  return names;
}

// An I64 reference tensor as int32 token ids.
inline void ReadTokenIds(const model::SafetensorsFile& file, const std::string& name,
                         std::vector<int32_t>* ids) {
  const model::TensorInfo* tensor = file.Find(name);
  ASSERT_NE(tensor, nullptr) << name << " missing from " << file.path();
  ASSERT_EQ(tensor->dtype, kernels::DType::kI64) << name;
  std::vector<int64_t> wide(static_cast<size_t>(tensor->num_elements));
  std::memcpy(wide.data(), tensor->data.data(), wide.size() * sizeof(int64_t));
  ids->assign(wide.begin(), wide.end());
}

inline void ReadFloats(const model::SafetensorsFile& file, const std::string& name,
                       std::vector<float>* values) {
  const model::TensorInfo* tensor = file.Find(name);
  ASSERT_NE(tensor, nullptr) << name << " missing from " << file.path();
  ASSERT_EQ(tensor->dtype, kernels::DType::kF32) << name;
  values->resize(static_cast<size_t>(tensor->num_elements));
  std::memcpy(values->data(), tensor->data.data(), values->size() * sizeof(float));
}

}  // namespace moe::testing
