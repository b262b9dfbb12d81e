#include "server/model/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/model/checked_math.h"
#include "server/model/error_text.h"

namespace moe::model {
namespace {

constexpr char kMetadataKey[] = "__metadata__";

absl::Status CheckBytes(const TensorSpec& spec, uint64_t expected, size_t given) {
  if (given == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "tensor ", Quote(spec.name), " of shape ", ShapeString(spec.shape), " and dtype ",
      std::string(kernels::DTypeName(spec.dtype)), " needs ", expected, " bytes, got ", given));
}

}  // namespace

absl::StatusOr<uint64_t> TensorBytes(const TensorSpec& spec) {
  uint64_t elements = 1;
  for (const int64_t dim : spec.shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", Quote(spec.name), " has shape ",
                                                     ShapeString(spec.shape),
                                                     " with a negative dimension"));
    }
    const std::optional<uint64_t> product = CheckedMul(elements, static_cast<uint64_t>(dim));
    if (!product.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", Quote(spec.name), " shape ",
                                                     ShapeString(spec.shape),
                                                     " has more elements than fit in 64 bits"));
    }
    elements = *product;
  }
  const std::optional<uint64_t> bytes =
      CheckedMul(elements, static_cast<uint64_t>(kernels::DTypeSize(spec.dtype)));
  if (!bytes.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", Quote(spec.name), " is larger than 2^64 bytes"));
  }
  return *bytes;
}

absl::StatusOr<std::string> SafetensorsHeader(const std::vector<TensorSpec>& tensors,
                                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorSpec& spec : tensors) {
    if (spec.name.empty() || spec.name == kMetadataKey) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name ", Quote(spec.name), " is empty or reserved"));
    }
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quote(spec.name), " is listed twice"));
    }
    MOE_ASSIGN_OR_RETURN(const uint64_t bytes, TensorBytes(spec));
    const std::optional<uint64_t> sum = CheckedAdd(offset, bytes);
    if (!sum.has_value()) {
      return absl::InvalidArgumentError("tensors add up to more than 2^64 bytes");
    }
    const uint64_t end = *sum;
    header[spec.name] = {{"dtype", std::string(kernels::DTypeName(spec.dtype))},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void SafetensorsWriter::FileCloser::operator()(std::FILE* file) const { std::fclose(file); }

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> tensors,
    const std::map<std::string, std::string>& metadata) {
  MOE_ASSIGN_OR_RETURN(const std::string header, SafetensorsHeader(tensors, metadata));
  auto writer = absl::WrapUnique(new SafetensorsWriter());
  writer->path_ = path;
  writer->temp_path_ = path + ".partial";
  writer->tensors_ = std::move(tensors);
  writer->file_.reset(std::fopen(writer->temp_path_.c_str(), "wb"));
  if (writer->file_ == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", writer->temp_path_));
  }
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>((header.size() >> (8 * i)));
  if (std::fwrite(length, 1, 8, writer->file_.get()) != 8 ||
      std::fwrite(header.data(), 1, header.size(), writer->file_.get()) != header.size()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", writer->temp_path_));
  }
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!finished_) {
    file_.reset();
    std::remove(temp_path_.c_str());
  }
}

const TensorSpec* SafetensorsWriter::next() const {
  return written_ < tensors_.size() ? &tensors_[written_] : nullptr;
}

absl::Status SafetensorsWriter::Append(std::span<const std::byte> bytes) {
  if (file_ == nullptr || written_ >= tensors_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": all ", tensors_.size(), " tensors were already written"));
  }
  const TensorSpec& spec = tensors_[written_];
  MOE_ASSIGN_OR_RETURN(const uint64_t expected, TensorBytes(spec));
  MOE_RETURN_IF_ERROR(CheckBytes(spec, expected, bytes.size()));
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), file_.get()) != bytes.size()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", temp_path_));
  }
  ++written_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (file_ == nullptr) return absl::FailedPreconditionError(path_ + ": already finished");
  if (written_ != tensors_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": ", written_, " of ",
                                                      tensors_.size(), " tensors written; next is ",
                                                      Quote(tensors_[written_].name)));
  }
  std::FILE* file = file_.release();
  if (std::fflush(file) != 0 || std::fclose(file) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", temp_path_));
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", temp_path_, " to ", path_));
  }
  finished_ = true;
  return absl::OkStatus();
}

absl::Status WriteSafetensorsFile(const std::string& path, const std::vector<NamedTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const NamedTensor& tensor : tensors) specs.push_back(tensor.spec);
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                       SafetensorsWriter::Create(path, std::move(specs), metadata));
  for (const NamedTensor& tensor : tensors) MOE_RETURN_IF_ERROR(writer->Append(tensor.bytes));
  return writer->Finish();
}

absl::StatusOr<std::vector<std::byte>> SerializeSafetensors(
    const std::vector<NamedTensor>& tensors, const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const NamedTensor& tensor : tensors) specs.push_back(tensor.spec);
  MOE_ASSIGN_OR_RETURN(const std::string header, SafetensorsHeader(specs, metadata));
  std::vector<std::byte> image(8 + header.size());
  for (int i = 0; i < 8; ++i) {
    image[i] = static_cast<std::byte>((static_cast<uint64_t>(header.size()) >> (8 * i)) & 0xff);
  }
  std::memcpy(image.data() + 8, header.data(), header.size());
  for (const NamedTensor& tensor : tensors) {
    MOE_ASSIGN_OR_RETURN(const uint64_t expected, TensorBytes(tensor.spec));
    MOE_RETURN_IF_ERROR(CheckBytes(tensor.spec, expected, tensor.bytes.size()));
    image.insert(image.end(), tensor.bytes.begin(), tensor.bytes.end());
  }
  return image;
}

}  // namespace moe::model
