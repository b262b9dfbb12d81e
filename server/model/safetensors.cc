#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/model/checked_math.h"
#include "server/model/error_text.h"

namespace moe::model {

// The bytes a SafetensorsFile's tensors point into: a read-only mapping of the file, or an
// owned copy for FromBytes. The file descriptor is not kept: a mapping stays valid after its
// descriptor is closed, so a checkpoint with hundreds of shards holds no descriptors open.
struct SafetensorsFile::Mapping {
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr != nullptr) munmap(addr, length);
  }

  std::span<const std::byte> bytes() const {
    if (addr != nullptr) return {static_cast<const std::byte*>(addr), length};
    return owned;
  }

  void* addr = nullptr;  // from mmap, or nullptr when `owned` holds the image
  size_t length = 0;
  std::vector<std::byte> owned;
};

namespace {

constexpr uint64_t kLengthPrefixBytes = 8;
constexpr absl::string_view kMetadataKey = "__metadata__";

// Closes a file descriptor on every return path of Open.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status TooShortError(const std::string& display, uint64_t size) {
  return Invalid(display, absl::StrCat("file is ", size,
                                       " bytes, too short for the 8-byte header length that "
                                       "starts every safetensors file"));
}

// A tensor entry as the header states it, before its offsets are checked against the data.
struct HeaderTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t num_elements = 0;
};

struct ParsedHeader {
  std::vector<HeaderTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Streams the JSON header into HeaderTensors, enforcing the schema as it goes. A SAX handler
// rather than a DOM because nlohmann's DOM silently keeps the last of two duplicate keys, and
// because a DOM of a 100 MB hostile header (say, one shape of 50 million zeros) costs several
// times the header in memory; here every stored value is a field we keep anyway, and a shape
// stops at kMaxTensorRank dimensions.
//
// The schema is strict: a tensor entry has exactly dtype, shape and data_offsets, and any other
// field is refused. The format defines no other fields, so an unknown one means a writer we do
// not understand, and guessing what it meant could load wrong weights silently.
class HeaderParser final : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit HeaderParser(const std::string& display) : display_(display) {}

  const absl::Status& status() const { return status_; }
  ParsedHeader& header() { return header_; }

  bool null() override { return Unexpected("null"); }
  bool boolean(bool value) override { return Unexpected(value ? "true" : "false"); }

