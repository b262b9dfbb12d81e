// Builds safetensors images for tests: well-formed ones from tensors, and the raw pieces
// (header text, data bytes) so tests can break one rule at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "moe/kernels/dtype.h"
#include "nlohmann/json.hpp"

namespace moe::testing {

struct TestTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

inline TestTensor F32Tensor(std::string name, std::vector<int64_t> shape,
                            const std::vector<float>& values) {
  TestTensor tensor{std::move(name), kernels::DType::kF32, std::move(shape), {}};
  tensor.bytes.resize(values.size() * sizeof(float));
  std::memcpy(tensor.bytes.data(), values.data(), tensor.bytes.size());
  return tensor;
}

// The file image: 8-byte little-endian header length, the JSON header, the data buffer.
inline std::vector<std::byte> SafetensorsImage(const std::string& header,
                                               const std::vector<std::byte>& data) {
  std::vector<std::byte> image(8 + header.size() + data.size());
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<std::byte>((length >> (8 * i)) & 0xff);
  std::memcpy(image.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(image.data() + 8 + header.size(), data.data(), data.size());
  return image;
}

// A well-formed image holding `tensors` back to back in the given order.
inline std::vector<std::byte> BuildSafetensors(
    const std::vector<TestTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<std::byte> data;
  for (const auto& tensor : tensors) {
    const size_t begin = data.size();
    data.insert(data.end(), tensor.bytes.begin(), tensor.bytes.end());
    header[tensor.name] = {{"dtype", std::string(kernels::DTypeName(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {begin, data.size()}}};
  }
  return SafetensorsImage(header.dump(), data);
}

inline void WriteFile(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace moe::testing
