#include "client/cli/npy_reader.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "moe/common/status_macros.h"

namespace moe::client::cli {
namespace {

constexpr absl::string_view kMagic = "\x93NUMPY";
constexpr char kAccepted[] =
    "accepted: '<f4' (float32), '<f8' (float64) or '<f2' (float16), C order, 1 or 2 dimensions";

// The header's Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 64), }
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// A recursive-descent reader of the few Python literals an .npy header holds: strings, True,
// False, and tuples of non-negative integers.
class HeaderParser {
 public:
  HeaderParser(absl::string_view text, absl::string_view name) : text_(text), name_(name) {}

  absl::StatusOr<NpyHeader> Parse() {
    NpyHeader header;
    bool has_descr = false, has_order = false, has_shape = false;
    MOE_RETURN_IF_ERROR(Expect('{'));
    while (true) {
      SkipSpaces();
      if (Peek() == '}') break;
      MOE_ASSIGN_OR_RETURN(std::string key, String());
      MOE_RETURN_IF_ERROR(Expect(':'));
      SkipSpaces();
      bool* seen = nullptr;
      if (key == "descr") {
        if (Peek() == '[') {
          return Error("holds a structured dtype (a list of fields); " + std::string(kAccepted));
        }
        MOE_ASSIGN_OR_RETURN(header.descr, String());
        seen = &has_descr;
      } else if (key == "fortran_order") {
        MOE_ASSIGN_OR_RETURN(header.fortran_order, Boolean());
        seen = &has_order;
      } else if (key == "shape") {
        MOE_ASSIGN_OR_RETURN(header.shape, Tuple());
        seen = &has_shape;
      } else {
        return Error(absl::StrCat("header has an unexpected key '", key, "'"));
      }
      if (*seen) return Error(absl::StrCat("header names '", key, "' twice"));
      *seen = true;
      SkipSpaces();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() != '}') return Unexpected("',' or '}'");
    }
    ++pos_;  // '}'
    for (; pos_ < text_.size(); ++pos_) {
      if (text_[pos_] != ' ' && text_[pos_] != '\n' && text_[pos_] != '\t') {
        return Unexpected("only padding after the header's '}'");
      }
    }
    if (!has_descr || !has_order || !has_shape) {
      return Error("header lacks one of 'descr', 'fortran_order', 'shape'");
    }
    return header;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void SkipSpaces() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": not a valid .npy file: ", what));
  }
  absl::Status Unexpected(absl::string_view expected) const {
    return Error(absl::StrCat("header \"", absl::StripTrailingAsciiWhitespace(text_),
                              "\": expected ", expected, " at offset ", pos_));
  }
  absl::Status Expect(char c) {
    SkipSpaces();
    if (Peek() != c) return Unexpected(absl::StrCat("'", std::string(1, c), "'"));
    ++pos_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> String() {
    SkipSpaces();
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Unexpected("a quoted string");
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == absl::string_view::npos) return Unexpected("the string's closing quote");
    std::string value(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return value;
  }
  absl::StatusOr<bool> Boolean() {
    SkipSpaces();
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    return Unexpected("True or False");
  }
  absl::StatusOr<std::vector<int64_t>> Tuple() {
    MOE_RETURN_IF_ERROR(Expect('('));
    std::vector<int64_t> values;
    while (true) {
      SkipSpaces();
      if (Peek() == ')') break;
      if (Peek() < '0' || Peek() > '9') return Unexpected("a dimension (a non-negative integer)");
      int64_t value = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        const int digit = Peek() - '0';
        if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) {
          return Error("a dimension in the shape is too large");
        }
        value = value * 10 + digit;
        ++pos_;
      }
      values.push_back(value);
      SkipSpaces();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() != ')') return Unexpected("',' or ')'");
    }
    ++pos_;  // ')'
    return values;
  }

  absl::string_view text_;
  absl::string_view name_;
  size_t pos_ = 0;
};

uint32_t ReadLittleEndian(absl::string_view bytes, size_t offset, size_t size) {
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i) {
    value |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[offset + i])) << (8 * i);
  }
  return value;
}

}  // namespace

float HalfBitsToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {  // infinity or NaN
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    out = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    out = sign;
  } else {  // subnormal: normalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    out = sign | (static_cast<uint32_t>(127 - 15 + 1 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float value;
  std::memcpy(&value, &out, sizeof(value));
  return value;
}

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), shape.size() == 1 ? ",)" : ")");
}

