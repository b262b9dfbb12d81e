// Reader for the safetensors format over a read-only memory mapping, validating everything
// the format's specification requires before any tensor is handed out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/kernels/dtype.h"

namespace moe::model {

// Upper bound on the JSON header, checked before anything is allocated for it.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1000 * 1000;

struct TensorInfo {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;       // empty for a scalar
  int64_t num_elements = 0;         // product of shape (1 for a scalar)
  std::span<const std::byte> data;  // points into the mapping; size = num_elements * dtype size
};

// One .safetensors file. Immutable after Open; safe to share across threads.
class SafetensorsFile {
 public:
  // Maps `path` read-only and validates it. Errors name the file and, where one is at fault,
  // the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  // Validates an in-memory image (the same rules; `display_name` stands for the file in
  // errors). The bytes are copied so the result owns them. Used by tests and fuzzers.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::span<const std::byte> bytes, const std::string& display_name);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensors in data-offset order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  struct Mapping;

  std::string path_;
  std::unique_ptr<Mapping> mapping_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (its weight_map), or a single explicit file.
class Checkpoint {
 public:
  // `path` is a directory (model.safetensors.index.json preferred, then model.safetensors)
  // or a .safetensors file.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  // NOT_FOUND naming the tensor and the checkpoint when absent.
  absl::StatusOr<const TensorInfo*> Get(const std::string& name) const;
  bool Contains(const std::string& name) const;
  // All tensor names, sorted.
  std::vector<std::string> TensorNames() const;
  const std::string& path() const { return path_; }
  // Sum of all tensors' byte sizes.
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> tensors_;
};

}  // namespace moe::model
