// Writes safetensors files: the JSON header (padded with spaces to a multiple of 8 bytes) and
// the tensors back to back in the order given. The header is written first, so tensors can be
// produced and written one at a time without holding the whole file in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moe/kernels/dtype.h"

namespace moe::model {

struct TensorSpec {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;  // empty for a scalar
};

// Bytes one tensor of `spec` holds; INVALID_ARGUMENT for a negative dimension or an overflow.
absl::StatusOr<uint64_t> TensorBytes(const TensorSpec& spec);

// The header text (JSON padded with spaces to a multiple of 8 bytes) for `tensors` stored in
// this order. INVALID_ARGUMENT for an empty, duplicate or reserved ("__metadata__") name.
absl::StatusOr<std::string> SafetensorsHeader(const std::vector<TensorSpec>& tensors,
                                              const std::map<std::string, std::string>& metadata);

// Writes `path` through a temporary file next to it, renamed into place by Finish(); a writer
// destroyed before Finish() removes the temporary file, so a failed write leaves no file behind.
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<TensorSpec> tensors,
      const std::map<std::string, std::string>& metadata = {});

  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor's bytes (little-endian, row-major), exactly TensorBytes(spec) of them.
  absl::Status Append(std::span<const std::byte> bytes);
  // After every tensor was appended: flushes, closes and renames the file into place.
  absl::Status Finish();

  // The spec of the tensor Append expects next; null once all were written.
  const TensorSpec* next() const;

 private:
  SafetensorsWriter() = default;
  struct FileCloser {
    void operator()(std::FILE* file) const;
  };

  std::string path_;
  std::string temp_path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::vector<TensorSpec> tensors_;
  size_t written_ = 0;
  bool finished_ = false;
};

// A tensor with its bytes, for writing a whole file at once.
struct NamedTensor {
  TensorSpec spec;
  std::span<const std::byte> bytes;
};

// Writes `tensors` to `path` in the given order.
absl::Status WriteSafetensorsFile(const std::string& path, const std::vector<NamedTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// The whole file as bytes in memory (for tests and embedded images).
absl::StatusOr<std::vector<std::byte>> SerializeSafetensors(
    const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace moe::model
