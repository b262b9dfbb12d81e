// What the fuzz targets share: a check that aborts (so libFuzzer records the input as a crash)
// with a message saying which property broke, and the properties every refusal must have.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moe::fuzz {

[[noreturn]] inline void Fail(absl::string_view what, const char* file, int line) {
  std::fprintf(stderr, "\n==== fuzz property violated at %s:%d\n%.*s\n", file, line,
               static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

// A property of the code under test that an input broke. `...` is absl::StrCat arguments
// describing what was found.
#define MOE_FUZZ_CHECK(condition, ...)                                                           \
  do {                                                                                           \
    if (!(condition)) {                                                                          \
      ::moe::fuzz::Fail(absl::StrCat("check failed: " #condition "\n", ##__VA_ARGS__), __FILE__, \
                        __LINE__);                                                               \
    }                                                                                            \
  } while (0)

// Longest refusal message a parser may return, whatever the input. Strings taken from the input
// reach messages only cut to a couple of hundred bytes (model/error_text.h: Quote escapes at most
// 200 bytes into at most 800), a message names at most two of them, plus fixed text and numbers.
// A message longer than this echoes input without bound: megabytes of it in a log line or a gRPC
// trailer.
inline constexpr size_t kMaxErrorMessageBytes = 2 * 850 + 512;

// A refusal must be `expected_code`, say something, stay bounded in size and hold no control
// bytes (it ends up in one log line or a gRPC status).
inline void CheckRefusal(const absl::Status& status, absl::StatusCode expected_code,
                         const char* file, int line) {
  const absl::string_view message = status.message();
  if (status.code() != expected_code) {
    Fail(absl::StrCat("refused with ", absl::StatusCodeToString(status.code()), ", expected ",
                      absl::StatusCodeToString(expected_code), ": ", status.ToString()),
         file, line);
  }
  if (message.empty()) Fail("refused with an empty message", file, line);
  if (message.size() > kMaxErrorMessageBytes) {
    Fail(absl::StrCat("refusal message is ", message.size(), " bytes (limit ",
                      kMaxErrorMessageBytes, "); it begins: ", message.substr(0, 300)),
         file, line);
  }
  for (size_t i = 0; i < message.size(); ++i) {
    const unsigned char byte = static_cast<unsigned char>(message[i]);
    if (byte < 0x20 || byte == 0x7f) {
      Fail(absl::StrCat("refusal message holds control byte ", static_cast<int>(byte),
                        " at offset ", i, ": ", absl::CHexEscape(message.substr(0, 300))),
           file, line);
    }
  }
}

#define MOE_FUZZ_CHECK_REFUSAL(status, code) \
  ::moe::fuzz::CheckRefusal((status), (code), __FILE__, __LINE__)

}  // namespace moe::fuzz
