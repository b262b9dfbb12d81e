// libFuzzer target: arbitrary bytes as a .safetensors image (SafetensorsFile::FromBytes).
//
// Refused images must be INVALID_ARGUMENT with a bounded, printable message naming the file.
// Accepted images must keep every promise of safetensors.h: tensors in data-offset order tiling
// the data buffer exactly, data sizes equal to shape x dtype, names unique and found by Find,
// bounded rank, and bytes that lie inside the file's own copy (every byte is read, so ASan checks
// the ranges). An accepted image is also written back through SafetensorsHeader and read again,
// which must give the same tensors and metadata.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "moe/kernels/dtype.h"
#include "server/model/safetensors.h"
#include "server/model/safetensors_writer.h"
#include "tests/fuzz/fuzz_check.h"

namespace moe::fuzz {
namespace {

using model::SafetensorsFile;
using model::TensorInfo;

constexpr char kDisplayName[] = "fuzz.safetensors";

// Reads every byte of every tensor and, for the float dtypes, widens them as the loader does.
uint64_t TouchTensor(const TensorInfo& tensor) {
  uint64_t sum = 0;
  for (const std::byte b : tensor.data) sum += std::to_integer<uint64_t>(b);
  const bool widens = tensor.dtype == kernels::DType::kF32 ||
                      tensor.dtype == kernels::DType::kF16 || tensor.dtype == kernels::DType::kBF16;
  // (Not for empty tensors: an empty vector's data() may be null, and memcpy must not see it.)
  if (widens && tensor.num_elements > 0) {
    std::vector<float> widened(static_cast<size_t>(tensor.num_elements));
    MOE_FUZZ_CHECK(
        kernels::WidenToFloat(tensor.dtype, tensor.data.data(), widened.data(), widened.size()));
    for (const float v : widened) sum += static_cast<uint64_t>(v == v);
  }
  return sum;
}

void CheckAccepted(const SafetensorsFile& file, std::span<const std::byte> input) {
  const std::vector<TensorInfo>& tensors = file.tensors();
  MOE_FUZZ_CHECK(file.path() == kDisplayName);
  MOE_FUZZ_CHECK(input.size() >= 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) {
    header_size = (header_size << 8) | std::to_integer<uint64_t>(input[i]);
  }
  MOE_FUZZ_CHECK(header_size <= input.size() - 8);
  const uint64_t data_size = input.size() - 8 - header_size;

  std::set<std::string> names;
  const std::byte* expected_begin = nullptr;
  uint64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    MOE_FUZZ_CHECK(names.insert(t.name).second, "tensor '", t.name, "' listed twice");
    MOE_FUZZ_CHECK(t.name != "__metadata__");
    MOE_FUZZ_CHECK(t.shape.size() <= model::kMaxTensorRank);
    int64_t elements = 1;
    for (const int64_t d : t.shape) {
      MOE_FUZZ_CHECK(d >= 0, "negative dimension ", d);
      // An accepted tensor fits in the image, so only a product that a zero dimension ends
      // may overflow on the way.
      if (elements != 0 && d != 0 && __builtin_mul_overflow(elements, d, &elements)) {
        MOE_FUZZ_CHECK(std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end(), "tensor '",
                       t.name, "' accepted with an element count past 2^63");
        elements = 0;
        break;
      }
      if (d == 0) elements = 0;
    }
    MOE_FUZZ_CHECK(t.num_elements == elements, "num_elements ", t.num_elements, " vs ", elements);
    MOE_FUZZ_CHECK(
        t.data.size() == static_cast<uint64_t>(t.num_elements) * kernels::DTypeSize(t.dtype),
        "tensor '", t.name, "' holds ", t.data.size(), " bytes");
    // Back to back in data-offset order; the data is the file's own copy, not the caller's.
    if (expected_begin != nullptr) {
      MOE_FUZZ_CHECK(t.data.data() == expected_begin, "tensor '", t.name, "' is not packed");
    }
    const bool inside_input =
        t.data.data() >= input.data() && t.data.data() < input.data() + input.size();
    MOE_FUZZ_CHECK(t.data.empty() || !inside_input, "tensor data points into the caller's bytes");
    expected_begin = t.data.data() + t.data.size();
    total += t.data.size();
    const TensorInfo* found = file.Find(t.name);
    MOE_FUZZ_CHECK(found == &t, "Find('", t.name, "') does not give the tensor");
    // Through a volatile, so that the optimizer keeps the reads ASan checks.
    static volatile uint64_t sink = 0;
    sink = sink + TouchTensor(t);
  }
  MOE_FUZZ_CHECK(total == data_size, "tensors hold ", total, " bytes of a ", data_size,
                 "-byte data buffer");
  MOE_FUZZ_CHECK(file.Find("__metadata__") == nullptr);
  for (const auto& [key, value] : file.metadata()) {
    MOE_FUZZ_CHECK(key.size() + value.size() <= input.size());
  }

  // Write the tensors back (the writer's header, same order, same bytes) and read them again.
  std::vector<model::TensorSpec> specs;
  std::string data;
  for (const TensorInfo& t : tensors) {
    specs.push_back({t.name, t.dtype, t.shape});
    data.append(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  }
  absl::StatusOr<std::string> header = model::SafetensorsHeader(specs, file.metadata());
  if (!header.ok()) {
    // The writer refuses names the reader accepts: only the empty one.
    MOE_FUZZ_CHECK(names.count("") == 1,
                   "writer refused an accepted file: ", header.status().ToString());
    return;
  }
  std::string image(8, '\0');
  for (int i = 0; i < 8; ++i) image[i] = static_cast<char>((header->size() >> (8 * i)) & 0xff);
  image += *header;
  image += data;
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> again = SafetensorsFile::FromBytes(
      std::as_bytes(std::span<const char>(image.data(), image.size())), kDisplayName);
  MOE_FUZZ_CHECK(again.ok(), "re-written file refused: ", again.status().ToString());
  MOE_FUZZ_CHECK((*again)->metadata() == file.metadata());
  MOE_FUZZ_CHECK((*again)->tensors().size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& a = tensors[i];
    const TensorInfo& b = (*again)->tensors()[i];
    MOE_FUZZ_CHECK(
        a.name == b.name && a.dtype == b.dtype && a.shape == b.shape &&
            a.data.size() == b.data.size() &&
            (a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size()) == 0),
        "tensor ", i, " ('", a.name, "') differs after writing it back");
  }
}

}  // namespace
}  // namespace moe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  absl::StatusOr<std::unique_ptr<moe::model::SafetensorsFile>> file =
      moe::model::SafetensorsFile::FromBytes(input, moe::fuzz::kDisplayName);
  if (!file.ok()) {
    MOE_FUZZ_CHECK_REFUSAL(file.status(), absl::StatusCode::kInvalidArgument);
    MOE_FUZZ_CHECK(
        absl::StartsWith(file.status().message(), absl::StrCat(moe::fuzz::kDisplayName, ": ")),
        "error does not name the file: ", file.status().ToString());
    return 0;
  }
  moe::fuzz::CheckAccepted(**file, input);
  return 0;
}
