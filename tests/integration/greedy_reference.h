// The greedy continuations of the reference checkpoints (tests/fixtures/README.md) for the
// client tests of Generate: per fixture folder, its name (as the tests serve it: --model
// NAME=DIR) and per sequence the prompt (seqS.input_ids) and its 8 greedy tokens
// (seqS.greedy_ids, generated with end-of-sequence ignored).
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/model/safetensors.h"
#include "tests/testing/fixtures.h"

namespace moe::integration {

inline constexpr int kGreedyReferenceTokens = 8;

struct GreedySequence {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;  // kGreedyReferenceTokens ids
};

struct GreedyReference {
  std::string model;  // the folder's name
  std::string dir;
  std::map<std::string, GreedySequence> sequences;  // "seq0", "seq1", ...
};

// An I64 vector tensor of the reference file as int32 ids.
inline absl::StatusOr<std::vector<int32_t>> ReadIds(const model::SafetensorsFile& file,
                                                    const std::string& name) {
  const model::TensorInfo* tensor = file.Find(name);
  if (tensor == nullptr || tensor->dtype != kernels::DType::kI64 || tensor->shape.size() != 1) {
    return absl::NotFoundError(absl::StrCat(name, ": no I64 vector in the reference"));
  }
  std::vector<int64_t> wide(tensor->num_elements);
  std::memcpy(wide.data(), tensor->data.data(), wide.size() * sizeof(int64_t));
  return std::vector<int32_t>(wide.begin(), wide.end());
}

inline absl::StatusOr<GreedyReference> LoadGreedyReference(const std::string& dir) {
  GreedyReference ref;
  ref.dir = dir;
  ref.model = std::filesystem::path(dir).filename().string();
  auto file =
      model::SafetensorsFile::Open((std::filesystem::path(dir) / "reference.safetensors").string());
  if (!file.ok()) return file.status();
  for (int s = 0;; ++s) {
    const std::string seq = absl::StrCat("seq", s);
    if ((*file)->Find(seq + ".input_ids") == nullptr) break;
    absl::StatusOr<std::vector<int32_t>> prompt = ReadIds(**file, seq + ".input_ids");
    absl::StatusOr<std::vector<int32_t>> greedy = ReadIds(**file, seq + ".greedy_ids");
    if (!prompt.ok()) return prompt.status();
    if (!greedy.ok()) return greedy.status();
    ref.sequences[seq] = GreedySequence{*std::move(prompt), *std::move(greedy)};
  }
  if (ref.sequences.empty()) {
    return absl::NotFoundError(absl::StrCat(dir, ": no seqS.input_ids in reference.safetensors"));
  }
  return ref;
}

// "--model NAME=DIR" for every fixture folder.
inline std::vector<std::string> FixtureModelFlags() {
  std::vector<std::string> args;
  for (const std::string& dir : testing::FixtureFolders()) {
    args.push_back("--model");
    args.push_back(absl::StrCat(std::filesystem::path(dir).filename().string(), "=", dir));
  }
  return args;
}

}  // namespace moe::integration