  bool number_integer(number_integer_t value) override {
    if (value >= 0) return number_unsigned(static_cast<number_unsigned_t>(value));
    if (state_ == State::kShape) {
      return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has negative dimension ", value,
                               " in its shape"));
    }
    if (state_ == State::kOffsets) {
      return Fail(
          absl::StrCat("tensor ", Quote(tensor_.name), " has negative data offset ", value));
    }
    return Unexpected(absl::StrCat("the number ", value));
  }

  bool number_unsigned(number_unsigned_t value) override {
    if (state_ == State::kShape) {
      if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has dimension ", value,
                                 " in its shape, more than the largest supported (2^63 - 1)"));
      }
      if (tensor_.shape.size() == kMaxTensorRank) {
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has more than ", kMaxTensorRank,
                                 " dimensions, the most supported"));
      }
      tensor_.shape.push_back(static_cast<int64_t>(value));
      return true;
    }
    if (state_ == State::kOffsets) {
      if (offsets_.size() == 2) {
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name),
                                 " has more than 2 data_offsets, expected [begin, end]"));
      }
      offsets_.push_back(value);
      return true;
    }
    return Unexpected(absl::StrCat("the number ", value));
  }

  bool number_float(number_float_t /*value*/, const string_t& text) override {
    // Integers too large for 64 bits arrive here as well, with their original text. The text
    // is as long as the header makes it (a number of megabytes of digits), so it is cut short
    // like any other string from the file (tests/fuzz/safetensors_fuzzer checks messages).
    return Unexpected(absl::StrCat("the number ", Shorten(text)));
  }

  bool string(string_t& value) override {
    if (state_ == State::kMetadataValue) {
      header_.metadata.emplace(key_, std::move(value));
      state_ = State::kMetadata;
      return true;
    }
    if (state_ == State::kTensorValue && field_ == kDType) {
      const std::optional<kernels::DType> dtype = kernels::DTypeFromName(value);
      if (!dtype.has_value()) {
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has unknown dtype ",
                                 Quote(value),
                                 " (expected one of BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, "
                                 "F16, BF16, I32, U32, F32, F64, I64, U64)"));
      }
      tensor_.dtype = *dtype;
      state_ = State::kTensor;
      return true;
    }
    return Unexpected("a string");
  }

  bool binary(binary_t& /*value*/) override { return Unexpected("binary data"); }

  bool start_object(std::size_t /*elements*/) override {
    if (state_ == State::kStart) {
      state_ = State::kTop;
      return true;
    }
    if (state_ == State::kTopValue) {
      if (key_ == kMetadataKey) {
        state_ = State::kMetadata;
      } else {
        tensor_ = HeaderTensor{};
        tensor_.name = key_;
        fields_seen_ = 0;
        state_ = State::kTensor;
      }
      return true;
    }
    return Unexpected("an object");
  }

  bool key(string_t& value) override {
    if (state_ == State::kTop) {
      if (!top_keys_.insert(value).second) {
        return Fail(
            value == kMetadataKey
                ? std::string("__metadata__ appears more than once in the header")
                : absl::StrCat("tensor ", Quote(value), " appears more than once in the header"));
      }
      key_ = std::move(value);
      state_ = State::kTopValue;
      return true;
    }
    if (state_ == State::kMetadata) {
      if (header_.metadata.count(value) != 0) {
        return Fail(absl::StrCat("__metadata__ has key ", Quote(value), " more than once"));
      }
      key_ = std::move(value);
      state_ = State::kMetadataValue;
      return true;
    }
    // Only kTensor remains: keys are reported only inside objects, and those are the three.
    if (value == "dtype") {
      field_ = kDType;
    } else if (value == "shape") {
      field_ = kShapeField;
    } else if (value == "data_offsets") {
      field_ = kOffsetsField;
    } else {
      return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has unknown field ", Quote(value),
                               " (expected exactly dtype, shape and data_offsets)"));
    }
    if ((fields_seen_ & field_) != 0) {
      return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has field ", Quote(value),
                               " more than once"));
    }
    fields_seen_ |= field_;
    state_ = State::kTensorValue;
    return true;
  }

  bool end_object() override {
    if (state_ == State::kMetadata) {
      state_ = State::kTop;
      return true;
    }
    if (state_ == State::kTensor) {
      if (fields_seen_ != (kDType | kShapeField | kOffsetsField)) {
        std::vector<absl::string_view> missing;
        if ((fields_seen_ & kDType) == 0) missing.push_back("dtype");
        if ((fields_seen_ & kShapeField) == 0) missing.push_back("shape");
        if ((fields_seen_ & kOffsetsField) == 0) missing.push_back("data_offsets");
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " is missing ",
                                 absl::StrJoin(missing, " and "),
                                 " (expected exactly dtype, shape and data_offsets)"));
      }
      header_.tensors.push_back(std::move(tensor_));
      state_ = State::kTop;
      return true;
    }
    // kTop: the whole header has been read.
    state_ = State::kDone;
    return true;
  }

  bool start_array(std::size_t /*elements*/) override {
    if (state_ == State::kTensorValue && field_ == kShapeField) {
      state_ = State::kShape;
      return true;
    }
    if (state_ == State::kTensorValue && field_ == kOffsetsField) {
      offsets_.clear();
      state_ = State::kOffsets;
      return true;
    }
    return Unexpected("an array");
  }

  bool end_array() override {
    if (state_ == State::kOffsets) {
      if (offsets_.size() != 2) {
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has ", offsets_.size(),
                                 " data_offsets, expected [begin, end]"));
      }
      if (offsets_[0] > offsets_[1]) {
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name), " has data_offsets [", offsets_[0],
                                 ", ", offsets_[1], "] whose begin is after its end"));
      }
      tensor_.begin = offsets_[0];
      tensor_.end = offsets_[1];
    }
    // kShape or kOffsets: the only arrays start_array lets in.
    state_ = State::kTensor;
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& error) override {
    return Fail(absl::StrCat("header is not valid JSON: ", Shorten(error.what())));
  }

 private:
  enum class State {
    kStart,          // before the top-level object
    kTop,            // in the top-level object, expecting a key
    kTopValue,       // after a top-level key: a tensor entry or __metadata__
    kMetadata,       // in __metadata__, expecting a key
    kMetadataValue,  // after a __metadata__ key: a string
    kTensor,         // in a tensor entry, expecting a field name
    kTensorValue,    // after a field name
    kShape,          // in a shape array
    kOffsets,        // in a data_offsets array
    kDone,
  };
  // Bits of fields_seen_.
  static constexpr unsigned kDType = 1;
  static constexpr unsigned kShapeField = 2;
  static constexpr unsigned kOffsetsField = 4;

  bool Fail(absl::string_view message) {
    status_ = Invalid(display_, message);
    return false;
  }

  // A JSON value of the wrong kind for where it appears; `found` describes it.
  bool Unexpected(absl::string_view found) {
    switch (state_) {
      case State::kTopValue:
        if (key_ == kMetadataKey) {
          return Fail(
              absl::StrCat("__metadata__ must be an object of string to string, found ", found));
        }
        return Fail(absl::StrCat("tensor ", Quote(key_),
                                 " must be an object with dtype, shape and data_offsets, found ",
                                 found));
      case State::kMetadataValue:
        return Fail(
            absl::StrCat("__metadata__ entry ", Quote(key_), " must be a string, found ", found));
      case State::kTensorValue:
        if (field_ == kDType) {
          return Fail(absl::StrCat("tensor ", Quote(tensor_.name),
                                   " has dtype that is not a string (such as \"F32\"), found ",
                                   found));
        }
        if (field_ == kShapeField) {
          return Fail(absl::StrCat("tensor ", Quote(tensor_.name),
                                   " has shape that is not an array of non-negative integers, "
                                   "found ",
                                   found));
        }
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name),
                                 " has data_offsets that are not [begin, end], found ", found));
      case State::kShape:
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name),
                                 " has a shape entry that is not a non-negative integer, found ",
                                 found));
      case State::kOffsets:
        return Fail(absl::StrCat("tensor ", Quote(tensor_.name),
                                 " has a data_offsets entry that is not a non-negative integer, "
                                 "found ",
                                 found));
      default:
        return Fail(absl::StrCat("header must be a JSON object, found ", found));
    }
  }

  const std::string& display_;
  absl::Status status_;
  State state_ = State::kStart;
  ParsedHeader header_;
  std::unordered_set<std::string> top_keys_;
  std::string key_;  // the last top-level or __metadata__ key
  HeaderTensor tensor_;
  unsigned field_ = 0;
  unsigned fields_seen_ = 0;
  std::vector<uint64_t> offsets_;
};

