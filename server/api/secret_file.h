// Reading the small files that security flags name (certificates, keys, token lists) at
// start-up, with errors that name the flag and the file.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::api {

// The contents of `path`, given as `flag` ("--tls-cert"). NOT_FOUND, PERMISSION_DENIED or
// FAILED_PRECONDITION (a directory, larger than 1 MiB, a read error), each message starting
// with "<flag> <path>: ".
absl::StatusOr<std::string> ReadSecretFile(absl::string_view flag, const std::string& path);

}  // namespace moe::api
