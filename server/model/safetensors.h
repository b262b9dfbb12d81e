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

// Most dimensions a tensor's shape may have. Model weights have at most 5; the format sets no
// limit, and without one a header could hold a single shape of tens of millions of entries.
inline constexpr size_t kMaxTensorRank = 16;

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
  // errors). The bytes are copied so the result owns them. Used by tests; fuzz targets can use it.
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

}  // namespace moe::model
