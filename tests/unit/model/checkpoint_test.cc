#include <stdlib.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/safetensors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::BuildSafetensors;
using ::moe::testing::F32Tensor;
using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kIndex[] = "model.safetensors.index.json";

using ::moe::testing::ScratchDir;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string IndexJson(const std::map<std::string, std::string>& weight_map) {
  nlohmann::json index;
  index["metadata"] = {{"total_size", 0}};
  index["weight_map"] = weight_map;
  return index.dump(2);
}

std::vector<float> Floats(const TensorInfo& tensor) {
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
  return values;
}

// Two shards: a and b in the first, c in the second.
void WriteTwoShards(const ScratchDir& dir) {
  testing::WriteFile(dir.File("model-00001-of-00002.safetensors"),
                     BuildSafetensors({F32Tensor("a", {2}, {1, 2}), F32Tensor("b", {1}, {3})}));
  testing::WriteFile(dir.File("model-00002-of-00002.safetensors"),
                     BuildSafetensors({F32Tensor("c", {2, 2}, {4, 5, 6, 7})}));
}

TEST(CheckpointTest, OpensSingleSafetensorsFile) {
  ScratchDir dir;
  const std::string path = dir.File("weights.safetensors");
  testing::WriteFile(path, BuildSafetensors({F32Tensor("w", {3}, {1, 2, 3})}));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(path));
  EXPECT_EQ(checkpoint->path(), path);
  EXPECT_THAT(checkpoint->TensorNames(), ElementsAre("w"));
  MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* w, checkpoint->Get("w"));
  EXPECT_THAT(Floats(*w), ElementsAre(1, 2, 3));
  EXPECT_EQ(checkpoint->total_bytes(), 12u);
}

TEST(CheckpointTest, OpensDirectoryWithModelSafetensors) {
  ScratchDir dir;
  testing::WriteFile(dir.File("model.safetensors"),
                     BuildSafetensors({F32Tensor("y", {1}, {2}), F32Tensor("x", {1}, {1})}));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(dir.path()));
  EXPECT_EQ(checkpoint->path(), dir.path());
  EXPECT_THAT(checkpoint->TensorNames(), ElementsAre("x", "y"));
  EXPECT_TRUE(checkpoint->Contains("x"));
  EXPECT_FALSE(checkpoint->Contains("z"));
}

TEST(CheckpointTest, OpensShardedCheckpoint) {
  ScratchDir dir;
  WriteTwoShards(dir);
  WriteText(dir.File(kIndex), IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                         {"b", "model-00001-of-00002.safetensors"},
                                         {"c", "model-00002-of-00002.safetensors"}}));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(dir.path()));
  EXPECT_THAT(checkpoint->TensorNames(), ElementsAre("a", "b", "c"));
  EXPECT_EQ(checkpoint->total_bytes(), (2 + 1 + 4) * sizeof(float));
  MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* a, checkpoint->Get("a"));
  EXPECT_THAT(Floats(*a), ElementsAre(1, 2));
  MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* b, checkpoint->Get("b"));
  EXPECT_THAT(Floats(*b), ElementsAre(3));
  MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* c, checkpoint->Get("c"));
  EXPECT_THAT(c->shape, ElementsAre(2, 2));
  EXPECT_THAT(Floats(*c), ElementsAre(4, 5, 6, 7));
}

TEST(CheckpointTest, PrefersIndexOverSingleFile) {
  ScratchDir dir;
  WriteTwoShards(dir);
  WriteText(dir.File(kIndex), IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                         {"b", "model-00001-of-00002.safetensors"},
                                         {"c", "model-00002-of-00002.safetensors"}}));
  testing::WriteFile(dir.File("model.safetensors"),
                     BuildSafetensors({F32Tensor("stale", {1}, {0})}));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(dir.path()));
  EXPECT_THAT(checkpoint->TensorNames(), ElementsAre("a", "b", "c"));
}

TEST(CheckpointTest, GetMissingTensorIsNotFoundNamingTensorAndCheckpoint) {
  ScratchDir dir;
  testing::WriteFile(dir.File("model.safetensors"), BuildSafetensors({F32Tensor("w", {1}, {1})}));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(dir.path()));
  EXPECT_THAT(
      checkpoint->Get("model.layers.0.mlp.gate.weight"),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("tensor 'model.layers.0.mlp.gate.weight'"), HasSubstr(dir.path()))));
}

