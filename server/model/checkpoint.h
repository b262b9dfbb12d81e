// A checkpoint: the safetensors file or files that hold a model's weights, opened and validated
// together so that every tensor name resolves to exactly one tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/safetensors.h"

namespace moe::model {

// Upper bound on model.safetensors.index.json, checked before it is read. Real indexes are about
// 100 KB (a few MB for models with tens of thousands of tensors).
inline constexpr uint64_t kMaxCheckpointIndexBytes = uint64_t{16} << 20;

// Deepest nesting of arrays and objects accepted in the index. A valid index nests two levels
// (the top object, then weight_map or metadata); the limit leaves room for richer metadata.
inline constexpr int kMaxCheckpointIndexDepth = 32;

// A checkpoint directory: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (its weight_map), or a single explicit file.
// Immutable after Open; safe to share across threads.
class Checkpoint {
 public:
  // `path` is a directory (model.safetensors.index.json preferred, then model.safetensors)
  // or a .safetensors file.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  // A checkpoint of one already-opened file (an in-memory image from
  // SafetensorsFile::FromBytes, say); path() is the file's path().
  static std::unique_ptr<Checkpoint> FromFile(std::unique_ptr<SafetensorsFile> file);

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // NOT_FOUND naming the tensor and the checkpoint when absent.
  absl::StatusOr<const TensorInfo*> Get(const std::string& name) const;
  bool Contains(const std::string& name) const;
  // All tensor names, sorted.
  std::vector<std::string> TensorNames() const;
  // The directory or file given to Open.
  const std::string& path() const { return path_; }
  // The .safetensors file holding tensor `name` (one of the shards for a sharded checkpoint),
  // for errors about that tensor; path() when the checkpoint has no such tensor.
  const std::string& FileOf(const std::string& name) const;
  // Sum of all tensors' byte sizes.
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // Tensor name -> the tensor and the file (in files_) holding it.
  std::map<std::string, std::pair<const TensorInfo*, const SafetensorsFile*>> tensors_;
};

}  // namespace moe::model