// Converts `count` little-endian elements of `descr` at `data` (this program runs on
// little-endian machines only: x86-64 and aarch64 Linux).
void Widen(const std::string& descr, const char* data, size_t count, float* out) {
  if (descr == "<f4") {
    std::memcpy(out, data, count * sizeof(float));
  } else if (descr == "<f8") {
    for (size_t i = 0; i < count; ++i) {
      double value;
      std::memcpy(&value, data + i * sizeof(double), sizeof(double));
      out[i] = static_cast<float>(value);
    }
  } else {  // "<f2"
    for (size_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, data + i * sizeof(uint16_t), sizeof(uint16_t));
      out[i] = HalfBitsToFloat(bits);
    }
  }
}

}  // namespace

absl::StatusOr<InputRows> ParseNpy(absl::string_view bytes, absl::string_view name) {
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
  };
  if (bytes.size() < 10 || bytes.substr(0, kMagic.size()) != kMagic) {
    return invalid("not a .npy file (it does not start with \\x93NUMPY)");
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  const int minor = static_cast<uint8_t>(bytes[7]);
  size_t length_bytes = 0;
  if (major == 1 && minor == 0) {
    length_bytes = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    length_bytes = 4;
  } else {
    return invalid(absl::StrCat(".npy format version ", major, ".", minor,
                                " is not supported (1.0, 2.0 and 3.0 are)"));
  }
  const size_t header_start = 8 + length_bytes;
  if (bytes.size() < header_start) return invalid("not a valid .npy file: truncated header");
  const size_t header_length = ReadLittleEndian(bytes, 8, length_bytes);
  if (bytes.size() - header_start < header_length) {
    return invalid(absl::StrCat("not a valid .npy file: the header says it is ", header_length,
                                " bytes long but the file ends ", bytes.size() - header_start,
                                " bytes after its start"));
  }
  const absl::string_view header_text = bytes.substr(header_start, header_length);
  if (header_text.empty() || header_text.back() != '\n') {
    return invalid("not a valid .npy file: the header does not end with a newline");
  }
  MOE_ASSIGN_OR_RETURN(const NpyHeader header, HeaderParser(header_text, name).Parse());

  if (header.descr.size() >= 2 && header.descr[0] == '>') {
    return invalid(absl::StrCat("holds big-endian data ('", header.descr, "'); ", kAccepted,
                                " (numpy: a.astype('<f4'))"));
  }
  if (header.descr != "<f4" && header.descr != "<f8" && header.descr != "<f2") {
    return invalid(absl::StrCat("holds dtype '", header.descr, "'; ", kAccepted,
                                " (numpy: a.astype(np.float32))"));
  }
  if (header.fortran_order && header.shape.size() > 1) {
    return invalid(absl::StrCat("is in Fortran (column-major) order; ", kAccepted,
                                " (numpy: np.ascontiguousarray(a))"));
  }
  if (header.shape.empty() || header.shape.size() > 2) {
    return invalid(absl::StrCat("has shape ", ShapeString(header.shape), " (", header.shape.size(),
                                " dimensions); ", kAccepted,
                                ": [width] for one row or [rows, width]"));
  }
  InputRows rows;
  rows.rows = header.shape.size() == 1 ? 1 : header.shape[0];
  rows.width = header.shape.back();
  if (rows.rows == 0 || rows.width == 0) {
    return invalid(absl::StrCat("has shape ", ShapeString(header.shape), ": no values to send"));
  }
  const size_t item_size = header.descr == "<f8" ? 8 : header.descr == "<f4" ? 4 : 2;
  const size_t data_bytes = bytes.size() - header_start - header_length;
  // Compare without overflowing: rows * width * item_size may not fit in 64 bits.
  const uint64_t max_values = data_bytes / item_size;
  const bool fits = static_cast<uint64_t>(rows.width) <= max_values &&
                    static_cast<uint64_t>(rows.rows) <= max_values / rows.width;
  const uint64_t count =
      fits ? static_cast<uint64_t>(rows.rows) * static_cast<uint64_t>(rows.width) : 0;
  if (!fits || count * item_size != data_bytes) {
    return invalid(absl::StrCat("shape ", ShapeString(header.shape), " of '", header.descr,
                                "' needs ", rows.rows, " x ", rows.width, " x ", item_size,
                                " bytes of data, but the file holds ", data_bytes));
  }
  rows.values.resize(count);
  Widen(header.descr, bytes.data() + header_start + header_length, count, rows.values.data());
  return rows;
}

absl::StatusOr<InputRows> ReadNpyFile(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(const std::string bytes, ReadWholeFile(path));
  return ParseNpy(bytes, path);
}

}  // namespace moe::client::cli