TEST(CheckpointTest, MissingPathIsNotFoundListingWhatWasLookedFor) {
  ScratchDir dir;
  const std::string path = dir.File("no-such-model");
  EXPECT_THAT(Checkpoint::Open(path),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr(path), HasSubstr("does not exist"), HasSubstr(kIndex),
                             HasSubstr("model.safetensors,"), HasSubstr(".safetensors file"))));
}

TEST(CheckpointTest, DirectoryWithoutCheckpointIsNotFound) {
  ScratchDir dir;
  WriteText(dir.File("config.json"), "{}");
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr(dir.path()), HasSubstr(kIndex),
                                                          HasSubstr("nor model.safetensors"))));
}

TEST(CheckpointTest, RefusesShardMissingTensor) {
  ScratchDir dir;
  WriteTwoShards(dir);
  WriteText(dir.File(kIndex), IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                         {"b", "model-00001-of-00002.safetensors"},
                                         {"c", "model-00002-of-00002.safetensors"},
                                         {"d", "model-00002-of-00002.safetensors"}}));
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kIndex), HasSubstr("tensor 'd'"),
                             HasSubstr("shard 'model-00002-of-00002.safetensors', which does "
                                       "not contain it"))));
}

TEST(CheckpointTest, RefusesTensorInTwoShards) {
  ScratchDir dir;
  testing::WriteFile(dir.File("a.safetensors"), BuildSafetensors({F32Tensor("w", {1}, {1})}));
  testing::WriteFile(dir.File("b.safetensors"),
                     BuildSafetensors({F32Tensor("v", {1}, {2}), F32Tensor("w", {1}, {3})}));
  WriteText(dir.File(kIndex), IndexJson({{"w", "a.safetensors"}, {"v", "b.safetensors"}}));
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kIndex), HasSubstr("tensor 'w' appears in two shards, "
                                                          "'a.safetensors' and 'b.safetensors'"))));
}

TEST(CheckpointTest, RefusesTensorStoredInAnotherShardThanListed) {
  ScratchDir dir;
  testing::WriteFile(dir.File("a.safetensors"), BuildSafetensors({F32Tensor("w", {1}, {1})}));
  testing::WriteFile(dir.File("b.safetensors"), BuildSafetensors({F32Tensor("v", {1}, {2})}));
  WriteText(dir.File(kIndex),
            IndexJson({{"w", "b.safetensors"}, {"v", "b.safetensors"}, {"x", "a.safetensors"}}));
  // a.safetensors is opened first and holds w, which the index places in b.safetensors.
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'x'"), HasSubstr("'a.safetensors'"))));
  WriteText(dir.File(kIndex),
            IndexJson({{"w", "b.safetensors"}, {"v", "b.safetensors"}, {"u", "a.safetensors"}}));
  testing::WriteFile(dir.File("a.safetensors"),
                     BuildSafetensors({F32Tensor("u", {1}, {0}), F32Tensor("w", {1}, {1})}));
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w' is in shard 'a.safetensors' but weight_map assigns "
                                 "it to 'b.safetensors'")));
}

TEST(CheckpointTest, RefusesTensorNotListedInWeightMap) {
  ScratchDir dir;
  WriteTwoShards(dir);
  WriteText(dir.File(kIndex), IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                         {"c", "model-00002-of-00002.safetensors"}}));
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kIndex),
                             HasSubstr("shard 'model-00001-of-00002.safetensors' holds tensor "
                                       "'b', which weight_map does not list"))));
}

TEST(CheckpointTest, RefusesPathTraversalInShardNames) {
  ScratchDir outer;
  // A valid file just outside the checkpoint directory: it must not be reachable.
  testing::WriteFile(outer.File("outside.safetensors"),
                     BuildSafetensors({F32Tensor("w", {1}, {1})}));
  const std::string checkpoint_dir = outer.File("ckpt");
  ASSERT_EQ(mkdir(checkpoint_dir.c_str(), 0700), 0);
  testing::WriteFile(checkpoint_dir + "/x.safetensors",
                     BuildSafetensors({F32Tensor("w", {1}, {1})}));
  for (const std::string& shard :
       {std::string("../outside.safetensors"), outer.File("outside.safetensors"),
        std::string("sub/x.safetensors"), std::string(".."), std::string("."), std::string(""),
        std::string("..\\outside.safetensors"), std::string("x.safetensors\0", 14),
        std::string("x\n.safetensors"), std::string(256, 'x')}) {
    SCOPED_TRACE(shard);
    WriteText(checkpoint_dir + "/" + kIndex, IndexJson({{"w", shard}}));
    EXPECT_THAT(Checkpoint::Open(checkpoint_dir),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(kIndex), HasSubstr("tensor 'w'"),
                               HasSubstr("not a plain file name"))));
  }
}

