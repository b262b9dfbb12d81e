// Pieces of error messages shared by the checkpoint readers. Strings read from a file (tensor
// names, architecture names, parser messages that echo the input) may be megabytes long and hold
// control characters, so they go into messages only through these helpers: escaped and cut short.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace moe::model {

// At most this many bytes of a string from a file are shown in a message.
inline constexpr size_t kMaxShownBytes = 200;

// `text` in single quotes with control and non-ASCII bytes C-escaped; past kMaxShownBytes the
// rest is elided and the full length given: 'abc...' (10485760 bytes).
inline std::string Quote(absl::string_view text) {
  if (text.size() <= kMaxShownBytes) return absl::StrCat("'", absl::CEscape(text), "'");
  return absl::StrCat("'", absl::CEscape(text.substr(0, kMaxShownBytes)), "...' (", text.size(),
                      " bytes)");
}

// `text` (a library's message that may echo the input) cut to kMaxShownBytes, with control
// bytes escaped but quotes left alone so the message stays readable.
inline std::string Shorten(absl::string_view text) {
  std::string shown;
  const absl::string_view head = text.substr(0, kMaxShownBytes);
  shown.reserve(head.size());
  for (const char c : head) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      absl::StrAppend(&shown, "\\x", absl::Hex(byte, absl::kZeroPad2));
    } else {
      shown.push_back(c);
    }
  }
  if (text.size() > head.size()) absl::StrAppend(&shown, "... (", text.size(), " bytes)");
  return shown;
}

// "[8, 4096]".
inline std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// INVALID_ARGUMENT "<display>: <message>", where `display` names the file at fault.
inline absl::Status Invalid(absl::string_view display, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(display, ": ", message));
}

}  // namespace moe::model