// Element count and byte size from shape and dtype, or an error naming the tensor.
absl::Status ComputeSizes(const std::string& display, HeaderTensor& tensor) {
  const uint64_t element_size = kernels::DTypeSize(tensor.dtype);
  const bool empty =
      std::any_of(tensor.shape.begin(), tensor.shape.end(), [](int64_t d) { return d == 0; });
  // A zero dimension makes the tensor empty however large the others are, so it must not be
  // refused for a product of the others that overflows.
  std::optional<uint64_t> elements = empty ? 0 : 1;
  for (size_t i = 0; !empty && elements.has_value() && i < tensor.shape.size(); ++i) {
    elements = CheckedMul(*elements, static_cast<uint64_t>(tensor.shape[i]));
  }
  const std::optional<uint64_t> bytes =
      elements.has_value() ? CheckedMul(*elements, element_size) : std::nullopt;
  if (!bytes.has_value()) {
    return Invalid(display, absl::StrCat("tensor ", Quote(tensor.name), " has shape ",
                                         ShapeString(tensor.shape), " x ",
                                         std::string(kernels::DTypeName(tensor.dtype)),
                                         " whose size in bytes does not fit in 64 bits"));
  }
  if (*bytes != tensor.end - tensor.begin) {
    return Invalid(
        display,
        absl::StrCat("tensor ", Quote(tensor.name), " has data_offsets [", tensor.begin, ", ",
                     tensor.end, "] but shape ", ShapeString(tensor.shape), " x ",
                     std::string(kernels::DTypeName(tensor.dtype)), " needs ", *bytes, " bytes"));
  }
  // elements <= bytes == end - begin, which the tiling check bounds by the file size, so the
  // count fits TensorInfo's int64 once the file is accepted.
  tensor.num_elements = *elements;
  return absl::OkStatus();
}