TEST(CheckpointTest, RefusesMissingShardFile) {
  ScratchDir dir;
  WriteText(dir.File(kIndex), IndexJson({{"w", "model-00001-of-00001.safetensors"}}));
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr(kIndex), HasSubstr("'model-00001-of-00001.safetensors'"),
                             HasSubstr(dir.File("model-00001-of-00001.safetensors")))));
}

TEST(CheckpointTest, CorruptShardErrorNamesTheShard) {
  ScratchDir dir;
  WriteTwoShards(dir);
  const std::string bad = dir.File("model-00002-of-00002.safetensors");
  testing::WriteFile(bad, std::vector<std::byte>(4));
  WriteText(dir.File(kIndex), IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                         {"b", "model-00001-of-00002.safetensors"},
                                         {"c", "model-00002-of-00002.safetensors"}}));
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(bad + ": file is 4 bytes"), HasSubstr(kIndex))));
}

TEST(CheckpointTest, RefusesMalformedIndex) {
  ScratchDir dir;
  WriteTwoShards(dir);
  const std::string index = dir.File(kIndex);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"weight_map\": {", "not valid JSON"},
      {"[]", "expected a JSON object with a weight_map, found array"},
      {"{\"metadata\": {}}", "has no weight_map"},
      {"{\"weight_map\": [\"a\"]}", "weight_map must be an object"},
      {"{\"weight_map\": {}}", "weight_map lists no tensors"},
      {"{\"weight_map\": {\"a\": 1}}", "weight_map entry for tensor 'a' must be a shard file name"},
      {std::string("{}\0{\"weight_map\": {}}", 20), "contains a NUL byte at offset 2"},
  };
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    WriteText(index, text);
    EXPECT_THAT(Checkpoint::Open(dir.path()),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(index + ": "), HasSubstr(expected))));
  }
}

TEST(CheckpointTest, RefusesDuplicateWeightMapEntries) {
  ScratchDir dir;
  WriteTwoShards(dir);
  // nlohmann alone would keep the second entry and load "a" from the wrong shard silently.
  WriteText(dir.File(kIndex),
            "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
            "\"b\": \"model-00001-of-00002.safetensors\", "
            "\"c\": \"model-00002-of-00002.safetensors\", "
            "\"a\": \"model-00002-of-00002.safetensors\"}}");
  EXPECT_THAT(
      Checkpoint::Open(dir.path()),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(kIndex), HasSubstr("weight_map lists tensor 'a' more than once"))));
  WriteText(dir.File(kIndex), "{\"weight_map\": {\"a\": \"x\"}, \"weight_map\": {}}");
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("key 'weight_map' appears twice in the top-level object")));
}

TEST(CheckpointTest, FileOfNamesTheShardHoldingTheTensor) {
  ScratchDir dir;
  WriteTwoShards(dir);
  WriteText(dir.File(kIndex), IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                         {"b", "model-00001-of-00002.safetensors"},
                                         {"c", "model-00002-of-00002.safetensors"}}));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(dir.path()));
  EXPECT_EQ(checkpoint->FileOf("a"), dir.File("model-00001-of-00002.safetensors"));
  EXPECT_EQ(checkpoint->FileOf("c"), dir.File("model-00002-of-00002.safetensors"));
  EXPECT_EQ(checkpoint->FileOf("absent"), dir.path());

  ScratchDir single;
  testing::WriteFile(single.File("model.safetensors"),
                     BuildSafetensors({F32Tensor("w", {1}, {1})}));
  MOE_ASSERT_OK_AND_ASSIGN(checkpoint, Checkpoint::Open(single.path()));
  EXPECT_EQ(checkpoint->FileOf("w"), single.File("model.safetensors"));
}

TEST(CheckpointTest, RefusesIndexLargerThanTheCap) {
  ScratchDir dir;
  WriteTwoShards(dir);
  // Valid JSON, padded with whitespace past the cap.
  std::string text = IndexJson({{"a", "model-00001-of-00002.safetensors"},
                                {"b", "model-00001-of-00002.safetensors"},
                                {"c", "model-00002-of-00002.safetensors"}});
  text.resize(kMaxCheckpointIndexBytes + 1, ' ');
  WriteText(dir.File(kIndex), text);
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.File(kIndex) + ": "),
                             HasSubstr("limit of " + std::to_string(kMaxCheckpointIndexBytes) +
                                       " bytes"))));
}

// `levels` arrays or objects nested inside each other.
std::string Nested(int levels, bool objects) {
  std::string text;
  for (int i = 0; i < levels; ++i) text += objects ? "{\"k\":" : "[";
  text += "0";
  for (int i = 0; i < levels; ++i) text += objects ? "}" : "]";
  return text;
}

TEST(CheckpointTest, RefusesDeeplyNestedIndexWithoutBuildingIt) {
  ScratchDir dir;
  WriteTwoShards(dir);
  const std::string weight_map =
      "\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
      "\"b\": \"model-00001-of-00002.safetensors\", "
      "\"c\": \"model-00002-of-00002.safetensors\"}";
  // About 200 KB of nesting, arrays and objects, which a recursive reader would not survive.
  for (const bool objects : {false, true}) {
    SCOPED_TRACE(objects ? "objects" : "arrays");
    const std::string text =
        "{\"metadata\": " + Nested(objects ? 40'000 : 100'000, objects) + ", " + weight_map + "}";
    ASSERT_GT(text.size(), 200'000u);
    WriteText(dir.File(kIndex), text);
    EXPECT_THAT(
        Checkpoint::Open(dir.path()),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr(dir.File(kIndex) + ": "),
                       HasSubstr("nested more than " + std::to_string(kMaxCheckpointIndexDepth) +
                                 " levels deep"))));
  }
  // Up to the limit, with the top-level object counted, nesting is read and dropped.
  WriteText(dir.File(kIndex), "{\"metadata\": " + Nested(kMaxCheckpointIndexDepth - 1, true) +
                                  ", " + weight_map + "}");
  EXPECT_THAT(Checkpoint::Open(dir.path()), ::moe::testing::IsOk());
  WriteText(dir.File(kIndex),
            "{\"metadata\": " + Nested(kMaxCheckpointIndexDepth, false) + ", " + weight_map + "}");
  EXPECT_THAT(Checkpoint::Open(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested more than")));
}

TEST(CheckpointTest, IgnoresEverythingButTheWeightMap) {
  ScratchDir dir;
  WriteTwoShards(dir);
  // Extra keys of every JSON type, before and after weight_map, and a repeated key inside
  // metadata (which is not read) are all accepted.
  WriteText(dir.File(kIndex),
            "{\"metadata\": {\"total_size\": 28, \"total_size\": 28, \"tags\": [\"x\", {\"y\": "
            "null}]}, \"format\": \"pt\", \"n\": -1.5, \"ok\": true, \"none\": null, "
            "\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
            "\"b\": \"model-00001-of-00002.safetensors\", "
            "\"c\": \"model-00002-of-00002.safetensors\"}, \"after\": [[1], {\"weight_map\": 1}]}");
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(dir.path()));
  EXPECT_THAT(checkpoint->TensorNames(), ElementsAre("a", "b", "c"));
}

TEST(CheckpointTest, OpensFixtureCheckpoints) {
  const std::vector<std::string> folders = testing::FixtureFolders();
  ASSERT_FALSE(folders.empty()) << "no fixtures under " << testing::FixturesRoot();
  for (const std::string& folder : folders) {
    SCOPED_TRACE(folder);
    MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, Checkpoint::Open(folder));
    EXPECT_TRUE(checkpoint->Contains("model.embed_tokens.weight"));
    EXPECT_TRUE(checkpoint->Contains("lm_head.weight"));
    MOE_ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(folder + "/model.safetensors"));
    EXPECT_EQ(checkpoint->TensorNames().size(), file->tensors().size());
    uint64_t bytes = 0;
    for (const TensorInfo& tensor : file->tensors()) bytes += tensor.data.size();
    EXPECT_EQ(checkpoint->total_bytes(), bytes);
  }
}

}  // namespace
}  // namespace moe::model