struct ParsedImage {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, size_t> index;
  std::map<std::string, std::string> metadata;
};

// Validates a whole file image (length prefix, header, data buffer). The returned tensors point
// into `image`. Nothing is allocated before the header length has been checked against the
// image and the cap, and every offset is checked before it is used.
absl::StatusOr<ParsedImage> ParseImage(std::span<const std::byte> image,
                                       const std::string& display) {
  const uint64_t file_size = image.size();
  if (file_size < kLengthPrefixBytes) return TooShortError(display, file_size);

  uint64_t header_size = 0;
  for (int i = static_cast<int>(kLengthPrefixBytes) - 1; i >= 0; --i) {
    header_size = (header_size << 8) | std::to_integer<uint64_t>(image[i]);
  }
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Invalid(display, absl::StrCat("header length ", header_size, " exceeds the limit of ",
                                         kMaxSafetensorsHeaderBytes,
                                         " bytes (the file is corrupt or not safetensors)"));
  }
  const uint64_t after_prefix = file_size - kLengthPrefixBytes;
  if (header_size > after_prefix) {
    return Invalid(display, absl::StrCat("header length ", header_size,
                                         " runs past the end of the file: only ", after_prefix,
                                         " bytes follow the 8-byte length (file is ", file_size,
                                         " bytes; truncated?)"));
  }
  const std::span<const std::byte> header_bytes = image.subspan(kLengthPrefixBytes, header_size);
  if (header_bytes.empty()) {
    return Invalid(display, "header is empty, expected a JSON object starting with '{'");
  }
  if (header_bytes[0] != std::byte{'{'}) {
    return Invalid(display,
                   absl::StrCat("header must start with '{', found byte 0x",
                                absl::Hex(std::to_integer<int>(header_bytes[0]), absl::kZeroPad2)));
  }

  // nlohmann's lexer takes a NUL byte for the end of the input and would silently ignore
  // whatever follows it; no valid JSON text contains one.
  const void* nul = std::memchr(header_bytes.data(), 0, header_bytes.size());
  if (nul != nullptr) {
    return Invalid(display,
                   absl::StrCat("header contains a NUL byte at offset ",
                                static_cast<const std::byte*>(nul) - header_bytes.data(), " of ",
                                header_size, "; expected JSON text padded with spaces"));
  }

  // Writers pad the header with trailing spaces to align the data; JSON parsing skips them as
  // whitespace, and strict parsing refuses anything else after the object.
  HeaderParser parser(display);
  const char* text = reinterpret_cast<const char*>(header_bytes.data());
  bool parsed = false;
  try {
    parsed = nlohmann::json::sax_parse(text, text + header_bytes.size(), &parser);
  } catch (const nlohmann::json::exception& error) {
    return Invalid(display, absl::StrCat("header is not valid JSON: ", Shorten(error.what())));
  }
  if (!parsed) {
    if (!parser.status().ok()) return parser.status();
    return Invalid(display, "header is not valid JSON");
  }
  ParsedHeader& header = parser.header();

  for (HeaderTensor& tensor : header.tensors) {
    MOE_RETURN_IF_ERROR(ComputeSizes(display, tensor));
  }

  // The data buffer must be tiled exactly: sorted by begin, each tensor starts where the
  // previous one ended. Empty tensors tie on begin with their neighbours; ordering ties by end
  // and then by name (unique) makes the order, and so every error, deterministic.
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const HeaderTensor& a, const HeaderTensor& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  const uint64_t data_start = kLengthPrefixBytes + header_size;
  const uint64_t data_size = file_size - data_start;
  uint64_t expected_begin = 0;
  const HeaderTensor* previous = nullptr;
  for (const HeaderTensor& tensor : header.tensors) {
    const std::string offsets = absl::StrCat("[", tensor.begin, ", ", tensor.end, "]");
    if (tensor.end > data_size) {
      return Invalid(display,
                     absl::StrCat("tensor ", Quote(tensor.name), " has data_offsets ", offsets,
                                  " past the end of the data buffer, which holds ", data_size,
                                  " bytes (file is ", file_size, " bytes; truncated?)"));
    }
    if (tensor.begin < expected_begin) {
      return Invalid(display, absl::StrCat("tensor ", Quote(tensor.name), " has data_offsets ",
                                           offsets, " overlapping tensor ", Quote(previous->name),
                                           " at [", previous->begin, ", ", previous->end, "]"));
    }
    if (tensor.begin > expected_begin) {
      if (previous == nullptr) {
        return Invalid(display,
                       absl::StrCat("tensor ", Quote(tensor.name), " has data_offsets ", offsets,
                                    " but the first tensor must begin at offset 0 (", tensor.begin,
                                    " unused bytes at the start of the data)"));
      }
      return Invalid(display,
                     absl::StrCat(tensor.begin - expected_begin, " unused bytes between tensor ",
                                  Quote(previous->name), " ending at offset ", expected_begin,
                                  " and tensor ", Quote(tensor.name), " beginning at offset ",
                                  tensor.begin, "; tensors must be packed back to back"));
    }
    expected_begin = tensor.end;
    previous = &tensor;
  }
  if (expected_begin != data_size) {
    if (previous == nullptr) {
      return Invalid(display, absl::StrCat("header lists no tensors but the data buffer holds ",
                                           data_size, " bytes"));
    }
    return Invalid(
        display, absl::StrCat(data_size - expected_begin, " trailing bytes after the last tensor ",
                              Quote(previous->name), " ends at offset ", expected_begin,
                              "; the data buffer holds ", data_size, " bytes"));
  }

  ParsedImage result;
  result.tensors.reserve(header.tensors.size());
  const std::span<const std::byte> data = image.subspan(data_start);
  for (HeaderTensor& tensor : header.tensors) {
    TensorInfo info;
    info.name = std::move(tensor.name);
    info.dtype = tensor.dtype;
    info.shape = std::move(tensor.shape);
    info.num_elements = static_cast<int64_t>(tensor.num_elements);
    info.data = data.subspan(tensor.begin, tensor.end - tensor.begin);
    result.index.emplace(info.name, result.tensors.size());
    result.tensors.push_back(std::move(info));
  }
  result.metadata = std::move(header.metadata);
  return result;
}

}  // namespace

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  // O_NONBLOCK so that a FIFO at `path` cannot hang the open; it has no effect on regular
  // files, and anything that is not one is refused below.
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open safetensors file"));
  }
  struct stat info;
  if (fstat(fd.get(), &info) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot stat safetensors file"));
  }
  if (!S_ISREG(info.st_mode)) {
    return Invalid(path, "not a regular file, expected a .safetensors file");
  }
  const uint64_t size = static_cast<uint64_t>(info.st_size);
  // Also keeps mmap, which refuses a zero length, from seeing an empty file.
  if (size < kLengthPrefixBytes) return TooShortError(path, size);

  auto mapping = std::make_unique<Mapping>();
  void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot map ", size, " bytes"));
  }
  mapping->addr = addr;
  mapping->length = size;

  MOE_ASSIGN_OR_RETURN(ParsedImage parsed, ParseImage(mapping->bytes(), path));
  auto file = absl::WrapUnique(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = std::move(mapping);
  file->tensors_ = std::move(parsed.tensors);
  file->index_ = std::move(parsed.index);
  file->metadata_ = std::move(parsed.metadata);
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::span<const std::byte> bytes, const std::string& display_name) {
  auto mapping = std::make_unique<Mapping>();
  mapping->owned.assign(bytes.begin(), bytes.end());

  MOE_ASSIGN_OR_RETURN(ParsedImage parsed, ParseImage(mapping->bytes(), display_name));
  auto file = absl::WrapUnique(new SafetensorsFile());
  file->path_ = display_name;
  file->mapping_ = std::move(mapping);
  file->tensors_ = std::move(parsed.tensors);
  file->index_ = std::move(parsed.index);
  file->metadata_ = std::move(parsed.metadata);
  return file;
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace moe::model
